BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $script:Pipe = Start-TestEngine -ShieldPort '8080/tcp', '53/udp'
}
AfterAll { Stop-TestEngine $script:Pipe }

Describe 'Get-ShieldPort' {
    It 'lists typed ports, Persisted False on a -NoConfig engine' {
        $list = Get-ShieldPort -Pipe $script:Pipe
        $list.Count | Should -Be 2
        $list | ForEach-Object { $_.PSTypeNames | Should -Contain 'Retroflect.ShieldPort' }
        $list.Persisted | Should -Not -Contain $true
        $list[0].Packets | Should -BeOfType [long]
    }
    It 'filters by port and protocol' {
        (Get-ShieldPort -Port 8080 -Pipe $script:Pipe).Protocol | Should -Be 'tcp'
        (Get-ShieldPort -Protocol udp -Pipe $script:Pipe).Port | Should -Be 53
    }
    It 'a port that is not shielded is a non-terminating ObjectNotFound error' {
        $r = Get-ShieldPort -Port 8080, 1234 -Pipe $script:Pipe -ErrorAction SilentlyContinue -ErrorVariable err
        $r.Port | Should -Be 8080
        $err[-1].FullyQualifiedErrorId | Should -Be 'Retroflect.PortNotFound,Get-ShieldPort'
    }
    It '-ErrorAction decides about a stopped engine' {
        { Get-ShieldPort -Pipe (New-TestPath 'none.sock') -ErrorAction Ignore } | Should -Not -Throw
        { Get-ShieldPort -Pipe (New-TestPath 'none.sock') -ErrorAction Stop } | Should -Throw -ErrorId 'Retroflect.EngineNotRunning*'
    }
}
