BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $script:Pipe = Start-TestEngine -Address '192.0.2.31'
}
AfterAll { Stop-TestEngine $script:Pipe }

Describe 'Test-ReflectAddress' {
    It 'reports why not and suggests an address' {
        $t = Test-ReflectAddress 127.0.0.1 -Pipe $script:Pipe
        $t.PSTypeNames | Should -Contain 'Retroflect.AddressTest'
        $t.Usable | Should -BeFalse
        $t.Reason | Should -Not -BeNullOrEmpty
        $t.Suggestion | Should -BeOfType [ipaddress]
        $t.IPAddress | Should -BeOfType [ipaddress]
    }
    It '-Quiet returns booleans' {
        Test-ReflectAddress 198.51.100.200 -Pipe $script:Pipe -Quiet | Should -BeFalse   # on the namespace's subnet
        Test-ReflectAddress 203.0.113.77 -Pipe $script:Pipe -Quiet | Should -BeTrue
    }
    It 'says whether an address is configured' {
        (Test-ReflectAddress 192.0.2.31 -Pipe $script:Pipe).Configured | Should -BeTrue
    }
    It 'shows the engine''s warnings (a public address) as warnings' {
        $t = Test-ReflectAddress 8.8.8.8 -Pipe $script:Pipe -WarningVariable warn -WarningAction SilentlyContinue
        $t.Warnings | Should -Not -BeNullOrEmpty
        $warn | Should -Not -BeNullOrEmpty
    }
    It '-Quiet answers $false, one per address, when the addresses could not be tested (issue 21)' {
        $r = @('203.0.113.1', '203.0.113.2') | Test-ReflectAddress -Pipe 'not a pipe!' -Quiet -ErrorAction SilentlyContinue -ErrorVariable err
        $r | Should -Be @($false, $false)
        $err.Count | Should -Be 1
        $err[0].FullyQualifiedErrorId | Should -Be 'Retroflect.InvalidParams,Test-ReflectAddress'
    }
    It 'answers a piped list in one session, in order' {
        $r = '203.0.113.1', 'not-an-ip' | Test-ReflectAddress -Pipe $script:Pipe -Quiet
        $r | Should -Be @($true, $false)
    }
    It 'answers without an engine: the executable runs the same checks on this host' {
        $none = New-TestPath 'none.sock'
        $t = @('198.51.100.200', '203.0.113.1') | Test-ReflectAddress -Pipe $none -ErrorVariable err
        $err | Should -BeNullOrEmpty
        $t[0].Usable | Should -BeFalse
        $t[0].Reasons[0].Rule | Should -Be 'local-subnet'
        $t[0].Suggestion | Should -BeOfType [ipaddress]
        $t[1].Usable | Should -BeTrue
        Test-ReflectAddress 203.0.113.1 -Pipe $none -Quiet | Should -BeTrue
    }
    It 'reads as its input ("$t") and writes Reasons and Warnings to CSV as text' {
        $t = Test-ReflectAddress 127.0.0.1 -Pipe $script:Pipe
        "$t" | Should -Be '127.0.0.1'
        $row = $t | ConvertTo-Csv -NoTypeInformation | ConvertFrom-Csv
        $row.Reasons | Should -Match 'loopback'
        $row.Reasons | Should -Not -Match 'System\.'
        $w = Test-ReflectAddress 8.8.8.8 -Pipe $script:Pipe -WarningAction SilentlyContinue | ConvertTo-Csv -NoTypeInformation | ConvertFrom-Csv
        $w.Warnings | Should -Not -BeNullOrEmpty
        $w.Warnings | Should -Not -Match 'System\.'
    }
    It 'the table shows the suggested address at 80 and 120 columns (the long reason is the one cut short)' {
        $t = Test-ReflectAddress 127.0.0.1 -Pipe $script:Pipe
        foreach ($width in 80, 120) {
            $lines = @(($t | Format-Table | Out-String -Width $width) -split "`r?`n" | Where-Object { $_.Trim() })
            $lines[0] | Should -Match 'Suggestion'
            $lines[2] | Should -Match ([regex]::Escape($t.Suggestion.ToString()))
            $lines | ForEach-Object { $_.TrimEnd().Length | Should -BeLessOrEqual $width }
        }
    }
}
