# Test-Retroflect on Windows, under Wine with the WinDivert TEST DOUBLE: its Windows checks as Retroflect.Check
# objects, another WinDivert user at our priority, and a stale `WinDivert` driver service entry reported and repaired
# with -Repair; and Uninstall-Retroflect, which leaves the driver service entry alone while another program holds a
# WinDivert handle and removes our entry once none does (issue 22; `retroflect driver release` on its own is tested
# in test/doctor/doctor-wine.test.ts). Service entries are made with sc.exe (Wine keeps them in its registry; no
# kernel driver runs). "Another program" is a Windows node.exe holding a WinDivert handle (test/doctor/fixtures/
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
    function Test-RetroflectServiceEntry { $null = & $script:Sc query Retroflect; return ($LASTEXITCODE -eq 0) }
    function Wait-NoOtherWinDivertUser {
        # A released holder closes its handle within about 100 ms; the REFLECT layer then no longer lists it.
        $deadline = [DateTime]::UtcNow.AddSeconds(30)
        do {
            $users = Test-Retroflect -Path $script:Exe -Pipe 'rft-driver-none' |
                Where-Object Name -eq 'windows.windivert-users'
            if ($users.Status -eq 'Pass') { return }
            Start-Sleep -Milliseconds 250
        } while ([DateTime]::UtcNow -lt $deadline)
        $users.Status | Should -Be 'Pass' -Because 'the holders closed their handles'
    }
    $null = & $script:Sc delete WinDivert
}

AfterAll {
    $null = & $script:Sc delete WinDivert
    $null = & $script:Sc delete Retroflect
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
            $users.Detail | Should -Match 'with overlapping filters, the handle opened later normally sees a packet'
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

Describe 'Uninstall-Retroflect and the WinDivert driver service entry (issue 22)' {
    BeforeEach {
        # As an installed engine leaves them (never started here): the Retroflect service, whose ImagePath tells
        # Uninstall-Retroflect which engine folder is ours, and WinDivert's entry naming our WinDivert64.sys.
        $null = & $script:Sc create Retroflect binPath= ('"' + $script:Exe + '" run --service')
        $null = & $script:Sc create WinDivert type= kernel binPath= (Join-Path $script:App 'WinDivert64.sys')
        Test-RetroflectServiceEntry | Should -BeTrue
        Test-DriverService | Should -BeTrue
    }
    AfterEach {
        $null = & $script:Sc delete Retroflect
        $null = & $script:Sc delete WinDivert
    }

    It 'leaves the driver service in place while another program holds a WinDivert handle' {
        $holder = Start-OtherWinDivertUser -Priority 0 -Filter 'udp.DstPort == 5353'
        try {
            $holderPid = (Get-Content -LiteralPath ($holder + '.ready') -Raw).Trim()
            $verbose = Uninstall-Retroflect -Confirm:$false -Verbose 4>&1 | Out-String
            Test-RetroflectServiceEntry | Should -BeFalse -Because 'Uninstall-Retroflect removed its own service'
            Test-DriverService | Should -BeTrue -Because 'the other program still uses the driver'
            $verbose | Should -Match ("Left the WinDivert driver service alone: 1 WinDivert handle\(s\) are open " +
                "\(process $holderPid\)")
        }
        finally {
            Remove-Item -LiteralPath $holder
        }
    }
    It 'removes our driver service entry once no other program holds a WinDivert handle' {
        Wait-NoOtherWinDivertUser
        $verbose = Uninstall-Retroflect -Confirm:$false -Verbose 4>&1 | Out-String
        Test-RetroflectServiceEntry | Should -BeFalse
        Test-DriverService | Should -BeFalse -Because 'the entry named our WinDivert64.sys and nobody used it'
        $verbose | Should -Match 'Removed the WinDivert driver service entry \(it named our '
    }
}
