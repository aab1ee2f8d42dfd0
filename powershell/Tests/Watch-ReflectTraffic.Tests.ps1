# Pester 5 tests of Watch-ReflectTraffic against a real engine (environment: see Invoke-RetroflectTests.ps1). Traffic
# is curl to a closed port of the reflect address, in a background job: each try is a SYN and the RST answering it,
# both reflected.

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot '..\Retroflect\Retroflect.psd1') -Force
    $script:Pipe = Join-Path $env:RETROFLECT_TEST_DIR 'watch.sock'
    $script:Reflect = '203.0.113.20'
    Start-Retroflect -Path $env:RETROFLECT_TEST_ENGINE_EXE -NoConfig -Pipe $script:Pipe -Address $script:Reflect -TimeoutSeconds 60 -Confirm:$false | Out-Null
    function Start-TestTraffic {
        Start-Job -ArgumentList $script:Reflect -ScriptBlock {
            param($Address)
            for ($i = 0; $i -lt 150; $i++) { & curl -s -m 1 "http://${Address}:9/" | Out-Null; Start-Sleep -Milliseconds 200 }
        }
    }
}

AfterAll {
    Stop-Retroflect -Pipe $script:Pipe -Confirm:$false
}

Describe 'Watch-ReflectTraffic' {
    It '-Count 5 returns five typed packets while curl runs' {
        $job = Start-TestTraffic
        try {
            $packets = @(Watch-ReflectTraffic -Pipe $script:Pipe -Address $script:Reflect -Count 5 -Duration '00:01:00')
        }
        finally {
            $job | Stop-Job -PassThru | Remove-Job
        }
        $packets.Count | Should -Be 5
        foreach ($p in $packets) {
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
        $job = Start-TestTraffic
        try {
            $udpOnly = @(Watch-ReflectTraffic -Pipe $script:Pipe -Protocol udp -Duration '00:00:03')
            $port9 = @(Watch-ReflectTraffic -Pipe $script:Pipe -Port 9 -Count 2 -Duration '00:01:00')
        }
        finally {
            $job | Stop-Job -PassThru | Remove-Job
        }
        $udpOnly.Count | Should -Be 0
        $port9.Count | Should -Be 2
        $port9 | ForEach-Object { @($_.SourcePort, $_.DestinationPort) | Should -Contain 9 }
    }
    It '-Duration ends a watch that sees nothing' {
        $watch = [System.Diagnostics.Stopwatch]::StartNew()
        $none = @(Watch-ReflectTraffic -Pipe $script:Pipe -Port 1 -Duration '00:00:02')
        $none.Count | Should -Be 0
        $watch.Elapsed.TotalSeconds | Should -BeGreaterOrEqual 2
        $watch.Elapsed.TotalSeconds | Should -BeLessThan 20
    }
    It 'shows a packet table' {
        $job = Start-TestTraffic
        try {
            $text = Watch-ReflectTraffic -Pipe $script:Pipe -Address $script:Reflect -Count 2 -Duration '00:01:00' | Format-Table | Out-String -Width 250
        }
        finally {
            $job | Stop-Job -PassThru | Remove-Job
        }
        $text | Should -Match 'Verdict'
        $text | Should -Match 'ReflectedSource'
        $text | Should -Match 'reflected'
        $text | Should -Match ([regex]::Escape("${script:Reflect}:9"))
    }
    It 'a bad filter is a terminating Retroflect.InvalidAddress error' {
        { Watch-ReflectTraffic -Pipe $script:Pipe -Address 'not-an-address' -Count 1 } | Should -Throw -ErrorId 'Retroflect.InvalidAddress*'
    }
    It 'no engine: Retroflect.EngineNotRunning' {
        { Watch-ReflectTraffic -Pipe (Join-Path $env:RETROFLECT_TEST_DIR 'none.sock') -Count 1 } | Should -Throw -ErrorId 'Retroflect.EngineNotRunning*'
    }
}
