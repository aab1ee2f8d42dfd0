BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    Add-WindowsCmdletStub
    $script:Work = New-TestPath 'install'
    $null = New-Item -ItemType Directory -Path $script:Work
    Push-Location $script:Work
}
AfterAll { Pop-Location }

Describe 'Install-Retroflect on Linux, under a test root' {
    BeforeAll { $script:Root = Join-Path $script:Work 'root' }
    It 'writes the unit and config, idempotently' {
        $i = Install-Retroflect -Root $script:Root -Path $script:Exe -Address 192.0.2.5 -ShieldPort 8080 -Confirm:$false
        $i.PSTypeNames | Should -Contain 'Retroflect.Installation'
        $i.Changed | Should -BeTrue
        $unit = Join-Path $script:Root 'etc/systemd/system/retroflect.service'
        Get-Content $unit -Raw | Should -Match ('ExecStart=' + [regex]::Escape($script:Exe) + ' run --config /etc/retroflect/config.json')
        $cfg = Get-Content (Join-Path $script:Root 'etc/retroflect/config.json') -Raw | ConvertFrom-Json
        $cfg.schemaVersion | Should -Be 1
        $cfg.reflectAddresses | Should -Contain '192.0.2.5'
        @($cfg.shieldPorts).Count | Should -Be 2
        (Install-Retroflect -Root $script:Root -Path $script:Exe -Address 192.0.2.5 -ShieldPort 8080 -Confirm:$false).Changed | Should -BeFalse
    }
    It 'the table shows Changed at 80 columns, however long the unit path' {
        $i = Install-Retroflect -Root $script:Root -Path $script:Exe -Address 192.0.2.5 -Confirm:$false
        $lines = @(($i | Format-Table | Out-String -Width 80) -split "`r?`n" | Where-Object { $_.Trim() })
        $lines[0] | Should -Match '^Kind +Changed +Name'
        $lines[2] | Should -Match '^SystemdUnit +False '
    }
    It 'resolves relative -Root, -Path and -ConfigPath against the current location' {
        Copy-Item -LiteralPath $script:Exe -Destination (Join-Path $script:Work 'retroflect-copy')
        $i = Install-Retroflect -Root ./rel -Path ./retroflect-copy -ConfigPath ./conf/config.json -Address 192.0.2.6 -Confirm:$false
        $configPath = Join-Path $script:Work 'conf/config.json'
        $i.ConfigPath | Should -Be $configPath
        Test-Path -LiteralPath (Join-Path (Join-Path $script:Work 'rel') $configPath.TrimStart('/')) | Should -BeTrue
        $unit = Get-Content (Join-Path $script:Work 'rel/etc/systemd/system/retroflect.service') -Raw
        $unit | Should -Match ([regex]::Escape("ExecStart=$(Join-Path $script:Work 'retroflect-copy') run --config $configPath"))
    }
    It 'refuses a bad address before writing anything' {
        $root = Join-Path $script:Work 'bad'
        { Install-Retroflect -Root $root -Path $script:Exe -Address 'not-an-ip', '192.0.2.7' -Confirm:$false } | Should -Throw -ErrorId 'Retroflect.InvalidAddress*'
        Test-Path -LiteralPath $root | Should -BeFalse
    }
    It 'on the real system, checks addresses with the engine''s own rules before writing anything (writes mocked to fail)' {
        Mock -ModuleName Retroflect Update-RetroflectConfigFile { throw 'must not be reached' }
        Mock -ModuleName Retroflect New-RetroflectUnitText { throw 'must not be reached' }
        Mock -ModuleName Retroflect Invoke-RetroflectSystemctl { throw 'must not be reached' }
        $err = $null
        try { Install-Retroflect -Path $script:Exe -ConfigPath (Join-Path $script:Work 'real.json') -Address 127.0.0.1 -Confirm:$false } catch { $err = $_ }
        $err.FullyQualifiedErrorId | Should -BeLike 'Retroflect.InvalidAddress*'
        $err.Exception.Message | Should -Match '127\.0\.0\.1'
        Should -Invoke -ModuleName Retroflect Update-RetroflectConfigFile -Times 0 -Exactly
    }
    It 'refuses a bad shield port before writing anything' {
        $root = Join-Path $script:Work 'badport'
        { Install-Retroflect -Root $root -Path $script:Exe -ShieldPort '8080/sctp' -Confirm:$false } | Should -Throw -ErrorId 'Retroflect.InvalidPort*'
        Test-Path -LiteralPath $root | Should -BeFalse
    }
    It '-WhatIf writes nothing and outputs nothing' {
        $root = Join-Path $script:Work 'whatif'
        Install-Retroflect -Root $root -Path $script:Exe -Address 192.0.2.8 -WhatIf | Should -BeNullOrEmpty
        Test-Path -LiteralPath $root | Should -BeFalse
    }
    It '-AllowFirewall on Linux warns that it applies to Windows only' {
        Install-Retroflect -Root $script:Root -Path $script:Exe -AllowFirewall -Confirm:$false -WarningVariable warn -WarningAction SilentlyContinue | Out-Null
        "$warn" | Should -Match 'Windows'
    }
}

Describe 'Install-Retroflect on Windows (platform, service and NetSecurity cmdlets mocked)' {
    BeforeAll {
        $script:WinConfig = Join-Path $script:Work 'win-config.json'
    }
    BeforeEach {
        Mock -ModuleName Retroflect Test-RetroflectWindows { $true }
        Mock -ModuleName Retroflect Test-RetroflectElevated { $true }
        Mock -ModuleName Retroflect Resolve-RetroflectExecutable { 'C:\Program Files\Retroflect\retroflect.exe' }
        Mock -ModuleName Retroflect Test-RetroflectInstallAddress { $null }
        Mock -ModuleName Retroflect Remove-RetroflectBootTask { $false }
        Mock -ModuleName Retroflect Get-RetroflectService { $null }
        Mock -ModuleName Retroflect New-Service { [pscustomobject]@{ Name = 'Retroflect' } }
        Mock -ModuleName Retroflect Invoke-RetroflectSc { $null }
        Mock -ModuleName Retroflect Register-RetroflectEventSource { $false }
        Mock -ModuleName Retroflect New-NetFirewallRule { [pscustomobject]@{ Name = $Name } }
        Mock -ModuleName Retroflect Set-NetFirewallRule { $null }
    }
    It '-AllowFirewall creates one inbound allow rule limited to the reflect addresses' {
        Mock -ModuleName Retroflect Get-NetFirewallRule { $null }
        Install-Retroflect -ConfigPath $script:WinConfig -Address '192.0.2.1', '2001:DB8::1' -AllowFirewall -Confirm:$false | Out-Null
        Should -Invoke -ModuleName Retroflect New-NetFirewallRule -Times 1 -Exactly -ParameterFilter {
            $Name -eq 'Retroflect-Reflected-In' -and $Direction -eq 'Inbound' -and $Action -eq 'Allow' -and
            (($RemoteAddress | Sort-Object) -join ',') -eq '192.0.2.1,2001:db8::1'
        }
        Should -Invoke -ModuleName Retroflect New-Service -Times 1 -Exactly -ParameterFilter {
            $Name -eq 'Retroflect' -and $StartupType -eq 'Automatic' -and @($DependsOn) -join ',' -eq 'BFE' -and
            $BinaryPathName -eq ('"C:\Program Files\Retroflect\retroflect.exe" run --service --config ' +
                $script:WinConfig)
        }
    }
    It 'is idempotent: the same addresses change nothing; a new one updates the rule''s remote addresses' {
        Mock -ModuleName Retroflect Get-NetFirewallRule { [pscustomobject]@{ Name = 'Retroflect-Reflected-In' } }
        Mock -ModuleName Retroflect Get-NetFirewallAddressFilter { [pscustomobject]@{ RemoteAddress = @('192.0.2.1', '2001:db8::1') } }
        Install-Retroflect -ConfigPath $script:WinConfig -AllowFirewall -Confirm:$false | Out-Null
        Should -Invoke -ModuleName Retroflect New-NetFirewallRule -Times 0 -Exactly
        Should -Invoke -ModuleName Retroflect Set-NetFirewallRule -Times 0 -Exactly
        Install-Retroflect -ConfigPath $script:WinConfig -Address 192.0.2.2 -AllowFirewall -Confirm:$false | Out-Null
        Should -Invoke -ModuleName Retroflect Set-NetFirewallRule -Times 1 -Exactly -ParameterFilter {
            (($RemoteAddress | Sort-Object) -join ',') -eq '192.0.2.1,192.0.2.2,2001:db8::1'
        }
    }
    It 'without -AllowFirewall, no firewall rule is touched' {
        Mock -ModuleName Retroflect Get-NetFirewallRule { $null }
        Install-Retroflect -ConfigPath $script:WinConfig -Confirm:$false | Out-Null
        Should -Invoke -ModuleName Retroflect New-NetFirewallRule -Times 0 -Exactly
    }
    It '-WhatIf creates no rule' {
        Mock -ModuleName Retroflect Get-NetFirewallRule { $null }
        Install-Retroflect -ConfigPath $script:WinConfig -AllowFirewall -WhatIf | Should -BeNullOrEmpty
        Should -Invoke -ModuleName Retroflect New-NetFirewallRule -Times 0 -Exactly
        Should -Invoke -ModuleName Retroflect New-Service -Times 0 -Exactly
    }
    It '-Root is refused on Windows instead of redirecting only part of the installation' {
        { Install-Retroflect -Root (Join-Path $script:Work 'winroot') -ConfigPath $script:WinConfig -Confirm:$false } | Should -Throw -ErrorId 'Retroflect.InvalidParams*'
        Should -Invoke -ModuleName Retroflect New-Service -Times 0 -Exactly
        Test-Path -LiteralPath (Join-Path $script:Work 'winroot') | Should -BeFalse
    }
}
