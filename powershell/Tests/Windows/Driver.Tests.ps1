# Test-Retroflect on Windows, under Wine with the WinDivert TEST DOUBLE: its Windows checks as Retroflect.Check
# objects, another WinDivert user at our priority, and a stale `WinDivert` driver service entry reported and repaired
# with -Repair. (`retroflect driver release`, what Uninstall-Retroflect runs, is tested in
# test/doctor/doctor-wine.test.ts.) The service entry is made with sc.exe (Wine keeps it in its registry; no kernel
# driver runs). "Another program" is a Windows node.exe holding a WinDivert handle (test/doctor/fixtures/
# hold-windivert-handle.ts, bundled: RETROFLECT_TEST_NODE_EXE, RETROFLECT_TEST_HOLDER): the double's REFLECT layer
# shares open handles between processes through WINDIVERT_DOUBLE_DRIVER_DIR.

BeforeAll {
    $env:PSModulePath = (Join-Path $PSScriptRoot 'StandIns') + [IO.Path]::PathSeparator + $env:PSModulePath
    Remove-Module ScheduledTasks, NetSecurity, Retroflect -ErrorAction SilentlyContinue
    Import-Module (Join-Path $PSScriptRoot '..\..\Retroflect\Retroflect.psd1') -Force
    # The double's packet files belong to other files' engines: put back in AfterAll what is taken away here.
    $script:SavedInject = $env:WINDIVERT_DOUBLE_INJECT_FILE
    $script:SavedSent = $env:WINDIVERT_DOUBLE_SENT_FILE
    Remove-Item Env:WINDIVERT_DOUBLE_INJECT_FILE, Env:WINDIVERT_DOUBLE_SENT_FILE -ErrorAction SilentlyContinue
    # An engine folder as a release has it.
    $script:App = Join-Path $env:RETROFLECT_TEST_DIR 'driver-app'
    $null = New-Item -ItemType Directory -Path $script:App -Force
    Copy-Item -LiteralPath $env:RETROFLECT_TEST_ENGINE_EXE -Destination $script:App -Force
    Copy-Item -Path (Join-Path $env:RETROFLECT_TEST_WINDIVERT_DIR '*') -Destination $script:App -Force
    $script:Exe = Join-Path $script:App 'retroflect.exe'
    $env:WINDIVERT_DOUBLE_DRIVER_DIR = Join-Path $env:RETROFLECT_TEST_DIR 'driver-handles'
    $null = New-Item -ItemType Directory -Path $env:WINDIVERT_DOUBLE_DRIVER_DIR -Force
    function Start-OtherWinDivertUser {
        # Returns the file whose removal makes the holder close its handle and exit.
        param([int]$Priority, [string]$Filter)
        $control = Join-Path $env:RETROFLECT_TEST_DIR ('holder-' + [guid]::NewGuid().ToString('N').Substring(0, 6))
        Set-Content -LiteralPath $control -Value ''
        $dll = Join-Path $script:App 'WinDivert.dll'
        $argv = @($env:RETROFLECT_TEST_HOLDER, $dll, [string]$Priority, ('"' + $Filter + '"'), $control)
        $null = Start-Process -FilePath $env:RETROFLECT_TEST_NODE_EXE -ArgumentList $argv -WindowStyle Hidden -PassThru
        for ($i = 0; $i -lt 600 -and -not (Test-Path -LiteralPath ($control + '.ready')); $i++) {
            Start-Sleep -Milliseconds 100
        }
        Test-Path -LiteralPath ($control + '.ready') | Should -BeTrue
        return $control
    }
    # sc.exe by its full path: the Wine pwsh's PATH does not hold System32.
    $script:Sc = Join-Path $env:SystemRoot 'System32\sc.exe'
    function Test-DriverService { $null = & $script:Sc query WinDivert; return ($LASTEXITCODE -eq 0) }
    $null = & $script:Sc delete WinDivert
}

AfterAll {
    $null = & $script:Sc delete WinDivert
    if ($script:SavedInject) { $env:WINDIVERT_DOUBLE_INJECT_FILE = $script:SavedInject }
    if ($script:SavedSent) { $env:WINDIVERT_DOUBLE_SENT_FILE = $script:SavedSent }
    Remove-Item Env:WINDIVERT_DOUBLE_DRIVER_DIR -ErrorAction SilentlyContinue
    Remove-Module ScheduledTasks, NetSecurity -ErrorAction SilentlyContinue
}

Describe 'Test-Retroflect on Windows' {
    It 'returns Retroflect.Check objects for the Windows checks' {
        $checks = Test-Retroflect -Path $script:Exe -Pipe 'rft-driver-none'
        $names = $checks | ForEach-Object Name
        $expected = @('privileges', 'windows.windivert-files', 'windows.driver-service', 'windows.windivert-users',
            'windows.bfe', 'windows.firewall', 'engine')
        foreach ($n in $expected) {
            $names | Should -Contain $n
        }
        $checks[0].PSTypeNames | Should -Contain 'Retroflect.Check'
        ($checks | Where-Object Name -eq 'engine').Status | Should -Be 'Warning'
    }
    It 'reports another WinDivert user at our priority, with its process and filter' {
        $holder = Start-OtherWinDivertUser -Priority 1000 -Filter 'tcp.DstPort == 8080'
        try {
            $checks = Test-Retroflect -Path $script:Exe -Pipe 'rft-driver-none'
            $users = $checks | Where-Object Name -eq 'windows.windivert-users'
            $users.Status | Should -Be 'Warning'
            $users.Detail | Should -Match 'priority 1000, filter "tcp\.DstPort == 8080"\) uses our priority 1000'
            @($users.Evidence.handles).Count | Should -Be 1
        }
        finally {
            Remove-Item -LiteralPath $holder
        }
    }
    It 'reports a stale driver entry as Fail and removes it with -Repair' {
        $gone = Join-Path $env:RETROFLECT_TEST_DIR 'gone\WinDivert64.sys'
        $null = & $script:Sc create WinDivert type= kernel binPath= $gone
        $check = Test-Retroflect -Path $script:Exe -Pipe 'rft-driver-none' |
            Where-Object Name -eq 'windows.driver-service'
        $check.Status | Should -Be 'Fail'
        $check.Detail | Should -Match 'stale'
        $check.Fix | Should -Match 'Test-Retroflect -Repair'
        $repaired = Test-Retroflect -Path $script:Exe -Pipe 'rft-driver-none' -Repair |
            Where-Object Name -eq 'windows.driver-service'
        $repaired.Status | Should -Be 'Pass'
        Test-DriverService | Should -BeFalse
    }
}
