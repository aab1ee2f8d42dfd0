# Allow lists of reflect addresses through the cmdlets (docs/security.md): -Port, -User, -Group, -CGroup and -App on
# Add-ReflectAddress, the lists and NotAllowed on Get-ReflectAddress, and who made a flow on Get-ReflectFlow. Runs
# against a real engine in the test namespace (Linux, as root).
BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $script:Pipe = Start-TestEngine -Address '203.0.113.60'
    $script:R = '203.0.113.60'
    function Connect-Test {
        # A TCP connect to R:port: 'Connected' or the socket error (ConnectionRefused for a refusal).
        param([int]$Port)
        $client = [System.Net.Sockets.TcpClient]::new()
        try { $client.Connect($script:R, $Port); return 'Connected' }
        catch [System.Net.Sockets.SocketException] { return [string]$_.Exception.SocketErrorCode }
        catch { return [string]$_.Exception.InnerException.SocketErrorCode }
        finally { $client.Close() }
    }
    $script:Listeners = foreach ($p in 18090, 18091) { $l = [System.Net.Sockets.TcpListener]::new([ipaddress]::Any, $p); $l.Start(); $l }
}
AfterAll {
    foreach ($l in $script:Listeners) { $l.Stop() }
    Stop-TestEngine $script:Pipe
}

Describe 'Allow lists (Add-ReflectAddress -Port/-User/-Group/-CGroup/-App)' {
    It '-Port: the listed port is reflected, another is refused at once; the list shows on the objects' {
        $o = Add-ReflectAddress $script:R -Port '18090/tcp' -PassThru -Pipe $script:Pipe -Confirm:$false
        $o.AllowedPort | Should -Be @('18090/tcp')
        $o.AllowedUser | Should -BeNullOrEmpty
        Connect-Test 18090 | Should -Be 'Connected'
        Connect-Test 18091 | Should -Be 'ConnectionRefused'
        $a = Get-ReflectAddress $script:R -Pipe $script:Pipe
        $a.AllowedPort | Should -Be @('18090/tcp')
        $a.NotAllowed | Should -BeGreaterOrEqual 1
        ($a | Format-List | Out-String) | Should -Match 'AllowedPort\s*:\s*\{?18090/tcp'
    }
    It '-User: root (this process) is allowed by name, and flows name the process and user; another uid is refused' {
        Add-ReflectAddress $script:R -Port all -User root -Pipe $script:Pipe -Confirm:$false
        $client = [System.Net.Sockets.TcpClient]::new()
        try {
            $client.Connect($script:R, 18091)
            $flows = @(Get-ReflectFlow -Pipe $script:Pipe -Protocol tcp -ServerPort 18091 | Where-Object State -eq 'open')
            $groups = $flows | Group-Object ProcessName
            # This process (pwsh, or dotnet when pwsh is the .NET tool) made the connection.
            $groups.Name | Should -Contain (Get-Process -Id $PID).ProcessName
            $mine = $flows | Where-Object ProcessId -eq $PID
            $mine | Should -Not -BeNullOrEmpty
            $mine[0].User | Should -Be 'root'
            $mine[0].UserId | Should -Be 0
        }
        finally { $client.Close() }
        (Get-ReflectAddress $script:R -Pipe $script:Pipe).AllowedUser | Should -Be @(0)
        Add-ReflectAddress $script:R -User 4343 -Pipe $script:Pipe -Confirm:$false
        Connect-Test 18090 | Should -Be 'ConnectionRefused'
        Add-ReflectAddress $script:R -User all -Group 0 -Pipe $script:Pipe -Confirm:$false
        Connect-Test 18090 | Should -Be 'Connected'
        (Get-ReflectAddress $script:R -Pipe $script:Pipe).AllowedGroup | Should -Be @(0)
    }
    It '-App on Linux and an unknown user are refused as Retroflect.InvalidParams, and nothing changes' {
        Add-ReflectAddress $script:R -App 'C:\Tools\app.exe' -Pipe $script:Pipe -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable err
        $err[-1].FullyQualifiedErrorId | Should -BeLike 'Retroflect.InvalidParams*'
        Add-ReflectAddress $script:R -User 'no-such-user-here' -Pipe $script:Pipe -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable err2
        $err2[-1].Exception.Message | Should -Match 'no-such-user-here'
        $a = Get-ReflectAddress $script:R -Pipe $script:Pipe
        $a.AllowedApp | Should -BeNullOrEmpty
        $a.AllowedGroup | Should -Be @(0)
    }
    It '-WhatIf changes nothing; -Group all lifts the last list' {
        Add-ReflectAddress $script:R -Port 1/tcp -WhatIf -Pipe $script:Pipe
        (Get-ReflectAddress $script:R -Pipe $script:Pipe).AllowedPort | Should -BeNullOrEmpty
        Add-ReflectAddress $script:R -Group all -Pipe $script:Pipe -Confirm:$false
        $a = Get-ReflectAddress $script:R -Pipe $script:Pipe
        $a.AllowedGroup | Should -BeNullOrEmpty
        Connect-Test 18091 | Should -Be 'Connected'
    }
}
