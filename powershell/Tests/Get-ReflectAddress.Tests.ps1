BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $script:Pipe = Start-TestEngine -Address '192.0.2.21', '192.0.2.22', '2001:db8::22'
}
AfterAll { Stop-TestEngine $script:Pipe }

Describe 'Get-ReflectAddress' {
    It '(Get-ReflectAddress).IPAddress gives the addresses as [ipaddress], not an array method' {
        $ips = (Get-ReflectAddress -Pipe $script:Pipe).IPAddress
        $ips.Count | Should -Be 3
        $ips | ForEach-Object { $_ | Should -BeOfType [ipaddress] }
        $ips.IPAddressToString | Should -Be @('192.0.2.21', '192.0.2.22', '2001:db8::22')
    }
    It 'lists typed objects with AddressFamily and Persisted (False on a -NoConfig engine)' {
        $list = Get-ReflectAddress -Pipe $script:Pipe
        $list | ForEach-Object { $_.PSTypeNames | Should -Contain 'Retroflect.ReflectAddress' }
        ($list | Where-Object AddressFamily -eq 'IPv6').IPAddress.IPAddressToString | Should -Be '2001:db8::22'
        $list.Persisted | Should -Not -Contain $true
    }
    It 'filters by exact name (any spelling of the address) and by wildcard' {
        (Get-ReflectAddress 2001:DB8::22 -Pipe $script:Pipe).IPAddress.IPAddressToString | Should -Be '2001:db8::22'
        (Get-ReflectAddress '192.0.2.2*' -Pipe $script:Pipe).Count | Should -Be 2
    }
    It 'a missing exact address is a non-terminating ObjectNotFound error; an unmatched wildcard is silent' {
        $r = Get-ReflectAddress '192.0.2.99', '192.0.2.21' -Pipe $script:Pipe -ErrorAction SilentlyContinue -ErrorVariable err
        $r.IPAddress.IPAddressToString | Should -Be '192.0.2.21'
        $err[-1].FullyQualifiedErrorId | Should -Be 'Retroflect.AddressNotFound,Get-ReflectAddress'
        $err[-1].CategoryInfo.Category | Should -Be 'ObjectNotFound'
        Get-ReflectAddress '198.51.*' -Pipe $script:Pipe -ErrorVariable none | Should -BeNullOrEmpty
        $none | Should -BeNullOrEmpty
    }
    It '-ErrorAction Ignore against a stopped engine writes nothing; -ErrorAction Stop throws' {
        $none = New-TestPath 'none.sock'
        $written = Get-ReflectAddress -Pipe $none -ErrorAction Ignore 2>&1
        $written | Should -BeNullOrEmpty
        { Get-ReflectAddress -Pipe $none -ErrorAction Stop } | Should -Throw -ErrorId 'Retroflect.EngineNotRunning*'
    }
    It 'Export-Csv writes the address as text' {
        $csv = New-TestPath 'addresses.csv'
        Get-ReflectAddress -Pipe $script:Pipe | Export-Csv -LiteralPath $csv -NoTypeInformation
        (Import-Csv -LiteralPath $csv).IPAddress | Should -Be @('192.0.2.21', '192.0.2.22', '2001:db8::22')
    }
    It 'an object reads as its address ("$o", Group-Object, -join), not as the class behind it; Get-Member shows Retroflect.ReflectAddress' {
        $list = @(Get-ReflectAddress -Pipe $script:Pipe)
        "$($list[0])" | Should -Be '192.0.2.21'
        ($list -join ',') | Should -Be '192.0.2.21,192.0.2.22,2001:db8::22'
        $groups = $list | Group-Object AddressFamily | Format-Table -AutoSize | Out-String -Width 200
        $groups | Should -Match ([regex]::Escape('{192.0.2.21, 192.0.2.22}'))
        $groups | Should -Not -Match 'Json'
        ($list[0] | Get-Member | Select-Object -First 1).TypeName | Should -Be 'Retroflect.ReflectAddress'
        $list[0].IPAddress -eq '192.0.2.21' | Should -BeTrue
    }
    It 'Sort-Object -Unique and Select-Object -Unique keep every address (they compare objects by their text)' {
        $list = @(Get-ReflectAddress -Pipe $script:Pipe)
        @($list | Sort-Object -Unique).Count | Should -Be 3
        @($list | Select-Object -Unique).Count | Should -Be 3
        @($list + $list | Sort-Object -Unique).Count | Should -Be 3
    }
}
