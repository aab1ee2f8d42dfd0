BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $script:Config = New-TestPath 'config.json'
    Set-Content -LiteralPath $script:Config -Value '{"schemaVersion":1,"reflectAddresses":["203.0.113.40"],"shieldPorts":[{"port":9440,"protocol":"tcp"}]}'
    $script:Pipe = Start-TestEngine -ConfigPath $script:Config -Address '203.0.113.41' -ShieldPort '9441/tcp'
}
AfterAll { Stop-TestEngine $script:Pipe }

Describe 'Get-ReflectStats' {
    It 'returns typed counters' {
        $s = Get-ReflectStats -Pipe $script:Pipe
        $s.PSTypeNames | Should -Contain 'Retroflect.Stats'
        $s.ReflectedPackets | Should -BeOfType [long]
        $s.ForgedSourceDroppedPackets | Should -BeOfType [long]
        $s.ForwardedDroppedPackets | Should -BeOfType [long]
        $s.ForwardedDroppedBytes | Should -BeOfType [long]
        $s.SampledAt | Should -BeOfType [datetime]
        $s.UptimeSeconds | Should -BeOfType [double]
        $s.ByAddress[0].IPAddress | Should -BeOfType [ipaddress]
    }
    It 'Persisted in ByAddress and ByShieldPort says what is in the config file' {
        $s = Get-ReflectStats -Pipe $script:Pipe
        ($s.ByAddress | Where-Object { $_.IPAddress.ToString() -eq '203.0.113.40' }).Persisted | Should -BeTrue
        ($s.ByAddress | Where-Object { $_.IPAddress.ToString() -eq '203.0.113.41' }).Persisted | Should -BeFalse
        ($s.ByShieldPort | Where-Object Port -eq 9440).Persisted | Should -BeTrue
        ($s.ByShieldPort | Where-Object Port -eq 9441).Persisted | Should -BeFalse
    }
    It 'Get-ReflectStats | ConvertTo-Json gives address strings and seconds' {
        $json = Get-ReflectStats -Pipe $script:Pipe | ConvertTo-Json -WarningAction SilentlyContinue | ConvertFrom-Json
        $json.UptimeSeconds | Should -BeOfType [double]
        $json.PSObject.Properties.Name | Should -Not -Contain 'Uptime'
        $json.ByAddress.IPAddress | Should -Contain '203.0.113.40'
    }
    It 'binds the pipe by position, never an interval by accident' {
        (Get-ReflectStats $script:Pipe).PSTypeNames | Should -Contain 'Retroflect.Stats'
    }
    It '-Interval and -Count give that many samples' {
        @(Get-ReflectStats -Pipe $script:Pipe -Interval 0.2 -Count 3).Count | Should -Be 3
    }
    It 'the table view fits 80 columns' {
        $text = Get-ReflectStats -Pipe $script:Pipe | Format-Table | Out-String -Width 80
        ($text -split "`n" | Where-Object { $_.Trim() }).Count | Should -Be 3   # header, rule, one row: nothing wrapped
        $text -split "`n" | ForEach-Object { $_.TrimEnd().Length | Should -BeLessOrEqual 80 }
    }
    It '-ErrorAction decides about a stopped engine' {
        Get-ReflectStats -Pipe (New-TestPath 'none.sock') -ErrorAction SilentlyContinue -ErrorVariable err | Should -BeNullOrEmpty
        $err[-1].FullyQualifiedErrorId | Should -BeLike 'Retroflect.EngineNotRunning*'
    }
    It 'Export-Csv of samples writes the nested lists as text (addresses, shield ports, counts), not type names' {
        $csv = New-TestPath 'stats.csv'
        Get-ReflectStats -Pipe $script:Pipe -Interval 0.2 -Count 2 | Export-Csv -LiteralPath $csv -NoTypeInformation
        $rows = @(Import-Csv -LiteralPath $csv)
        $rows.Count | Should -Be 2
        $rows[0].ByAddress | Should -Be '203.0.113.40;203.0.113.41'
        $rows[0].ByShieldPort | Should -Be '9440/tcp;9441/tcp'
        $rows[0].ByProtocol | Should -Match '^tcp=\d+ packets/\d+ bytes;udp='
        $rows[0].MalformedByReason | Should -Match '^\w+=\d+'
        (Get-Content -LiteralPath $csv -Raw) | Should -Not -Match 'System\.'
        (Get-ReflectStats -Pipe $script:Pipe).ByAddress[0].IPAddress | Should -BeOfType [ipaddress]
    }
}
