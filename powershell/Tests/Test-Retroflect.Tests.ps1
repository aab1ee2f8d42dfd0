BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $script:Pipe = Start-TestEngine -Address '203.0.113.61' -ShieldPort '8088/tcp'
    # A dual-stack listener on the wildcard address: what a reachable local server looks like.
    $script:Listener = [System.Net.Sockets.TcpListener]::new([ipaddress]::IPv6Any, 8088)
    $script:Listener.Server.DualMode = $true
    $script:Listener.Start()
}
AfterAll {
    if ($script:Listener) { $script:Listener.Stop() }
    Stop-TestEngine $script:Pipe
}

Describe 'Test-Retroflect' {
    It 'returns one Retroflect.Check per check, every one passing on a healthy host with a running engine' {
        $checks = @(Test-Retroflect -Pipe $script:Pipe)
        $checks.Count | Should -BeGreaterThan 8
        foreach ($c in $checks) {
            $c.PSTypeNames | Should -Contain 'Retroflect.Check'
            $c.Status | Should -BeIn @('Pass', 'Warning', 'Fail', 'Skipped')
            $c.Name | Should -Not -BeNullOrEmpty
            $c.Detail | Should -Not -BeNullOrEmpty
        }
        # An address without allow lists is a warning by design (it opens every wildcard-bound port): named, not failed.
        ($checks | Where-Object Name -eq 'allow.203.0.113.61').Status | Should -Be 'Warning'
        @($checks | Where-Object { $_.Status -ne 'Pass' -and $_.Name -notlike 'allow.*' }) |
            ForEach-Object { "$_ $($_.Detail)" } | Should -BeNullOrEmpty
        ($checks | Where-Object Name -eq 'engine').Evidence.running | Should -BeTrue
        ($checks | Where-Object Name -eq 'address.203.0.113.61').Status | Should -Be 'Pass'
        Test-Retroflect -Pipe $script:Pipe -Quiet | Should -BeTrue
    }
    It 'reports a server bound to 127.0.0.1 as Fail with the fix, the facts as data, and -Quiet says $false' {
        $script:Listener.Stop()
        $loopback = [System.Net.Sockets.TcpListener]::new([ipaddress]::Loopback, 8088)
        $loopback.Start()
        try {
            $port = Test-Retroflect -Pipe $script:Pipe | Where-Object Name -eq 'port.8088/tcp'
            $port.Status | Should -Be 'Fail'
            $port.Fix | Should -Match 'wildcard address'
            $port.Evidence.boundTo | Should -Be @('127.0.0.1')
            "$port" | Should -Be 'Fail: port.8088/tcp'
            Test-Retroflect -Pipe $script:Pipe -Quiet | Should -BeFalse
        }
        finally {
            $loopback.Stop()
            $script:Listener = [System.Net.Sockets.TcpListener]::new([ipaddress]::IPv6Any, 8088)
            $script:Listener.Server.DualMode = $true
            $script:Listener.Start()
        }
    }
    It 'works without an engine: the engine check warns with how to start one, and the config file is checked' {
        $config = New-TestPath 'doctor.json'
        $json = '{"schemaVersion": 1, "reflectAddresses": ["198.51.100.50"], "shieldPorts": []}'
        Set-Content -LiteralPath $config -Value $json
        $checks = Test-Retroflect -Pipe (New-TestPath 'none.sock') -ConfigPath $config
        $engine = $checks | Where-Object Name -eq 'engine'
        $engine.Status | Should -Be 'Warning'
        $engine.Fix | Should -Match 'Start-Retroflect'
        $address = $checks | Where-Object Name -eq 'address.198.51.100.50'
        $address.Status | Should -Be 'Fail'   # on the namespace's own subnet
        $address.Evidence.rules | Should -Be @('local-subnet')
        # This file's engine runs on another pipe: its table is there, and the doctor says what that can mean.
        $table = $checks | Where-Object Name -eq 'linux.nft-table'
        $table.Status | Should -Be 'Warning'
        $table.Detail | Should -Match 'another pipe'
    }
    It 'shows Status, Name and Detail in its table view, and Fix in its list view' {
        $checks = Test-Retroflect -Pipe $script:Pipe
        $table = ($checks | Format-Table | Out-String -Width 200) -split "`r?`n" | Where-Object { $_.Trim() }
        $table[0] | Should -Match '^Status\s+Name\s+Detail'
        $list = $checks | Where-Object Name -eq 'engine' | Format-List | Out-String
        $list | Should -Match 'Fix\s*:'
        $list | Should -Match 'Evidence\s*:\s*\{'
    }
    It 'throws Retroflect.ExecutableNotFound for a missing executable' {
        $missing = New-TestPath 'no-such-retroflect'
        { Test-Retroflect -Path $missing } | Should -Throw -ErrorId 'Retroflect.ExecutableNotFound*'
    }
}
