BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $script:Policy = New-TestPath 'set-shield-policy.json'
    Set-Content -LiteralPath $script:Policy -Value '{"schemaVersion": 1, "shieldPorts": [{"port": 9100, "protocol": "tcp"}]}'
    $env:RETROFLECT_POLICY = $script:Policy
    $script:Config = New-TestPath 'set-shield-config.json'
    $script:Pipe = Start-TestEngine -ShieldPort '7000/udp' -ConfigPath $script:Config
    function Get-Mine { Get-ShieldPort -Pipe $script:Pipe | Where-Object Source -ne 'Policy' | ForEach-Object { '{0}/{1}' -f $_.Port, $_.Protocol } | Sort-Object }
    function Get-Saved { @((Get-Content -Raw -LiteralPath $script:Config | ConvertFrom-Json).shieldPorts | ForEach-Object { '{0}/{1}' -f $_.port, $_.protocol }) | Sort-Object }
}
AfterAll {
    Stop-TestEngine $script:Pipe
    Remove-Item Env:\RETROFLECT_POLICY -ErrorAction SilentlyContinue
}

Describe 'Set-ShieldPort' {
    It 'Get-ShieldPort shows Source Policy and Temporary; removing the policy port is Retroflect.ManagedByPolicy' {
        (Get-ShieldPort -Port 9100 -Pipe $script:Pipe).Source | Should -Be 'Policy'
        (Get-ShieldPort -Port 7000 -Pipe $script:Pipe).Source | Should -Be 'Temporary'
        $err = $null
        try { Remove-ShieldPort 9100 -Protocol tcp -Pipe $script:Pipe -Confirm:$false -ErrorAction Stop } catch { $err = $_ }
        $err.FullyQualifiedErrorId | Should -BeLike 'Retroflect.ManagedByPolicy*'
        (Get-ShieldPort -Port 9100 -Pipe $script:Pipe).Source | Should -Be 'Policy'
    }
    It 'reaches exactly the wanted ports from several starting states; a second run changes nothing' {
        $changes = Set-ShieldPort 8080, '53/udp' -Pipe $script:Pipe -Confirm:$false
        ($changes | Where-Object Action -eq 'Added').Target | Sort-Object | Should -Be @('53/udp', '8080/tcp', '8080/udp')
        ($changes | Where-Object Action -eq 'Removed').Target | Should -Be '7000/udp'
        Get-Mine | Should -Be @('53/udp', '8080/tcp', '8080/udp')
        Get-Saved | Should -Be @('53/udp', '8080/tcp', '8080/udp')
        Set-ShieldPort 8080, '53/udp' -Pipe $script:Pipe -Confirm:$false | Should -BeNullOrEmpty

        Add-ShieldPort 6000 -Protocol tcp -Pipe $script:Pipe -Confirm:$false
        Add-ShieldPort 6001 -Protocol tcp -Temporary -Pipe $script:Pipe -Confirm:$false
        Remove-ShieldPort 53 -Protocol udp -Temporary -Pipe $script:Pipe -Confirm:$false
        Set-ShieldPort 8080 -Protocol tcp -Pipe $script:Pipe -Confirm:$false | Out-Null
        Get-Mine | Should -Be @('8080/tcp')
        Get-Saved | Should -Be @('8080/tcp')
        (Get-ShieldPort -Port 9100 -Pipe $script:Pipe).Source | Should -Be 'Policy'
    }
    It 'Get-ShieldPort output pipes back in; -WhatIf changes nothing; -Port @() keeps only policy' {
        Get-ShieldPort -Pipe $script:Pipe | Set-ShieldPort -Pipe $script:Pipe -Confirm:$false | Should -BeNullOrEmpty
        Set-ShieldPort 9999 -Pipe $script:Pipe -WhatIf | Should -BeNullOrEmpty
        Get-Mine | Should -Be @('8080/tcp')
        (Set-ShieldPort -Port @() -Pipe $script:Pipe -Confirm:$false).Target | Should -Be '8080/tcp'
        Get-Mine | Should -BeNullOrEmpty
        (Get-ShieldPort -Pipe $script:Pipe | ForEach-Object { '{0}/{1}' -f $_.Port, $_.Protocol }) | Should -Be '9100/tcp'
    }
}
