# The module's Windows branches against the real Windows engine (dist\retroflect.exe) under Wine, with the WinDivert
# TEST DOUBLE as WinDivert.dll (native/windivert_double.c): Start-Retroflect launches it, the cmdlets talk to it over
# \\.\pipe\retroflect with the token from C:\ProgramData\Retroflect\retroflect.token, Stop-Retroflect ends it.
# The double replays the packets test/wine/powershell.test.ts queued: 100 sent to 203.0.113.77 (reflected), 20 from
# a peer to the shielded port 8080/tcp (dropped), 10 to port 8081 (passed).

BeforeAll {
    Remove-Module Retroflect -ErrorAction SilentlyContinue
    Import-Module (Join-Path $PSScriptRoot '..\..\Retroflect\Retroflect.psd1') -Force
    $script:Exe = $env:RETROFLECT_TEST_ENGINE_EXE
    $script:WinDivertDir = $env:RETROFLECT_TEST_WINDIVERT_DIR
    $script:Scratch = $env:RETROFLECT_TEST_DIR
    $script:TokenFile = Join-Path $env:ProgramData 'Retroflect\retroflect.token'
}

AfterAll {
    # A failed test must not leave the engine running for the next file.
    Stop-Retroflect -Confirm:$false -ErrorAction SilentlyContinue
}

Describe 'The admin check (Windows branch)' {
    It 'sees this Wine session as elevated, as the engine does (it refuses to start otherwise)' {
        InModuleScope Retroflect { Test-RetroflectWindows } | Should -BeTrue
        InModuleScope Retroflect { Test-RetroflectElevated } | Should -BeTrue
    }
    It 'refuses Start-Retroflect in an unelevated session with Retroflect.NotAdmin and starts nothing' {
        # Wine has no unelevated token; the check's outcome is mocked, the path after it is the real one.
        Mock -ModuleName Retroflect Test-RetroflectElevated { $false }
        { Start-Retroflect -Path $script:Exe -WinDivertPath $script:WinDivertDir -NoConfig -Address 203.0.113.77 -Confirm:$false } |
            Should -Throw -ErrorId 'Retroflect.NotAdmin*'
        Get-Retroflect -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
    }
}

Describe 'Start-Retroflect on Windows' {
    It 'fails with Retroflect.WinDivertNotFound when WinDivert is not in the given folder' {
        $empty = Join-Path $script:Scratch 'no-windivert'
        $null = New-Item -ItemType Directory -Path $empty -Force
        { Start-Retroflect -Path $script:Exe -WinDivertPath $empty -NoConfig -Address 203.0.113.77 -Confirm:$false } |
            Should -Throw -ErrorId 'Retroflect.WinDivertNotFound*'
    }
    It '-WhatIf shows the command line and starts nothing' {
        Start-Retroflect -Path $script:Exe -WinDivertPath $script:WinDivertDir -NoConfig -Address 203.0.113.77 -WhatIf
        Get-Retroflect -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
    }
    It 'launches retroflect.exe on the WinDivert backend and returns its status once the pipe answers' {
        $null = Start-Retroflect -Path $script:Exe -WinDivertPath $script:WinDivertDir -NoConfig `
            -Address 203.0.113.77 -ShieldPort '8080/tcp' -TimeoutSeconds 90 -Confirm:$false
        $script:Status = Get-Retroflect   # it returns only once the pipe answers
        $script:Status.PSTypeNames | Should -Contain 'Retroflect.Status'
        $script:Status.State | Should -Be 'running'
        $script:Status.Backend | Should -Be 'windivert'
        $script:Status.PipeName | Should -Be 'retroflect'
        @($script:Status.ReflectAddresses | ForEach-Object { $_.ToString() }) | Should -Be @('203.0.113.77')
        @($script:Status.ShieldPorts | ForEach-Object { '{0}/{1}' -f $_.Port, $_.Protocol }) | Should -Be @('8080/tcp')
        (Get-Process -Id $script:Status.ProcessId).Path | Should -Be $script:Exe
    }
    It 'the engine wrote its access token to C:\ProgramData\Retroflect' {
        $script:TokenFile | Should -Be 'C:\ProgramData\Retroflect\retroflect.token'
        (Get-Content -LiteralPath $script:TokenFile -Raw).Trim() | Should -Not -BeNullOrEmpty
    }
    It 'is idempotent: a second Start-Retroflect starts no second engine' {
        $null = Start-Retroflect -Path $script:Exe -WinDivertPath $script:WinDivertDir -NoConfig -Confirm:$false -WarningAction SilentlyContinue
        (Get-Retroflect).ProcessId | Should -Be $script:Status.ProcessId
        @(Get-Process -Name retroflect).Count | Should -Be 1
    }
}

Describe 'Cmdlets over \\.\pipe\retroflect' {
    It 'Get-Retroflect reports the engine' {
        $s = Get-Retroflect
        $s.ProcessId | Should -Be $script:Status.ProcessId
        $s.Backend | Should -Be 'windivert'
    }
    It 'Get-ReflectStats counts what the double replayed: 100 reflected, 20 shield-dropped, none passed' {
        $deadline = [DateTime]::UtcNow.AddSeconds(60)
        do {
            $stats = Get-ReflectStats
            if ($stats.ReflectedPackets -ge 100 -and $stats.ShieldDroppedPackets -ge 20) { break }
            Start-Sleep -Milliseconds 250
        } while ([DateTime]::UtcNow -lt $deadline)
        $stats.PSTypeNames | Should -Contain 'Retroflect.Stats'
        $stats.ReflectedPackets | Should -Be 100
        $stats.ShieldDroppedPackets | Should -Be 20
        # The 10 inbound packets to the unshielded port 8081 never reach the engine: its filter captures only inbound
        # packets to shielded ports and from reflect addresses, so the driver passes them on by itself.
        $stats.PassedPackets | Should -Be 0
        @($stats.ByShieldPort | Where-Object { $_.Port -eq 8080 -and $_.Protocol -eq 'tcp' })[0].Packets | Should -Be 20
    }
    It 'Add-ReflectAddress adds a live address (a new WinDivert handle) that Get-Retroflect then shows' {
        Add-ReflectAddress 203.0.113.78 -Temporary -Confirm:$false | Out-Null
        @((Get-Retroflect).ReflectAddresses | ForEach-Object { $_.ToString() }) | Should -Be @('203.0.113.77', '203.0.113.78')
        Add-ReflectAddress 203.0.113.78 -Temporary -Confirm:$false | Out-Null   # idempotent: no error, no duplicate
        @((Get-Retroflect).ReflectAddresses).Count | Should -Be 2
    }
    It '-App sets who may use an address (the engine runs its app gate), Get-ReflectAddress shows it; -User refused' {
        $apps = @('C:\Tools\Proxy Client.exe', 'Contoso.Browser_8wekyb3d8bbwe')
        Add-ReflectAddress 203.0.113.78 -App $apps -Temporary -Confirm:$false
        (Get-ReflectAddress 203.0.113.78).AllowedApp | Should -Be $apps
        (Get-Retroflect).BackendInfo['appsHeldFlows'] | Should -Be 0
        $refused = @{ Temporary = $true; Confirm = $false; ErrorAction = 'SilentlyContinue'; ErrorVariable = 'err' }
        Add-ReflectAddress 203.0.113.78 -User 0 @refused
        $err[-1].FullyQualifiedErrorId | Should -BeLike 'Retroflect.InvalidParams*'
        $err[-1].Exception.Message | Should -Match 'enforced on Linux only'
        (Get-ReflectAddress 203.0.113.78).AllowedUser | Should -BeNullOrEmpty
        Add-ReflectAddress 203.0.113.78 -App all -Temporary -Confirm:$false
        (Get-ReflectAddress 203.0.113.78).AllowedApp | Should -BeNullOrEmpty
        (Get-Retroflect).BackendInfo['appsHeldFlows'] | Should -BeNullOrEmpty
    }
    It 'ConvertTo-Json writes the addresses as text while they stay [ipaddress] (New-RetroflectObject, as on Linux)' {
        $list = @(Get-ReflectAddress)
        $list | ForEach-Object { $_.IPAddress -is [ipaddress] | Should -BeTrue }
        ($list | ConvertTo-Json | ConvertFrom-Json).IPAddress | Should -Be @('203.0.113.77', '203.0.113.78')
        (Get-Retroflect | ConvertTo-Json -Depth 5 | ConvertFrom-Json).ReflectAddresses | Should -Be @('203.0.113.77', '203.0.113.78')
        # Stats as a script exports them (the issue's check): addresses as text at any depth.
        $stats = Get-ReflectStats | ConvertTo-Json -Depth 4 | ConvertFrom-Json
        @($stats.ByAddress | ForEach-Object { $_.IPAddress }) | Should -Be @('203.0.113.77', '203.0.113.78')
    }
    It 'Add-ReflectAddress refuses a loopback address with Retroflect.InvalidAddress and adds nothing' {
        Add-ReflectAddress 127.0.0.1 -Temporary -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable err | Out-Null
        $err[0].FullyQualifiedErrorId | Should -BeLike 'Retroflect.InvalidAddress*'
        @((Get-Retroflect).ReflectAddresses).Count | Should -Be 2
    }
    It 'the pipe is guarded by the token: a hello with another token is refused' {
        $pipe = New-Object System.IO.Pipes.NamedPipeClientStream('.', 'retroflect', [System.IO.Pipes.PipeDirection]::InOut)
        $pipe.Connect(5000)
        $writer = New-Object System.IO.StreamWriter($pipe, (New-Object System.Text.UTF8Encoding($false)))
        $reader = New-Object System.IO.StreamReader($pipe)
        $writer.Write('{"id":1,"method":"hello","params":{"protocol":1,"client":"pester","token":"not-the-token"}}' + "`n")
        $writer.Flush()
        $reply = $reader.ReadLine() | ConvertFrom-Json
        $pipe.Dispose()
        $reply.error.code | Should -Be 'E_ACCESS_DENIED'
    }
}

Describe 'Stop-Retroflect on Windows' {
    It 'stops the engine, waits for its process to exit and removes the token file' {
        $last = Stop-Retroflect -PassThru -Confirm:$false
        $last.State | Should -Be 'stopped'
        Get-Process -Id $script:Status.ProcessId -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        Test-Path -LiteralPath $script:TokenFile | Should -BeFalse
    }
    It 'afterwards Get-Retroflect writes Retroflect.EngineNotRunning and Stop-Retroflect does nothing' {
        Get-Retroflect -ErrorAction SilentlyContinue -ErrorVariable err | Should -BeNullOrEmpty
        # The pipe connect's own TimeoutException must not reach -ErrorVariable (it came first there, before the fix).
        $ids = @($err | ForEach-Object { $_.FullyQualifiedErrorId })
        $ids[0] | Should -BeLike 'Retroflect.EngineNotRunning*'
        $ids | Should -Not -Contain 'TimeoutException'
        { Stop-Retroflect -Confirm:$false } | Should -Not -Throw
    }
}

Describe 'No engine is known from the pipe check, not from the connect timeout (issue 21)' {
    # The connect's own verdict says 'answered ... within N ms' and carries its TimeoutException; the pipe check's
    # says 'is running' and carries none. No timing is asserted (benchmarks measure speed); the times are printed.
    It '<Command> with no engine writes the pipe check''s Retroflect.EngineNotRunning' -ForEach @(
        @{ Command = 'Get-Retroflect'
            Call = { Get-Retroflect -ErrorAction SilentlyContinue -ErrorVariable err; $err } }
        @{ Command = 'Get-ReflectAddress'
            Call = { Get-ReflectAddress -ErrorAction SilentlyContinue -ErrorVariable err; $err } }
        @{ Command = 'Get-ShieldPort -Pipe nothere'
            Call = { Get-ShieldPort -Pipe nothere -ErrorAction SilentlyContinue -ErrorVariable err; $err } }
        # Test-ReflectAddress asks this first: with no engine it tests offline (retroflect address test) at once.
        @{ Command = 'Test-RetroflectPipeAnswers'
            Call = { InModuleScope Retroflect { Test-RetroflectPipeAnswers -Pipe 'retroflect' } } }
    ) {
        $watch = [System.Diagnostics.Stopwatch]::StartNew()
        $out = @(& $Call)
        $watch.Stop()
        Write-Host "# no engine: $Command answered in $($watch.ElapsedMilliseconds) ms"
        if ($Command -eq 'Test-RetroflectPipeAnswers') {
            $out | Should -Be @($false)
            return
        }
        $out.Count | Should -Be 1
        $out[0].FullyQualifiedErrorId | Should -BeLike 'Retroflect.EngineNotRunning,*'
        $out[0].Exception.Message | Should -BeLike 'No retroflect engine is running on \\.\pipe\*'
        $out[0].Exception.InnerException | Should -BeNullOrEmpty
    }

    It 'the check tells a missing pipe from a free one and a busy one (WaitNamedPipe takes no instance)' {
        $name = 'retroflect-probe-' + [guid]::NewGuid().ToString('N').Substring(0, 8)
        $missing = {
            param($n)
            InModuleScope Retroflect -Parameters @{ N = $n } {
                param($N)
                Test-RetroflectPipeMissing (Resolve-RetroflectPipe -Pipe $N)
            }
        }
        & $missing $name | Should -BeTrue
        $server = New-Object System.IO.Pipes.NamedPipeServerStream($name, [System.IO.Pipes.PipeDirection]::InOut, 1,
            [System.IO.Pipes.PipeTransmissionMode]::Byte, [System.IO.Pipes.PipeOptions]::Asynchronous)
        $client = $null
        try {
            & $missing $name | Should -BeFalse -Because 'a free instance is waiting'
            $accept = $server.WaitForConnectionAsync()
            # The probe took no instance: this client still gets the only one.
            $client = New-Object System.IO.Pipes.NamedPipeClientStream('.', $name,
                [System.IO.Pipes.PipeDirection]::InOut)
            $client.Connect(5000)
            $accept.Wait(5000) | Should -BeTrue
            & $missing $name | Should -BeFalse -Because 'the pipe exists, its one instance busy'
        }
        finally {
            if ($client) { $client.Dispose() }
            $server.Dispose()
        }
        & $missing $name | Should -BeTrue -Because 'the server closed its pipe'
    }
}
