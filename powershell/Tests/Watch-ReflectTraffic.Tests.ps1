# Pester 5 tests of Watch-ReflectTraffic against a real engine (environment: see TestHelpers.ps1). Traffic
# comes from Invoke-WithTestTraffic (TestHelpers.ps1): curl to a closed port of the reflect address.

BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $script:Reflect = '203.0.113.20'
    $script:Pipe = Start-TestEngine -Address $script:Reflect
}
AfterAll { Stop-TestEngine $script:Pipe }

Describe 'Watch-ReflectTraffic' {
    It '-Count 5 returns five typed packets while curl runs' {
        $packets = @(Invoke-WithTestTraffic $script:Reflect { Watch-ReflectTraffic -Pipe $script:Pipe -Address $script:Reflect -Count 5 -Duration '00:01:00' })
        $packets.Count | Should -Be 5
        $device = (Get-Retroflect -Pipe $script:Pipe).BackendInfo['device']
        $device | Should -Not -BeNullOrEmpty
        foreach ($p in $packets) {
            $p.Interface | Should -Be $device
            $p.PSTypeNames | Should -Contain 'Retroflect.Packet'
            $p.Time | Should -BeOfType [datetime]
            $p.Source | Should -BeOfType [ipaddress]
            $p.Destination | Should -BeOfType [ipaddress]
            $p.Verdict | Should -Be 'reflected'
            $p.Protocol | Should -Be 'tcp'
            $p.Direction | Should -Be 'outbound'
            # Reflection swaps the addresses: what came from this host now comes from the reflect address.
            $p.ReflectedSource | Should -Be $p.Destination
            $p.ReflectedDestination | Should -Be $p.Source
            $p.Length | Should -BeGreaterThan 39
        }
        $syn = $packets | Where-Object TcpFlags -eq 'SYN' | Select-Object -First 1
        $syn | Should -Not -BeNullOrEmpty
        $syn.Destination.IPAddressToString | Should -Be $script:Reflect
        $syn.DestinationPort | Should -Be 9
        ($packets | Where-Object { $_.TcpFlags -match 'RST' }) | Should -Not -BeNullOrEmpty
        [math]::Abs(($packets[0].Time - (Get-Date)).TotalMinutes) | Should -BeLessThan 2
    }
    It 'filters in the engine: -Port selects, -Protocol excludes (the host''s own IPv6 chatter into the device passes unreflected)' {
        $r = Invoke-WithTestTraffic $script:Reflect {
            @{
                UdpOnly = @(Watch-ReflectTraffic -Pipe $script:Pipe -Protocol udp -Duration '00:00:03')
                Port9   = @(Watch-ReflectTraffic -Pipe $script:Pipe -Port 9 -Count 2 -Duration '00:01:00')
            }
        }
        $r.UdpOnly.Count | Should -Be 0
        $r.Port9.Count | Should -Be 2
        $r.Port9 | ForEach-Object { @($_.SourcePort, $_.DestinationPort) | Should -Contain 9 }
    }
    It '-Duration ends a watch that sees nothing' {
        $watch = [System.Diagnostics.Stopwatch]::StartNew()
        $none = @(Watch-ReflectTraffic -Pipe $script:Pipe -Port 1 -Duration '00:00:02')
        $none.Count | Should -Be 0
        $watch.Elapsed.TotalSeconds | Should -BeGreaterOrEqual 2
        $watch.Elapsed.TotalSeconds | Should -BeLessThan 20
    }
    It 'shows a packet table' {
        $text = Invoke-WithTestTraffic $script:Reflect { Watch-ReflectTraffic -Pipe $script:Pipe -Address $script:Reflect -Count 2 -Duration '00:01:00' | Format-Table | Out-String -Width 250 }
        $text | Should -Match 'Verdict'
        $text | Should -Match 'ReflectedSource'
        $text | Should -Match 'reflected'
        $text | Should -Match ([regex]::Escape("${script:Reflect}:9"))
    }
    It 'the packet table fits 80 and 120 columns without wrapping, IPv4 endpoints whole; a packet reads as verdict, protocol and endpoints' {
        $packets = @(Invoke-WithTestTraffic $script:Reflect { Watch-ReflectTraffic -Pipe $script:Pipe -Address $script:Reflect -Port 9 -Count 2 -Duration '00:01:00' })
        $packets.Count | Should -Be 2
        foreach ($width in 80, 120) {
            $lines = @(($packets | Format-Table | Out-String -Width $width) -split "`r?`n" | Where-Object { $_.Trim() })
            $lines.Count | Should -Be 4   # header, rule, two rows: no header split over two lines
            $lines | ForEach-Object { $_.TrimEnd().Length | Should -BeLessOrEqual $width }
            $lines[0] | Should -Match 'Source +Destination'
            ($lines -join "`n") | Should -Match ('(?m)' + [regex]::Escape("${script:Reflect}:9") + '(\s|$)')
            ($lines -join "`n") | Should -Not -Match '\u2026|\.\.\.'   # nothing cut short
        }
        $wide = $packets | Format-Table | Out-String -Width 120
        $wide | Should -Match 'ReflectedSource +Length +Flags'
        "$($packets[0])" | Should -Match ('^reflected tcp \S+ -> \S+$')
        "$($packets[0])" | Should -Not -Match 'Json'
    }
    It 'writes an IPv6 endpoint with its port as [address]:port' {
        $v6 = '2001:db8::20'
        Add-ReflectAddress $v6 -Temporary -Pipe $script:Pipe -Confirm:$false
        try {
            $packets = @(Invoke-WithTestTraffic "[$v6]" { Watch-ReflectTraffic -Pipe $script:Pipe -Address $v6 -Port 9 -Count 2 -Duration '00:01:00' })
        }
        finally { Remove-ReflectAddress $v6 -Pipe $script:Pipe -Confirm:$false }
        $packets.Count | Should -Be 2
        $syn = $packets | Where-Object TcpFlags -eq 'SYN' | Select-Object -First 1
        $text = $syn | Format-Table | Out-String -Width 120
        $text | Should -Match ('(?m)' + [regex]::Escape("[$v6]:9") + '(\s|$)')
        "$syn" | Should -Match ([regex]::Escape("-> [$v6]:9"))
    }
    It 'Ctrl+C (a stopped pipeline) ends it promptly and closes its capture in the engine' {
        # Nine watches stopped one after another in a runspace of their own: had a stopped one kept its capture, the
        # engine (8 captures at most) would refuse the last watch with Retroflect.LimitReached.
        $runspace = [runspacefactory]::CreateRunspace()
        $runspace.Open()
        try {
            $ps = [powershell]::Create()
            $ps.Runspace = $runspace
            $null = $ps.AddCommand('Import-Module').AddParameter('Name', $script:ModuleManifest).Invoke()
            $ps.Dispose()
            for ($i = 0; $i -lt 9; $i++) {
                $ps = [powershell]::Create()
                $ps.Runspace = $runspace
                $null = $ps.AddCommand('Watch-ReflectTraffic').AddParameter('Pipe', $script:Pipe).AddParameter('Port', 1)
                $async = $ps.BeginInvoke()
                Start-Sleep -Milliseconds 800
                $ps.InvocationStateInfo.State | Should -Be 'Running'
                $watch = [System.Diagnostics.Stopwatch]::StartNew()
                $ps.Stop()
                $watch.Elapsed.TotalSeconds | Should -BeLessThan 3
                $ps.InvocationStateInfo.State | Should -Be 'Stopped'
                $ps.Dispose()
            }
        }
        finally {
            $runspace.Dispose()
        }
        @(Watch-ReflectTraffic -Pipe $script:Pipe -Port 1 -Duration '00:00:01' -ErrorAction Stop).Count | Should -Be 0
    }
    It 'a bad filter is a terminating Retroflect.InvalidAddress error' {
        { Watch-ReflectTraffic -Pipe $script:Pipe -Address 'not-an-address' -Count 1 } | Should -Throw -ErrorId 'Retroflect.InvalidAddress*'
    }
    It 'no engine: Retroflect.EngineNotRunning' {
        { Watch-ReflectTraffic -Pipe (Join-Path $env:RETROFLECT_TEST_DIR 'none.sock') -Count 1 } | Should -Throw -ErrorId 'Retroflect.EngineNotRunning*'
    }
    It 'completes -Address with the running engine''s reflect addresses, as Get-ReflectAddress does' {
        $line = "Watch-ReflectTraffic -Pipe '$($script:Pipe)' -Address 203.0.113."
        (TabExpansion2 -inputScript $line -cursorColumn $line.Length).CompletionMatches.CompletionText | Should -Contain $script:Reflect
    }
}
