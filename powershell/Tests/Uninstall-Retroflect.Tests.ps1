BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    Add-WindowsCmdletStub
    $script:Root = New-TestPath 'uninstall-root'
}

Describe 'Uninstall-Retroflect on Linux, under a test root' {
    It 'leaves nothing behind with -RemoveConfig, and is idempotent' {
        Install-Retroflect -Root $script:Root -Path $script:Exe -Address 192.0.2.5 -Confirm:$false | Out-Null
        Uninstall-Retroflect -Root $script:Root -RemoveConfig -Confirm:$false
        Test-Path (Join-Path $script:Root 'etc/systemd/system/retroflect.service') | Should -BeFalse
        Test-Path (Join-Path $script:Root 'etc/retroflect') | Should -BeFalse
        { Uninstall-Retroflect -Root $script:Root -RemoveConfig -Confirm:$false } | Should -Not -Throw
    }
    It 'runs unattended under pwsh -NonInteractive in its documented form, without prompting' {
        Install-Retroflect -Root $script:Root -Path $script:Exe -Address 192.0.2.5 -Confirm:$false | Out-Null
        $r = Invoke-TestScript -Text ("Import-Module `$env:RETROFLECT_TEST_MODULE; `$ErrorActionPreference = 'Stop'; Uninstall-Retroflect -Root '{0}'" -f $script:Root)
        $r.ExitCode | Should -Be 0 -Because $r.Output
        Test-Path (Join-Path $script:Root 'etc/systemd/system/retroflect.service') | Should -BeFalse
        Test-Path (Join-Path $script:Root 'etc/retroflect/config.json') | Should -BeTrue   # kept without -RemoveConfig
    }
}

Describe 'Uninstall-Retroflect on Windows (platform, service and NetSecurity cmdlets mocked)' {
    BeforeEach {
        Mock -ModuleName Retroflect Test-RetroflectWindows { $true }
        Mock -ModuleName Retroflect Test-RetroflectElevated { $true }
        Mock -ModuleName Retroflect Stop-Retroflect { $null }
        Mock -ModuleName Retroflect Get-RetroflectService {
            [pscustomobject]@{ Name = 'Retroflect'; Status = 'Stopped' }
        }
        Mock -ModuleName Retroflect Invoke-RetroflectSc { $null }
        Mock -ModuleName Retroflect Remove-RetroflectBootTask { $false }
        Mock -ModuleName Retroflect Remove-NetFirewallRule { $null }
    }
    It 'deletes the service and removes the firewall rule of -AllowFirewall' {
        Mock -ModuleName Retroflect Get-NetFirewallRule { [pscustomobject]@{ Name = 'Retroflect-Reflected-In' } }
        Uninstall-Retroflect -Confirm:$false
        Should -Invoke -ModuleName Retroflect Invoke-RetroflectSc -Times 1 -Exactly -ParameterFilter {
            ($ArgumentList -join ' ') -eq 'delete Retroflect'
        }
        Should -Invoke -ModuleName Retroflect Remove-NetFirewallRule -Times 1 -Exactly -ParameterFilter { $Name -eq 'Retroflect-Reflected-In' }
    }
    It 'is idempotent when there is no rule' {
        Mock -ModuleName Retroflect Get-NetFirewallRule { $null }
        Uninstall-Retroflect -Confirm:$false
        Should -Invoke -ModuleName Retroflect Remove-NetFirewallRule -Times 0 -Exactly
    }
    It '-WhatIf removes nothing' {
        Mock -ModuleName Retroflect Get-NetFirewallRule { [pscustomobject]@{ Name = 'Retroflect-Reflected-In' } }
        Uninstall-Retroflect -WhatIf
        Should -Invoke -ModuleName Retroflect Remove-NetFirewallRule -Times 0 -Exactly
        Should -Invoke -ModuleName Retroflect Invoke-RetroflectSc -Times 0 -Exactly
    }
    It '-Root is refused on Windows' {
        { Uninstall-Retroflect -Root (New-TestPath 'r') -Confirm:$false } | Should -Throw -ErrorId 'Retroflect.InvalidParams*'
    }
}
