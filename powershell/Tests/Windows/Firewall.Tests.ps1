# Install-Retroflect -AllowFirewall and Uninstall-Retroflect on Windows: the one inbound Windows Defender Firewall
# rule for reflected connections. The firewall cmdlets are the in-memory TEST STAND-IN in StandIns\NetSecurity (Wine
# has no NetSecurity module); the service (Wine's service manager) and the config file are real.

BeforeAll {
    $env:PSModulePath = (Join-Path $PSScriptRoot 'StandIns') + [IO.Path]::PathSeparator + $env:PSModulePath
    Remove-Module ScheduledTasks, NetSecurity, Retroflect -ErrorAction SilentlyContinue
    Import-Module (Join-Path $PSScriptRoot '..\..\Retroflect\Retroflect.psd1') -Force
    $script:App = Join-Path $env:RETROFLECT_TEST_DIR 'firewall-app'
    $null = New-Item -ItemType Directory -Path $script:App -Force
    Copy-Item -LiteralPath $env:RETROFLECT_TEST_ENGINE_EXE -Destination $script:App -Force
    Copy-Item -Path (Join-Path $env:RETROFLECT_TEST_WINDIVERT_DIR '*') -Destination $script:App -Force
    $script:Exe = Join-Path $script:App 'retroflect.exe'
    $script:Config = 'C:\ProgramData\Retroflect\config.json'
    Remove-Item -LiteralPath $script:Config -Force -ErrorAction SilentlyContinue
    $script:RuleName = 'Retroflect-Reflected-In'
}

AfterAll {
    Uninstall-Retroflect -RemoveConfig -Confirm:$false -ErrorAction SilentlyContinue
    Remove-Module ScheduledTasks, NetSecurity -ErrorAction SilentlyContinue
}

Describe 'Install-Retroflect -AllowFirewall on Windows' {
    It '-WhatIf creates no rule' {
        Install-Retroflect -Path $script:Exe -Address 203.0.113.77 -AllowFirewall -WhatIf
        Get-NetFirewallStandInCall -Command 'New-NetFirewallRule' | Should -BeNullOrEmpty
    }
    It 'creates one inbound allow rule whose remote addresses are exactly the reflect addresses' {
        $null = Install-Retroflect -Path $script:Exe -Address 203.0.113.77 -AllowFirewall -Confirm:$false
        $rule = Get-NetFirewallRule -Name $script:RuleName
        $rule.Direction | Should -Be 'Inbound'
        $rule.Action | Should -Be 'Allow'
        @((Get-NetFirewallAddressFilter -AssociatedNetFirewallRule $rule).RemoteAddress) | Should -Be @('203.0.113.77')
    }
    It 'is idempotent: the same install again creates or changes no rule' {
        $null = Install-Retroflect -Path $script:Exe -Address 203.0.113.77 -AllowFirewall -Confirm:$false
        @(Get-NetFirewallStandInCall -Command 'New-NetFirewallRule').Count | Should -Be 1
        Get-NetFirewallStandInCall -Command 'Set-NetFirewallRule' | Should -BeNullOrEmpty
    }
    It 'a new reflect address is added to the rule' {
        $null = Install-Retroflect -Path $script:Exe -Address 203.0.113.78 -AllowFirewall -Confirm:$false
        $rule = Get-NetFirewallRule -Name $script:RuleName
        @((Get-NetFirewallAddressFilter -AssociatedNetFirewallRule $rule).RemoteAddress | Sort-Object) | Should -Be @('203.0.113.77', '203.0.113.78')
    }
    It 'Uninstall-Retroflect removes the rule, and is idempotent' {
        Uninstall-Retroflect -RemoveConfig -Confirm:$false
        Get-NetFirewallRule -Name $script:RuleName -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        { Uninstall-Retroflect -RemoveConfig -Confirm:$false } | Should -Not -Throw
        @(Get-NetFirewallStandInCall -Command 'Remove-NetFirewallRule').Count | Should -Be 1
    }
}
