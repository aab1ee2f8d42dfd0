# The WinDivert driver service on Windows, under Wine with the WinDivert TEST DOUBLE: Uninstall-Retroflect removes
# the `WinDivert` service entry only when no program holds a WinDivert handle, and Test-Retroflect reports a stale
# entry and repairs it with -Repair. The service entry is made with sc.exe (Wine keeps it in its registry; no kernel
# driver runs). "Another program" is a second engine on its own pipe: its WinDivert handle is seen through the
# double's REFLECT layer, which shares open handles between processes through WINDIVERT_DOUBLE_DRIVER_DIR.

BeforeAll {
    $env:PSModulePath = (Join-Path $PSScriptRoot 'StandIns') + [IO.Path]::PathSeparator + $env:PSModulePath
    Remove-Module ScheduledTasks, NetSecurity, Retroflect -ErrorAction SilentlyContinue
    Import-Module (Join-Path $PSScriptRoot '..\..\Retroflect\Retroflect.psd1') -Force
    Remove-Item Env:WINDIVERT_DOUBLE_INJECT_FILE, Env:WINDIVERT_DOUBLE_SENT_FILE -ErrorAction SilentlyContinue
    # An engine folder as a release has it, found on PATH as an installed engine is.
    $script:App = Join-Path $env:RETROFLECT_TEST_DIR 'driver-app'
    $null = New-Item -ItemType Directory -Path $script:App -Force
    Copy-Item -LiteralPath $env:RETROFLECT_TEST_ENGINE_EXE -Destination $script:App -Force
    Copy-Item -Path (Join-Path $env:RETROFLECT_TEST_WINDIVERT_DIR '*') -Destination $script:App -Force
    $script:Exe = Join-Path $script:App 'retroflect.exe'
    $env:PATH = $script:App + [IO.Path]::PathSeparator + $env:PATH
    $env:WINDIVERT_DOUBLE_DRIVER_DIR = Join-Path $env:RETROFLECT_TEST_DIR 'driver-handles'
    $null = New-Item -ItemType Directory -Path $env:WINDIVERT_DOUBLE_DRIVER_DIR -Force
    $script:OtherPipe = 'rft-driver-other'
    function Test-DriverService { $null = & sc.exe query WinDivert; return ($LASTEXITCODE -eq 0) }
    $null = & sc.exe delete WinDivert
}

AfterAll {
    Stop-Retroflect -Pipe $script:OtherPipe -Confirm:$false -ErrorAction SilentlyContinue
    $null = & sc.exe delete WinDivert
    Remove-Item Env:WINDIVERT_DOUBLE_DRIVER_DIR -ErrorAction SilentlyContinue
    Remove-Module ScheduledTasks, NetSecurity -ErrorAction SilentlyContinue
}

Describe 'Uninstall-Retroflect and the WinDivert driver service' {
    It 'leaves our driver service alone while another program holds a WinDivert handle, and removes it after' {
        $null = & sc.exe create WinDivert type= kernel binPath= (Join-Path $script:App 'WinDivert64.sys')
        Test-DriverService | Should -BeTrue
        Start-Retroflect -Path $script:Exe -Pipe $script:OtherPipe -NoConfig -Address 203.0.113.78 -TimeoutSeconds 120 -Confirm:$false
        Uninstall-Retroflect -Confirm:$false -Verbose 4>&1 | Out-String | Should -Match 'Left the WinDivert driver service alone: 1 WinDivert handle'
        Test-DriverService | Should -BeTrue
        Stop-Retroflect -Pipe $script:OtherPipe -Confirm:$false
        Uninstall-Retroflect -Confirm:$false -Verbose 4>&1 | Out-String | Should -Match 'Removed the WinDivert driver service entry'
        Test-DriverService | Should -BeFalse
    }
}

Describe 'Test-Retroflect on Windows' {
    It 'returns Retroflect.Check objects for the Windows checks' {
        $checks = Test-Retroflect -Pipe 'rft-driver-none'
        $names = $checks | ForEach-Object Name
        foreach ($n in 'privileges', 'windows.windivert-files', 'windows.driver-service', 'windows.windivert-users', 'windows.bfe', 'windows.firewall', 'engine') {
            $names | Should -Contain $n
        }
        $checks[0].PSTypeNames | Should -Contain 'Retroflect.Check'
        ($checks | Where-Object Name -eq 'engine').Status | Should -Be 'Warning'
    }
    It 'reports a stale driver entry as Fail and removes it with -Repair' {
        $null = & sc.exe create WinDivert type= kernel binPath= (Join-Path $env:RETROFLECT_TEST_DIR 'gone\WinDivert64.sys')
        $check = Test-Retroflect -Pipe 'rft-driver-none' | Where-Object Name -eq 'windows.driver-service'
        $check.Status | Should -Be 'Fail'
        $check.Detail | Should -Match 'stale'
        $check.Fix | Should -Match 'Test-Retroflect -Repair'
        $repaired = Test-Retroflect -Pipe 'rft-driver-none' -Repair | Where-Object Name -eq 'windows.driver-service'
        $repaired.Status | Should -Be 'Pass'
        Test-DriverService | Should -BeFalse
    }
}
