# The fleet cases of the Windows release's Install.ps1, run for real in this elevated Wine session (Program Files,
# ProgramData, the service Retroflect in Wine's service manager, the engine on the WinDivert TEST DOUBLE):
#  - from a 32-bit host stand-in: this 64-bit pwsh with RETROFLECT_TEST_DEPLOY_AS_32BIT=1 (the TEST HOOK of
#    Deployment.ps1) and %WINDIR% pointing at a folder whose sysnative\WindowsPowerShell\v1.0\powershell.exe is this
#    same Windows pwsh (test/release/deploy-windows.test.ts makes it): exit code 3010 and the success line come back,
#    and the 64-bit run binds the forwarded switches;
#  - a second run with the same version healthy changes nothing and does not restart the engine (one log line);
#  - a newer version installed: refused with 1638 and nothing changed, unless -AllowDowngrade;
#  - a failure injected after each step (TEST HOOK RETROFLECT_TEST_DEPLOY_FAIL_AFTER) leaves the host exactly as
#    before: from an installed and running engine, and from a host where nothing is installed.
# The firewall rule is the NetSecurity TEST STAND-IN's (StandIns\), in this session's memory.
# test/release/deploy-windows.test.ts sets RETROFLECT_TEST_RELEASE_ZIP, RETROFLECT_TEST_RELEASE_VERSION and
# RETROFLECT_TEST_FAKE_WINDIR.

BeforeAll {
    $env:PSModulePath = (Join-Path $PSScriptRoot 'StandIns') + [IO.Path]::PathSeparator + $env:PSModulePath
    Remove-Module ScheduledTasks, NetSecurity, Retroflect -ErrorAction SilentlyContinue
    Remove-Item Env:WINDIVERT_DOUBLE_INJECT_FILE, Env:WINDIVERT_DOUBLE_SENT_FILE -ErrorAction SilentlyContinue
    Import-Module NetSecurity
    $script:Version = $env:RETROFLECT_TEST_RELEASE_VERSION
    $script:Release = Join-Path $env:RETROFLECT_TEST_DIR 'deploy-unpacked'
    Remove-Item -LiteralPath $script:Release -Recurse -Force -ErrorAction SilentlyContinue
    Expand-Archive -LiteralPath $env:RETROFLECT_TEST_RELEASE_ZIP -DestinationPath $script:Release
    $script:AppDir = Join-Path $env:ProgramFiles 'Retroflect'
    $script:ModuleRoot = Join-Path $env:ProgramFiles 'WindowsPowerShell\Modules\Retroflect'
    $script:DataDir = Join-Path $env:ProgramData 'Retroflect'
    $script:Config = Join-Path $script:DataDir 'config.json'
    $script:LogDir = Join-Path $script:DataDir 'logs'
    $script:ServiceKey = 'HKLM:\SYSTEM\CurrentControlSet\Services\Retroflect'
    $script:SourceKey = 'HKLM:\SYSTEM\CurrentControlSet\Services\EventLog\Application\Retroflect'
    $script:RealWindir = $env:WINDIR
    $sc = Join-Path ([Environment]::GetFolderPath('System')) 'sc.exe'
    if (Get-Service Retroflect -ErrorAction SilentlyContinue) {
        & $sc stop Retroflect
        Start-Sleep 3
        & $sc delete Retroflect
    }
    foreach ($dir in @($script:AppDir, $script:ModuleRoot, $script:DataDir)) {
        Remove-Item -LiteralPath $dir -Recurse -Force -ErrorAction SilentlyContinue
    }
    $script:Manifest = Join-Path $script:Release "Retroflect\$($script:Version -replace '[-+].*$', '')\Retroflect.psd1"
    # The release's module, for Get-Retroflect here (Install.ps1 imports it again itself).
    Import-Module $script:Manifest -Force

    # An installed version folder pair that is not this release's (no engine runs from it).
    function New-OtherVersion([string]$Version) {
        $dirs = @((Join-Path $script:AppDir $Version), (Join-Path $script:ModuleRoot $Version))
        foreach ($dir in $dirs) { $null = New-Item -ItemType Directory -Path $dir -Force }
        $licence = Join-Path $script:Release 'LICENSE'
        Copy-Item -LiteralPath $licence -Destination (Join-Path $dirs[0] 'retroflect.exe')
        Copy-Item -LiteralPath $licence -Destination (Join-Path $dirs[1] 'Retroflect.psd1')
        return $dirs
    }

    function Invoke-Install([hashtable]$Parameters = @{}) {
        $global:LASTEXITCODE = $null
        $out = & (Join-Path $script:Release 'Install.ps1') @Parameters 2>&1
        [pscustomobject]@{ Code = $LASTEXITCODE; Output = @($out | ForEach-Object { "$_" }) }
    }

    function Get-TodayLog([string]$Action = 'install') {
        $path = Join-Path $script:LogDir ('retroflect-{0}-{1}.log' -f $Action, (Get-Date -Format 'yyyyMMdd'))
        if (-not (Test-Path -LiteralPath $path)) { return @() }
        return @(Get-Content -LiteralPath $path)
    }

    function Wait-Answer {
        $deadline = [DateTime]::UtcNow.AddSeconds(60)
        do {
            $s = Get-Retroflect -ErrorAction SilentlyContinue
            if ($s) { return $s }
            Start-Sleep -Milliseconds 500
        } while ([DateTime]::UtcNow -lt $deadline)
    }

    # Everything Install.ps1 may change, as text: files (name and size; content too for the small ones, which hold
    # the settings), the service's registration, the Event Log source, the firewall rule, config.json, and which
    # engine answers. Deploy logs are left out (they are written on purpose), as are the engine's own log and the
    # changing content of its token.
    function Get-HostState {
        $files = foreach ($root in @($script:AppDir, $script:ModuleRoot, $script:DataDir)) {
            if (-not (Test-Path -LiteralPath $root)) { "$root absent"; continue }
            foreach ($f in @(Get-ChildItem -LiteralPath $root -Recurse -Force | Sort-Object FullName)) {
                if ($f.FullName.StartsWith($script:LogDir)) { continue }
                if ($f.PSIsContainer) { "$($f.FullName)\"; continue }
                $line = '{0} {1}' -f $f.FullName, $f.Length
                if ($f.Length -lt 65536 -and $f.Name -ne 'retroflect.token') {
                    $line += ' ' + (Get-FileHash -LiteralPath $f.FullName).Hash
                }
                $line
            }
        }
        $service = 'none'
        if (Get-Service Retroflect -ErrorAction SilentlyContinue) {
            $key = Get-ItemProperty -LiteralPath $script:ServiceKey
            $service = '{0} start={1}' -f $key.ImagePath, $key.Start
        }
        $rule = Get-NetFirewallRule -Name 'Retroflect-Reflected-In' -ErrorAction SilentlyContinue
        $engine = 'none'
        $status = Get-Retroflect -ErrorAction SilentlyContinue
        if ($status) {
            $engine = '{0} as {1} from {2}' -f $status.Version, $status.RunsAs, (Get-Process -Id $status.ProcessId).Path
        }
        [pscustomobject]@{
            Files       = @($files)
            Service     = $service
            EventSource = (Test-Path -LiteralPath $script:SourceKey)
            Firewall    = $(if ($rule) { @($rule.RemoteAddress) -join ',' } else { 'none' })
            Engine      = $engine
        } | ConvertTo-Json -Depth 3
    }
}

AfterAll {
    $env:WINDIR = $script:RealWindir
    Remove-Item Env:RETROFLECT_TEST_DEPLOY_AS_32BIT, Env:RETROFLECT_TEST_DEPLOY_FAIL_AFTER -ErrorAction SilentlyContinue
    if (Get-Command Stop-Retroflect -ErrorAction SilentlyContinue) {
        Stop-Retroflect -Confirm:$false -ErrorAction SilentlyContinue
    }
    Remove-Module ScheduledTasks, NetSecurity -ErrorAction SilentlyContinue
}

Describe 'Install.ps1 from a 32-bit host (stand-in): relaunched in the 64-bit host' {
    It 'hands back exit code 3010 and the success line, and the 64-bit run binds every forwarded switch' {
        # An old version whose engine file is in use (held open here without delete sharing): its removal waits
        # for the next reboot, which is what 3010 says.
        $old = New-OtherVersion '0.0.1'
        $held = [System.IO.File]::Open((Join-Path $script:AppDir '0.0.1\retroflect.exe'), 'Open', 'Read', 'Read')
        try {
            $env:RETROFLECT_TEST_DEPLOY_AS_32BIT = '1'
            $env:WINDIR = $env:RETROFLECT_TEST_FAKE_WINDIR
            $parameters = @{ Address = '203.0.113.77'; AllowFirewall = $true; AllowDowngrade = $true; Verbose = $true }
            $r = Invoke-Install $parameters
        }
        finally {
            $env:WINDIR = $script:RealWindir
            Remove-Item Env:RETROFLECT_TEST_DEPLOY_AS_32BIT -ErrorAction SilentlyContinue
            $held.Dispose()
        }
        $r.Code | Should -Be 3010 -Because ($r.Output -join "`n")
        $enginePid = (Get-Retroflect).ProcessId
        $r.Output | Should -Contain ("retroflect $($script:Version) installed and running (pid $enginePid); " +
            'a reboot removes the files of the old version still in use.')
        # -Verbose bound in the 64-bit run: its verbose stream is in the output handed back.
        @($r.Output | Where-Object { $_ -match 'VERBOSE: .*registered the boot start' }).Count | Should -Be 1
        # The 64-bit run's log names what it bound, and did what -AllowFirewall asks.
        $log = Get-TodayLog
        $bound = 'parameters: -Address 203\.0\.113\.77 -AllowDowngrade -AllowFirewall -Verbose;'
        $installing = "installing $([regex]::Escape($script:Version)) .*$bound"
        @($log | Where-Object { $_ -match $installing }).Count | Should -Be 1
        @($log | Where-Object { $_ -match 'firewall rule in place' }).Count | Should -Be 1
        $log[-1] | Should -Match 'exit 3010'
        # The old version waits for the reboot; the new one runs from Program Files. (Wine's MoveFileEx cannot
        # schedule a removal at reboot, error 3, which the log says; Windows writes PendingFileRenameOperations.)
        $inUse = 'in use, removed at the next reboot: .*Retroflect\\0\.0\.1'
        @($log | Where-Object { $_ -match $inUse }).Count | Should -Be 1
        Test-Path -LiteralPath $old[0] | Should -BeTrue
        Test-Path -LiteralPath $old[1] | Should -BeFalse
        (Get-Retroflect).Version | Should -Be $script:Version
        (Get-Service Retroflect).Status | Should -Be 'Running'
        # After the reboot (the file is free again) the next run removes what is left, without touching the engine.
        $enginePid = (Get-Retroflect).ProcessId
        $r = Invoke-Install
        $r.Code | Should -Be 0 -Because ($r.Output -join "`n")
        Test-Path -LiteralPath $old[0] | Should -BeFalse
        (Get-Retroflect).ProcessId | Should -Be $enginePid
    }
}

Describe 'Install.ps1 again, and a downgrade' {
    It 'with the same version installed and healthy changes nothing, keeps the engine running and writes one log line' {
        $before = Get-HostState
        $pidBefore = (Get-Retroflect).ProcessId
        $lines = (Get-TodayLog).Count
        $r = Invoke-Install @{ Address = '203.0.113.77' }
        $r.Code | Should -Be 0
        $r.Output | Should -Be @("retroflect $($script:Version) installed and running (pid $pidBefore).")
        (Get-Retroflect).ProcessId | Should -Be $pidBefore
        Get-HostState | Should -Be $before
        $log = Get-TodayLog
        $log.Count | Should -Be ($lines + 1)
        $log[-1] | Should -Match 'is installed and running .*; nothing to do$'
    }
    It 'refuses a downgrade with exit 1638, changing nothing; -AllowDowngrade installs and removes the newer version' {
        $newer = New-OtherVersion '99.0.0'
        $before = Get-HostState
        $r = Invoke-Install
        $r.Code | Should -Be 1638
        $refused = 'FAILED \(exit 1638\): version 99\.0\.0 is installed, which is newer; nothing was'
        (Get-TodayLog)[-1] | Should -Match $refused
        Get-HostState | Should -Be $before

        $r = Invoke-Install @{ AllowDowngrade = $true }
        $r.Code | Should -Be 0 -Because ($r.Output -join "`n")
        foreach ($dir in $newer) { Test-Path -LiteralPath $dir | Should -BeFalse }
        (Get-Retroflect).Version | Should -Be $script:Version
    }
}

BeforeDiscovery {
    # Install.ps1's steps (Get-RetroflectDeployStep in Deployment.ps1; the test below checks the two lists agree).
    $steps = @('stop', 'copy', 'register', 'firewall', 'start', 'answer')
}

Describe 'A failure after each step is rolled back: the host is exactly as before' {
    BeforeAll {
        . (Join-Path $script:Release 'Deployment.ps1')
        @(Get-RetroflectDeployStep) | Should -Be @('stop', 'copy', 'register', 'firewall', 'start', 'answer')
    }
    AfterEach { Remove-Item Env:RETROFLECT_TEST_DEPLOY_FAIL_AFTER -ErrorAction SilentlyContinue }

    It 'from an installed, running engine: failing after <_> restores all, and the engine runs again' -ForEach $steps {
        $before = Get-HostState
        $before | Should -Match '"Engine": "[^"]+ as Service from'
        $env:RETROFLECT_TEST_DEPLOY_FAIL_AFTER = $_
        # A new address and the firewall rule: the config, the service and the rule all change before the failure.
        $r = Invoke-Install @{ Address = '203.0.113.99'; AllowFirewall = $true }
        $r.Code | Should -Be 1
        # The reason goes to stderr (the console, not a stream) and to the log.
        $message = (Get-TodayLog)[-1]
        $message | Should -Match 'FAILED \(exit 1\)'
        if ($_ -eq 'answer') {
            $message | Should -Match 'the engine did not answer on pipe ''retroflect'' within \d+ s'
        }
        else { $message | Should -Match "test hook: failing after step '$_'" }
        $message | Should -Match "rolled back to $([regex]::Escape($script:Version)), which is running again"
        $null = Wait-Answer
        Get-HostState | Should -Be $before
        Get-ChildItem -LiteralPath $script:AppDir, $script:ModuleRoot -Filter '*.previous-*' | Should -BeNullOrEmpty
    }

    It 'from a host with nothing installed but a config.json: failing after <_> leaves nothing behind' -ForEach $steps {
        if (Get-Service Retroflect -ErrorAction SilentlyContinue) {
            # Uninstall.ps1 of the installed version, to reach the starting point.
            $null = & (Join-Path $script:Release 'Uninstall.ps1')
            $LASTEXITCODE | Should -Be 0
            Import-Module $script:Manifest -Force
        }
        $seeded = '{"schemaVersion":1,"reflectAddresses":["203.0.113.77"],"shieldPorts":[]}'
        [System.IO.File]::WriteAllText($script:Config, $seeded)
        $before = Get-HostState
        $before | Should -Match '"Engine": "none"'
        $before | Should -Match '"Service": "none"'
        $env:RETROFLECT_TEST_DEPLOY_FAIL_AFTER = $_
        $r = Invoke-Install @{ Address = '203.0.113.99'; AllowFirewall = $true }
        $r.Code | Should -Be 1
        (Get-TodayLog)[-1] | Should -Match "failing after step '$_'|did not answer"
        (Get-TodayLog)[-1] | Should -Match 'rolled back: everything is as before'
        Get-HostState | Should -Be $before
        Get-Process | Where-Object { $_.Path -like "$($script:AppDir)*" } | Should -BeNullOrEmpty
    }
}

Describe 'Uninstall.ps1 logs too, where Intune collects it' {
    It 'writes its day log to the Intune Management Extension''s log folder when there is one; keeps the deploy logs' {
        $ime = Join-Path $env:ProgramData 'Microsoft\IntuneManagementExtension\Logs'
        $null = New-Item -ItemType Directory -Path $ime -Force
        try {
            $null = & (Join-Path $script:Release 'Uninstall.ps1') -RemoveConfig
            $LASTEXITCODE | Should -Be 0
            $log = Join-Path $ime ('retroflect-uninstall-{0}.log' -f (Get-Date -Format 'yyyyMMdd'))
            (Get-Content -LiteralPath $log)[-1] | Should -Match 'removed \(exit 0\)$'
            Test-Path -LiteralPath $script:Config | Should -BeFalse
            $installLog = 'retroflect-install-{0}.log' -f (Get-Date -Format 'yyyyMMdd')
            @(Get-ChildItem -LiteralPath $script:LogDir -Name) | Should -Contain $installLog
            Test-Path -LiteralPath $script:AppDir | Should -BeFalse
        }
        finally {
            Remove-Item -LiteralPath (Join-Path $env:ProgramData 'Microsoft\IntuneManagementExtension') -Recurse -Force
        }
    }
}
