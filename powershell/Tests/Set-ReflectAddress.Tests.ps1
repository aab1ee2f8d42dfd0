BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    # A managed policy file (as /etc/retroflect/policy.json would be), named to the engine by RETROFLECT_POLICY.
    $script:Policy = New-TestPath 'set-address-policy.json'
    Set-Content -LiteralPath $script:Policy -Value '{"schemaVersion": 2, "reflectAddresses": [{"address": "203.0.113.77", "portMaps": ["80=8080/tcp"]}]}'
    $env:RETROFLECT_POLICY = $script:Policy
    $script:Config = New-TestPath 'set-address-config.json'
    $script:Pipe = Start-TestEngine -Address '203.0.113.9' -ConfigPath $script:Config
    function Get-Mine {
        # The addresses policy does not set, as 'address maps' text, sorted.
        Get-ReflectAddress -Pipe $script:Pipe | Where-Object Source -ne 'Policy' | ForEach-Object {
            ('{0} {1}' -f $_.IPAddress, (@($_.PortMap | ForEach-Object { $_.ToString() }) -join ',')).Trim()
        } | Sort-Object
    }
    function Get-Saved {
        $c = Get-Content -Raw -LiteralPath $script:Config | ConvertFrom-Json
        @($c.reflectAddresses | ForEach-Object { if ($_ -is [string]) { $_ } else { ('{0} {1}' -f $_.address, ($_.portMaps -join ',')) } }) | Sort-Object
    }
}
AfterAll {
    Stop-TestEngine $script:Pipe
    Remove-Item Env:\RETROFLECT_POLICY -ErrorAction SilentlyContinue
}

Describe 'Set-ReflectAddress' {
    It 'Get-ReflectAddress shows each address with its Source: Policy, Temporary' {
        $all = Get-ReflectAddress -Pipe $script:Pipe
        ($all | Where-Object { $_.IPAddress.ToString() -eq '203.0.113.77' }).Source | Should -Be 'Policy'
        ($all | Where-Object { $_.IPAddress.ToString() -eq '203.0.113.9' }).Source | Should -Be 'Temporary'
        ((Get-ReflectAddress '203.0.113.77' -Pipe $script:Pipe | Format-Table | Out-String) -split "`n")[1] | Should -Match 'Source'
    }
    It 'Remove-ReflectAddress of a policy address is one Retroflect.ManagedByPolicy error and changes nothing' {
        $err = $null
        try { Remove-ReflectAddress '203.0.113.77' -Pipe $script:Pipe -Confirm:$false -ErrorAction Stop } catch { $err = $_ }
        $err.FullyQualifiedErrorId | Should -BeLike 'Retroflect.ManagedByPolicy*'
        $err.CategoryInfo.Category | Should -Be 'PermissionDenied'
        $err.Exception.Data['RetroflectCode'] | Should -Be 'E_MANAGED_BY_POLICY'
        (Get-ReflectAddress '203.0.113.77' -Pipe $script:Pipe).Source | Should -Be 'Policy'
    }
    It 'reaches exactly the wanted list from a temporary entry, returns the changes, and a second run changes nothing' {
        $changes = Set-ReflectAddress '203.0.113.1', '203.0.113.2' -PortMap '80=8080/tcp' -Pipe $script:Pipe -Confirm:$false
        ($changes | Where-Object Action -eq 'Added').Target | Sort-Object | Should -Be @('203.0.113.1', '203.0.113.2')
        ($changes | Where-Object Action -eq 'Removed').Target | Should -Be '203.0.113.9'
        @($changes | Where-Object Action -eq 'Mapped').Count | Should -Be 2
        $changes[0].PSObject.TypeNames[0] | Should -Be 'Retroflect.Change'
        Get-Mine | Should -Be @('203.0.113.1 80=8080/tcp', '203.0.113.2 80=8080/tcp')
        Get-Saved | Should -Be @('203.0.113.1 80=8080/tcp', '203.0.113.2 80=8080/tcp')
        (Get-ReflectAddress '203.0.113.77' -Pipe $script:Pipe).Source | Should -Be 'Policy'
        Set-ReflectAddress '203.0.113.1', '203.0.113.2' -PortMap '80=8080/tcp' -Pipe $script:Pipe -Confirm:$false | Should -BeNullOrEmpty
    }
    It 'reaches exactly the wanted list from extra, temporary and re-mapped entries' {
        Add-ReflectAddress '203.0.113.3' -Pipe $script:Pipe -Confirm:$false
        Add-ReflectAddress '203.0.113.4' -Temporary -Pipe $script:Pipe -Confirm:$false
        Remove-ReflectAddress '203.0.113.2' -Temporary -Pipe $script:Pipe -Confirm:$false
        $changes = Set-ReflectAddress '203.0.113.2', '203.0.113.4' -Pipe $script:Pipe -Confirm:$false
        ($changes | Where-Object Action -eq 'Added').Target | Sort-Object | Should -Be @('203.0.113.2', '203.0.113.4')
        ($changes | Where-Object Action -eq 'Removed').Target | Sort-Object | Should -Be @('203.0.113.1', '203.0.113.3')
        ($changes | Where-Object Action -eq 'Unmapped').Target | Sort-Object | Should -Be @('203.0.113.1 80=8080/tcp', '203.0.113.2 80=8080/tcp')
        Get-Mine | Should -Be @('203.0.113.2', '203.0.113.4')
        Get-Saved | Should -Be @('203.0.113.2', '203.0.113.4')
    }
    It 'Import-Csv | Set-ReflectAddress keeps each row''s PortMap column' {
        $csv = New-TestPath 'wanted.csv'
        Set-Content -LiteralPath $csv -Value @('IPAddress,PortMap', '203.0.113.5,80=8080;443=8443/tcp', '203.0.113.6,')
        Import-Csv $csv | Set-ReflectAddress -Pipe $script:Pipe -Confirm:$false | Out-Null
        Get-Mine | Should -Be @('203.0.113.5 80=8080/tcp,80=8080/udp,443=8443/tcp', '203.0.113.6')
    }
    It '-WhatIf changes nothing and returns nothing; an empty pipeline changes nothing; -Address @() keeps only policy' {
        $before = Get-Mine
        Set-ReflectAddress '203.0.113.8' -Pipe $script:Pipe -WhatIf | Should -BeNullOrEmpty
        Get-Mine | Should -Be $before
        @() | Set-ReflectAddress -Pipe $script:Pipe -Confirm:$false -WarningAction SilentlyContinue -WarningVariable w | Should -BeNullOrEmpty
        $w | Should -Not -BeNullOrEmpty
        Get-Mine | Should -Be $before
        Set-ReflectAddress -Address @() -Pipe $script:Pipe -Confirm:$false | Out-Null
        Get-Mine | Should -BeNullOrEmpty
        (Get-ReflectAddress -Pipe $script:Pipe).IPAddress.ToString() | Should -Be '203.0.113.77'
    }
    It '-WhatIf shows every addition and removal, as a script run prints it' {
        Add-ReflectAddress '203.0.113.10' -Pipe $script:Pipe -Confirm:$false
        $r = Invoke-TestScript -Text @"
Import-Module '$($script:ModuleManifest)'
Set-ReflectAddress '203.0.113.11' -Pipe '$($script:Pipe)' -WhatIf
"@
        $r.ExitCode | Should -Be 0
        $r.Output | Should -Match 'What if: .*Added.*203\.0\.113\.11'
        $r.Output | Should -Match 'What if: .*Removed.*203\.0\.113\.10'
        Get-Mine | Should -Be @('203.0.113.10')
    }
}
