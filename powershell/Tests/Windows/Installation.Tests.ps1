# Install-Retroflect / Uninstall-Retroflect on Windows: the service Retroflect in Wine's real service manager, the
# config file in C:\ProgramData\Retroflect, and the engine the service runs. Start-/Stop-Retroflect and
# Restart-Service act through the service. Mocked, because the real thing cannot run under Wine: the ScheduledTasks
# TEST STAND-IN in StandIns\ (an install of an earlier release, to migrate from), and Invoke-RetroflectSc for the
# recovery settings only (Wine's sc.exe has no failureflag and its SCM keeps no failure actions), so these tests
# assert what we ask of the SCM; docs/windows.md says what only a real host confirms.

BeforeAll {
    $env:PSModulePath = (Join-Path $PSScriptRoot 'StandIns') + [IO.Path]::PathSeparator + $env:PSModulePath
    Remove-Module ScheduledTasks, NetSecurity, Retroflect -ErrorAction SilentlyContinue
    Import-Module (Join-Path $PSScriptRoot '..\..\Retroflect\Retroflect.psd1') -Force
    Remove-Item Env:WINDIVERT_DOUBLE_INJECT_FILE, Env:WINDIVERT_DOUBLE_SENT_FILE -ErrorAction SilentlyContinue
    # The layout a release has: retroflect.exe with WinDivert next to it (the TEST DOUBLE and a placeholder .sys).
    $script:App = Join-Path $env:RETROFLECT_TEST_DIR 'install-app'
    $null = New-Item -ItemType Directory -Path $script:App -Force
    Copy-Item -LiteralPath $env:RETROFLECT_TEST_ENGINE_EXE -Destination $script:App -Force
    Copy-Item -Path (Join-Path $env:RETROFLECT_TEST_WINDIVERT_DIR '*') -Destination $script:App -Force
    $script:Exe = Join-Path $script:App 'retroflect.exe'
    $script:DataDir = 'C:\ProgramData\Retroflect'
    $script:Config = Join-Path $script:DataDir 'config.json'
    $script:ServiceKey = 'HKLM:\SYSTEM\CurrentControlSet\Services\Retroflect'
    $script:SourceKey = 'HKLM:\SYSTEM\CurrentControlSet\Services\EventLog\Application\Retroflect'
    Remove-Item -LiteralPath $script:Config -Force -ErrorAction SilentlyContinue
    $sc = Join-Path ([Environment]::GetFolderPath('System')) 'sc.exe'
    if (Get-Service Retroflect -ErrorAction SilentlyContinue) { & $sc stop Retroflect; Start-Sleep 3; & $sc delete Retroflect }

    function Wait-Engine([scriptblock]$Until) {
        $deadline = [DateTime]::UtcNow.AddSeconds(90)
        while ([DateTime]::UtcNow -lt $deadline) {
            $s = Get-Retroflect -ErrorAction SilentlyContinue
            if (& $Until $s) { return $s }
            Start-Sleep -Milliseconds 500
        }
        return (Get-Retroflect -ErrorAction SilentlyContinue)
    }
}

AfterAll {
    Uninstall-Retroflect -Confirm:$false -ErrorAction SilentlyContinue
    Remove-Module ScheduledTasks, NetSecurity -ErrorAction SilentlyContinue
}

Describe 'Install-Retroflect on Windows: the service Retroflect' {
    BeforeEach {
        Mock -ModuleName Retroflect Invoke-RetroflectSc { } -ParameterFilter { $ArgumentList[0] -in @('failure', 'failureflag') }
    }
    It 'refuses an unelevated session with Retroflect.NotAdmin and registers nothing' {
        Mock -ModuleName Retroflect Test-RetroflectElevated { $false }   # Wine has no unelevated token
        { Install-Retroflect -Path $script:Exe -Address 203.0.113.77 -Confirm:$false } | Should -Throw -ErrorId 'Retroflect.NotAdmin*'
        Test-Path -LiteralPath $script:Config | Should -BeFalse
        Get-Service Retroflect -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
    }
    It '-WhatIf writes no config and registers no service' {
        Install-Retroflect -Path $script:Exe -Address 203.0.113.77 -WhatIf
        Test-Path -LiteralPath $script:Config | Should -BeFalse
        Get-Service Retroflect -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
    }
    It 'registers the service (automatic, LocalSystem, after BFE, recovery, Event Log source) and removes the scheduled task of an earlier install' {
        # An earlier release's install: the boot task (stand-in).
        $null = Register-ScheduledTask -TaskPath '\Retroflect\' -TaskName 'Retroflect' -Action (New-ScheduledTaskAction -Execute $script:Exe -Argument 'run') `
            -Trigger (New-ScheduledTaskTrigger -AtStartup) -Principal (New-ScheduledTaskPrincipal -UserId 'S-1-5-18' -LogonType ServiceAccount -RunLevel Highest) -Force

        $r = Install-Retroflect -Path $script:Exe -Address 203.0.113.77 -ShieldPort '8080/tcp' -Confirm:$false
        $r.Kind | Should -Be 'Service'
        $r.Name | Should -Be 'Retroflect'
        $r.Changed | Should -BeTrue
        $r.ConfigPath | Should -Be $script:Config
        $r.Command | Should -Be ('"{0}" run --service --config C:\ProgramData\Retroflect\config.json' -f $script:Exe)

        $config = Get-Content -LiteralPath $script:Config -Raw | ConvertFrom-Json
        @($config.reflectAddresses) | Should -Be @('203.0.113.77')

        $service = Get-Service Retroflect
        $service.DisplayName | Should -Be 'Retroflect'
        $service.StartType | Should -Be 'Automatic'
        $service.Status | Should -Be 'Stopped'
        $key = Get-ItemProperty -LiteralPath $script:ServiceKey
        $key.ImagePath | Should -Be $r.Command
        $key.ObjectName | Should -Be 'LocalSystem'
        @($key.DependOnService) | Should -Be @('BFE')
        $key.Description | Should -Match 'Installed by Install-Retroflect'

        Should -Invoke -ModuleName Retroflect Invoke-RetroflectSc -Times 1 -Exactly -ParameterFilter { ($ArgumentList -join ' ') -eq 'failure Retroflect reset= 86400 actions= restart/5000/restart/30000/restart/120000' }
        Should -Invoke -ModuleName Retroflect Invoke-RetroflectSc -Times 1 -Exactly -ParameterFilter { ($ArgumentList -join ' ') -eq 'failureflag Retroflect 1' }

        (Get-Item -LiteralPath $script:SourceKey).GetValue('EventMessageFile', $null, 'DoNotExpandEnvironmentNames') | Should -Be '%SystemRoot%\Microsoft.NET\Framework64\v4.0.30319\EventLogMessages.dll'

        @(Get-ScheduledTaskStandInCall -Command 'Unregister-ScheduledTask').Count | Should -Be 1
        Get-ScheduledTask -TaskPath '\Retroflect\' -TaskName 'Retroflect' -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
    }
    It 'is idempotent: the same install again changes nothing' {
        $stamp = (Get-Item -LiteralPath $script:Config).LastWriteTimeUtc
        $r = Install-Retroflect -Path $script:Exe -Address 203.0.113.77 -ShieldPort '8080/tcp' -Confirm:$false
        $r.Changed | Should -BeFalse
        (Get-Item -LiteralPath $script:Config).LastWriteTimeUtc | Should -Be $stamp
    }
    It '-Start starts the service, which runs the engine with the installed config; Get-Retroflect says it runs as a service' {
        $null = Install-Retroflect -Path $script:Exe -Start -Confirm:$false
        (Get-Service Retroflect).Status | Should -Be 'Running'
        $status = Wait-Engine { param($s) $null -ne $s }
        $status.State | Should -Be 'running'
        $status.RunsAs | Should -Be 'Service'
        $status.Backend | Should -Be 'windivert'
        $status.ConfigPath | Should -Be $script:Config
        @($status.ReflectAddresses | ForEach-Object { $_.ToString() }) | Should -Be @('203.0.113.77')
        $script:EnginePid = $status.ProcessId
    }
    It '-Start again and Start-Retroflect do not start a second engine' {
        $null = Install-Retroflect -Path $script:Exe -Start -Confirm:$false
        Start-Retroflect -Confirm:$false
        (Get-Retroflect).ProcessId | Should -Be $script:EnginePid
    }
    It 'Stop-Retroflect stops the service cleanly; Start-Retroflect starts the service again' {
        Stop-Retroflect -Confirm:$false
        (Get-Service Retroflect).Status | Should -Be 'Stopped'
        Get-Process -Id $script:EnginePid -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        Get-Retroflect -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        Get-Content -LiteralPath (Join-Path $script:DataDir 'logs\engine.log') -Tail 1 | Should -Match '1001 retroflect stopped: the service was stopped through the Service Control Manager\. Exit code 0\.$'

        $status = Start-Retroflect -PassThru -Confirm:$false
        (Get-Service Retroflect).Status | Should -Be 'Running'
        $status.RunsAs | Should -Be 'Service'
        $status.ProcessId | Should -Not -Be $script:EnginePid
        $script:EnginePid = $status.ProcessId
    }
    It 'Restart-Service Retroflect stops the engine cleanly and starts a new one' {
        Restart-Service -Name Retroflect
        (Get-Service Retroflect).Status | Should -Be 'Running'
        Get-Process -Id $script:EnginePid -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        $status = Wait-Engine { param($s) $null -ne $s -and $s.ProcessId -ne $script:EnginePid }
        $status.State | Should -Be 'running'
        $script:EnginePid = $status.ProcessId
    }
}

Describe 'Uninstall-Retroflect on Windows' {
    It 'refuses an unelevated session with Retroflect.NotAdmin and removes nothing' {
        Mock -ModuleName Retroflect Test-RetroflectElevated { $false }
        { Uninstall-Retroflect -RemoveConfig -Confirm:$false } | Should -Throw -ErrorId 'Retroflect.NotAdmin*'
        Get-Service Retroflect | Should -Not -BeNullOrEmpty
        Test-Path -LiteralPath $script:Config | Should -BeTrue
    }
    It 'stops the service (the engine cleans up), deletes it and its Event Log source, and removes config and runtime files' {
        Test-Path -LiteralPath (Join-Path $script:DataDir 'runtime') | Should -BeTrue   # koffi, unpacked by the engine
        Uninstall-Retroflect -RemoveConfig -Confirm:$false
        Get-Service Retroflect -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        Test-Path -LiteralPath $script:SourceKey | Should -BeFalse
        Get-Retroflect -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        Get-Process -Id $script:EnginePid -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        Test-Path -LiteralPath (Join-Path $script:DataDir 'retroflect.token') | Should -BeFalse   # a killed engine leaves it
        Test-Path -LiteralPath $script:Config | Should -BeFalse
        Test-Path -LiteralPath (Join-Path $script:DataDir 'runtime') | Should -BeFalse
    }
    It 'is idempotent: nothing installed is not an error' {
        { Uninstall-Retroflect -RemoveConfig -Confirm:$false } | Should -Not -Throw
    }
}
