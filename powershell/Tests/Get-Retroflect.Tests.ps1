BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $script:Config = New-TestPath 'config.json'
    Set-Content -LiteralPath $script:Config -Value '{"schemaVersion":1,"reflectAddresses":["203.0.113.10"],"shieldPorts":[{"port":9090,"protocol":"tcp"}]}'
    $script:Pipe = Start-TestEngine -ConfigPath $script:Config -ShieldPort '9091/udp'
}
AfterAll { Stop-TestEngine $script:Pipe }

Describe 'Get-Retroflect' {
    It 'returns a typed running status' {
        $s = Get-Retroflect -Pipe $script:Pipe
        $s.PSTypeNames | Should -Contain 'Retroflect.Status'
        $s.State | Should -Be 'running'
        $s.Backend | Should -BeIn @('ebpf', 'tun')   # Linux: ebpf where its program loads, else tun
        $s.StartedAt | Should -BeOfType [datetime]
        $s.UptimeSeconds | Should -BeOfType [double]
        $s.ReflectAddresses[0] | Should -BeOfType [ipaddress]
        $s.ReflectAddresses.IPAddressToString | Should -Contain '203.0.113.10'
    }
    It 'says which shield ports are persisted (config file) and which are for this run only' {
        $ports = (Get-Retroflect -Pipe $script:Pipe).ShieldPorts
        ($ports | Where-Object Port -eq 9090).Persisted | Should -BeTrue
        ($ports | Where-Object Port -eq 9091).Persisted | Should -BeFalse
    }
    It 'binds the pipe by position' {
        (Get-Retroflect $script:Pipe).State | Should -Be 'running'
    }
    It 'writes a non-terminating Retroflect.EngineNotRunning that -ErrorAction controls' {
        $none = New-TestPath 'none.sock'
        $r = Get-Retroflect -Pipe $none -ErrorAction SilentlyContinue -ErrorVariable err
        $r | Should -BeNullOrEmpty
        $err[0].FullyQualifiedErrorId | Should -BeLike 'Retroflect.EngineNotRunning*'
        $err[0].CategoryInfo.Category | Should -Be 'ResourceUnavailable'
        { Get-Retroflect -Pipe $none -ErrorAction Ignore } | Should -Not -Throw
        { Get-Retroflect -Pipe $none -ErrorAction Stop } | Should -Throw -ErrorId 'Retroflect.EngineNotRunning*'
    }
    It 'the table keeps every shield port at 80 columns, wrapping instead of cutting (issue 21)' {
        Add-ShieldPort 18081, 18082, 18083 -Protocol tcp -Temporary -Pipe $script:Pipe -Confirm:$false
        $text = Get-Retroflect -Pipe $script:Pipe | Format-Table | Out-String -Width 80
        Remove-ShieldPort 18081, 18082, 18083 -Protocol tcp -Temporary -Pipe $script:Pipe -Confirm:$false
        foreach ($line in $text -split "`n") { $line.TrimEnd().Length | Should -BeLessOrEqual 80 }
        $flat = $text -replace '\s+', ''
        foreach ($p in (Get-Retroflect -Pipe $script:Pipe).ShieldPorts) { $flat | Should -Match ([regex]::Escape(('{0}/{1}' -f $p.Port, $p.Protocol))) }
        $text | Should -Not -Match '\u2026|\.\.\.'
    }
    It 'gives one ErrorRecord for "no engine", its id ending in ,Get-Retroflect (issue 21)' {
        Get-Retroflect -Pipe nothere -ErrorAction SilentlyContinue -ErrorVariable err
        $err.Count | Should -Be 1
        $err[0].FullyQualifiedErrorId | Should -Be 'Retroflect.EngineNotRunning,Get-Retroflect'
        Get-Retroflect -Pipe 'not a pipe!' -ErrorAction SilentlyContinue -ErrorVariable err
        $err.Count | Should -Be 1
        $err[0].FullyQualifiedErrorId | Should -Be 'Retroflect.InvalidParams,Get-Retroflect'
    }
    It 'reports Retroflect.AccessDenied with "run elevated" to a session that is not root (elevation check mocked: pwsh lives in root''s home here)' {
        Mock -ModuleName Retroflect Test-RetroflectElevated { $false }
        Get-Retroflect -Pipe $script:Pipe -ErrorAction SilentlyContinue -ErrorVariable err | Should -BeNullOrEmpty
        $err[-1].FullyQualifiedErrorId | Should -Be 'Retroflect.AccessDenied,Get-Retroflect'
        $err[0].FullyQualifiedErrorId | Should -BeLike 'Retroflect.AccessDenied*'
        $err[0].CategoryInfo.Category | Should -Be 'PermissionDenied'
        $err[0].ErrorDetails.RecommendedAction | Should -Match 'elevated'
    }
    It 'ConvertTo-Json gives seconds, not a [timespan]' {
        $json = Get-Retroflect -Pipe $script:Pipe | ConvertTo-Json -Depth 1 -WarningAction SilentlyContinue | ConvertFrom-Json
        $json.UptimeSeconds | Should -BeGreaterThan 0
        $json.PSObject.Properties.Name | Should -Not -Contain 'Uptime'
    }
    It 'ConvertTo-Csv writes ReflectAddresses, ShieldPorts and BackendInfo as text, not type names; "$status" is the state' {
        $s = Get-Retroflect -Pipe $script:Pipe
        $row = $s | ConvertTo-Csv -NoTypeInformation | ConvertFrom-Csv
        $row.ReflectAddresses | Should -Be '203.0.113.10'
        $row.ShieldPorts | Should -Be '9090/tcp;9091/udp'
        $row.BackendInfo | Should -Match '(^|;)device=\w'
        ($row.PSObject.Properties.Value -join ' ') | Should -Not -Match 'System\.'
        # The properties themselves stay typed.
        $s.ReflectAddresses[0] | Should -BeOfType [ipaddress]
        $s.ShieldPorts[0].Port | Should -Be 9090
        $s.BackendInfo['device'] | Should -Not -BeNullOrEmpty
        "$s" | Should -Be 'running'
    }
}
