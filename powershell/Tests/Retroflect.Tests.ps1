# Pester 5 tests of every cmdlet against a real engine (see Invoke-RetroflectTests.ps1 for the environment).
# Addresses come from the documentation ranges; the surrounding namespace has a default route, so they validate.

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot '..\Retroflect\Retroflect.psd1') -Force
    $script:Exe = $env:RETROFLECT_TEST_ENGINE_EXE
    $script:Dir = $env:RETROFLECT_TEST_DIR
    $script:Pipe = Join-Path $script:Dir 'pester.sock'
    $script:Status = Start-Retroflect -Path $script:Exe -NoConfig -Pipe $script:Pipe -Address '203.0.113.10' -ShieldPort '9090/tcp' -TimeoutSeconds 60 -Confirm:$false
}

AfterAll {
    Stop-Retroflect -Pipe $script:Pipe -Confirm:$false
}

Describe 'Start-Retroflect / Get-Retroflect' {
    It 'returns a typed running status with the start-up entries' {
        $script:Status.PSObject.TypeNames[0] | Should -Be 'Retroflect.Status'
        $script:Status.State | Should -Be 'running'
        $script:Status.Backend | Should -Be 'tun'
        $script:Status.StartedAt | Should -BeOfType [datetime]
        $script:Status.ReflectAddresses[0] | Should -BeOfType [ipaddress]
        $script:Status.ReflectAddresses.IPAddressToString | Should -Contain '203.0.113.10'
        ($script:Status.ShieldPorts | ForEach-Object { '{0}/{1}' -f $_.Port, $_.Protocol }) | Should -Contain '9090/tcp'
    }
    It 'is idempotent: a second start returns the same engine' {
        $again = Start-Retroflect -Path $script:Exe -NoConfig -Pipe $script:Pipe -Confirm:$false
        $again.ProcessId | Should -Be $script:Status.ProcessId
    }
    It 'Get-Retroflect reports the engine' {
        (Get-Retroflect -Pipe $script:Pipe).ProcessId | Should -Be $script:Status.ProcessId
    }
    It 'Get-Retroflect on a pipe without engine writes Retroflect.EngineNotRunning and returns nothing' {
        $r = Get-Retroflect -Pipe (Join-Path $script:Dir 'none.sock') -ErrorAction SilentlyContinue -ErrorVariable err
        $r | Should -BeNullOrEmpty
        $err[0].FullyQualifiedErrorId | Should -BeLike 'Retroflect.EngineNotRunning*'
        $err[0].CategoryInfo.Category | Should -Be 'ResourceUnavailable'
    }
    It 'Start-Retroflect with a missing executable fails with Retroflect.ExecutableNotFound' {
        { Start-Retroflect -Path (Join-Path $script:Dir 'nope') -Pipe (Join-Path $script:Dir 'x.sock') -Confirm:$false } |
            Should -Throw -ErrorId 'Retroflect.ExecutableNotFound*'
    }
}

Describe 'Reflect addresses' {
    It 'adds piped strings in one change and is idempotent' {
        $r = '192.0.2.1', '192.0.2.2' | Add-ReflectAddress -Pipe $script:Pipe -Temporary -Confirm:$false
        $r.Count | Should -Be 2
        $r | ForEach-Object { $_.Added | Should -BeTrue }
        $r2 = Add-ReflectAddress 192.0.2.1 -Pipe $script:Pipe -Temporary -Confirm:$false
        $r2.Added | Should -BeFalse
    }
    It 'lists typed addresses' {
        $list = Get-ReflectAddress -Pipe $script:Pipe
        $list[0].PSObject.TypeNames[0] | Should -Be 'Retroflect.ReflectAddress'
        $list.Address | ForEach-Object { $_ | Should -BeOfType [ipaddress] }
        $list.Address.IPAddressToString | Should -Contain '192.0.2.2'
    }
    It '-WhatIf changes nothing' {
        Add-ReflectAddress 192.0.2.3 -Pipe $script:Pipe -WhatIf
        (Get-ReflectAddress -Pipe $script:Pipe).Address.IPAddressToString | Should -Not -Contain '192.0.2.3'
    }
    It 'refuses a local address with Retroflect.InvalidAddress and a hint, adding nothing' {
        Add-ReflectAddress '127.0.0.1', '192.0.2.4' -Pipe $script:Pipe -Temporary -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable err
        $err[0].FullyQualifiedErrorId | Should -BeLike 'Retroflect.InvalidAddress*'
        $err[0].CategoryInfo.Category | Should -Be 'InvalidArgument'
        $err[0].ErrorDetails.RecommendedAction | Should -Not -BeNullOrEmpty
        (Get-ReflectAddress -Pipe $script:Pipe).Address.IPAddressToString | Should -Not -Contain '192.0.2.4'
    }
    It 'Test-ReflectAddress reports why not and suggests an address' {
        $t = Test-ReflectAddress 127.0.0.1 -Pipe $script:Pipe
        $t.Usable | Should -BeFalse
        $t.Reason | Should -Not -BeNullOrEmpty
        $t.Suggestion | Should -BeOfType [ipaddress]
        Test-ReflectAddress 198.51.100.200 -Pipe $script:Pipe -Quiet | Should -BeFalse   # on the local subnet
        Test-ReflectAddress 203.0.113.77 -Pipe $script:Pipe -Quiet | Should -BeTrue
    }
    It 'Get-ReflectAddress | Remove-ReflectAddress removes all' {
        Get-ReflectAddress -Pipe $script:Pipe | Remove-ReflectAddress -Temporary -Confirm:$false
        Get-ReflectAddress -Pipe $script:Pipe | Should -BeNullOrEmpty
    }
    It 'removing a missing address is a non-terminating Retroflect.AddressNotFound' {
        Remove-ReflectAddress 192.0.2.99 -Pipe $script:Pipe -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable err
        $err[0].FullyQualifiedErrorId | Should -BeLike 'Retroflect.AddressNotFound*'
        $err[0].CategoryInfo.Category | Should -Be 'ObjectNotFound'
    }
}

Describe 'Port maps' {
    It 'Add-ReflectAddress -PortMap takes a hashtable and a spec string; Get-ReflectAddress shows typed PortMap objects' {
        $a = Add-ReflectAddress '203.0.113.40' -PortMap @{80 = 8080}, '443=8443/tcp' -Pipe $script:Pipe -Confirm:$false
        $a.Added | Should -BeTrue
        $got = Get-ReflectAddress '203.0.113.40' -Pipe $script:Pipe
        $got.PortMap.Count | Should -Be 3
        $got.PortMap[0].PSObject.TypeNames[0] | Should -Be 'Retroflect.PortMap'
        $got.PortMap[0].Port | Should -BeOfType [int]
        ($got.PortMap | ForEach-Object { '{0}={1}/{2}' -f $_.Port, $_.Target, $_.Protocol }) | Should -Be @('80=8080/tcp', '80=8080/udp', '443=8443/tcp')
    }
    It 'refuses a conflicting map with Retroflect.PortMapConflict and changes nothing' {
        Add-ReflectAddress '203.0.113.40' -PortMap @{80 = 9090} -Pipe $script:Pipe -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable err
        $err[0].FullyQualifiedErrorId | Should -BeLike 'Retroflect.PortMapConflict*'
        (Get-ReflectAddress '203.0.113.40' -Pipe $script:Pipe).PortMap.Count | Should -Be 3
    }
    It 'Remove-ReflectAddress -PortMap removes only that map; the address stays' {
        $gone = Remove-ReflectAddress '203.0.113.40' -PortMap 80 -PassThru -Pipe $script:Pipe -Confirm:$false
        @($gone).Count | Should -Be 2
        $left = Get-ReflectAddress '203.0.113.40' -Pipe $script:Pipe
        ($left.PortMap | ForEach-Object { "$_" }) | Should -Be @('443=8443/tcp')
        Remove-ReflectAddress '203.0.113.40' -Pipe $script:Pipe -Confirm:$false
    }
}

Describe 'Shield ports' {
    It 'adds, lists and removes by pipeline' {
        $r = 8080, 8443 | Add-ShieldPort -Protocol tcp -Pipe $script:Pipe -Temporary -Confirm:$false
        ($r | Where-Object Added).Count | Should -Be 2
        $list = Get-ShieldPort -Pipe $script:Pipe -Protocol tcp
        $list[0].PSObject.TypeNames[0] | Should -Be 'Retroflect.ShieldPort'
        $list.Port | Should -Contain 8443
        Get-ShieldPort -Pipe $script:Pipe -Port 8080, 8443 | Remove-ShieldPort -Temporary -Confirm:$false
        Get-ShieldPort -Pipe $script:Pipe -Port 8080, 8443 | Should -BeNullOrEmpty
    }
    It 'removing a port that is not shielded is Retroflect.PortNotFound' {
        Remove-ShieldPort 7 -Protocol udp -Pipe $script:Pipe -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable err
        $err[0].FullyQualifiedErrorId | Should -BeLike 'Retroflect.PortNotFound*'
    }
}

Describe 'Stats and flows' {
    It 'Get-ReflectStats returns typed counters' {
        $s = Get-ReflectStats -Pipe $script:Pipe
        $s.PSObject.TypeNames[0] | Should -Be 'Retroflect.Stats'
        $s.ReflectedPackets | Should -BeOfType [long]
        $s.ForgedSourceDroppedPackets | Should -BeOfType [long]
        $s.SampledAt | Should -BeOfType [datetime]
    }
    It 'Get-ReflectFlow shows a reflected TCP connection, sortable by Bytes' {
        $listener = [System.Net.Sockets.TcpListener]::new([ipaddress]::Any, 18080)
        $listener.Start()
        try {
            Add-ReflectAddress 203.0.113.20 -Pipe $script:Pipe -Temporary -Confirm:$false | Out-Null
            $client = [System.Net.Sockets.TcpClient]::new()
            $client.Connect('203.0.113.20', 18080)
            $server = $listener.AcceptTcpClient()
            ($server.Client.RemoteEndPoint).Address.ToString() | Should -Be '203.0.113.20'
            $client.Close(); $server.Close()
            $flows = Get-ReflectFlow -Pipe $script:Pipe | Sort-Object Bytes -Descending
            $flow = $flows | Where-Object { $_.ReflectAddress.ToString() -eq '203.0.113.20' -and $_.ServerPort -eq 18080 } | Select-Object -First 1
            $flow | Should -Not -BeNullOrEmpty
            $flow.PSObject.TypeNames[0] | Should -Be 'Retroflect.Flow'
            $flow.Bytes | Should -BeOfType [long]
            $flow.Bytes | Should -BeGreaterThan 0
        }
        finally { $listener.Stop() }
    }
}

Describe 'Install-Retroflect / Uninstall-Retroflect under a test root' {
    BeforeAll { $script:Root = Join-Path $script:Dir 'root' }
    It 'writes the unit and config, idempotently' {
        $i = Install-Retroflect -Root $script:Root -Path $script:Exe -Address 192.0.2.5 -ShieldPort 8080 -Confirm:$false
        $i.PSObject.TypeNames[0] | Should -Be 'Retroflect.Installation'
        $i.Changed | Should -BeTrue
        $unit = Join-Path $script:Root 'etc/systemd/system/retroflect.service'
        Get-Content $unit -Raw | Should -Match ('ExecStart=' + [regex]::Escape($script:Exe) + ' run --config /etc/retroflect/config.json')
        $cfg = Get-Content (Join-Path $script:Root 'etc/retroflect/config.json') -Raw | ConvertFrom-Json
        $cfg.schemaVersion | Should -Be 1
        $cfg.reflectAddresses | Should -Contain '192.0.2.5'
        @($cfg.shieldPorts).Count | Should -Be 2
        (Install-Retroflect -Root $script:Root -Path $script:Exe -Address 192.0.2.5 -ShieldPort 8080 -Confirm:$false).Changed | Should -BeFalse
    }
    It 'uninstall leaves nothing behind with -RemoveConfig, and is idempotent' {
        Uninstall-Retroflect -Root $script:Root -RemoveConfig -Confirm:$false
        Test-Path (Join-Path $script:Root 'etc/systemd/system/retroflect.service') | Should -BeFalse
        Test-Path (Join-Path $script:Root 'etc/retroflect') | Should -BeFalse
        { Uninstall-Retroflect -Root $script:Root -RemoveConfig -Confirm:$false } | Should -Not -Throw
    }
}

Describe 'Stop-Retroflect' {
    # Last: stops the engine of this file (one engine per namespace, as both would want the same TUN device).
    It 'stops the engine, waits for its exit, and is idempotent' {
        Stop-Retroflect -Pipe $script:Pipe -Confirm:$false
        Get-Process -Id $script:Status.ProcessId -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        { Stop-Retroflect -Pipe $script:Pipe -Confirm:$false } | Should -Not -Throw
    }
}
