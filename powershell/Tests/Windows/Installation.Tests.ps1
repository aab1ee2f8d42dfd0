# Install-Retroflect / Uninstall-Retroflect on Windows: the boot task, the config file in C:\ProgramData\Retroflect,
# and the engine the task runs. The Task Scheduler and firewall cmdlets are the in-memory TEST STAND-INS in StandIns\
# (Wine has no ScheduledTasks or NetSecurity module); its Start-ScheduledTask really runs the registered command line, so the engine
# that answers afterwards proves the task would start it.

BeforeAll {
    # The stand-in is autoloaded by the module's first task call, as Windows autoloads the real ScheduledTasks module.
    $env:PSModulePath = (Join-Path $PSScriptRoot 'StandIns') + [IO.Path]::PathSeparator + $env:PSModulePath
    Remove-Module ScheduledTasks, NetSecurity, Retroflect -ErrorAction SilentlyContinue
    Import-Module (Join-Path $PSScriptRoot '..\..\Retroflect\Retroflect.psd1') -Force
    # Engines started here must not replay Engine.Tests.ps1's packets.
    Remove-Item Env:WINDIVERT_DOUBLE_INJECT_FILE, Env:WINDIVERT_DOUBLE_SENT_FILE -ErrorAction SilentlyContinue
    # The layout a release has: retroflect.exe with WinDivert next to it (the TEST DOUBLE and a placeholder .sys).
    $script:App = Join-Path $env:RETROFLECT_TEST_DIR 'install-app'
    $null = New-Item -ItemType Directory -Path $script:App -Force
    Copy-Item -LiteralPath $env:RETROFLECT_TEST_ENGINE_EXE -Destination $script:App -Force
    Copy-Item -Path (Join-Path $env:RETROFLECT_TEST_WINDIVERT_DIR '*') -Destination $script:App -Force
    $script:Exe = Join-Path $script:App 'retroflect.exe'
    $script:DataDir = 'C:\ProgramData\Retroflect'
    $script:Config = Join-Path $script:DataDir 'config.json'
    Remove-Item -LiteralPath $script:Config -Force -ErrorAction SilentlyContinue
}

AfterAll {
    Stop-Retroflect -Confirm:$false -ErrorAction SilentlyContinue
    Remove-Module ScheduledTasks, NetSecurity -ErrorAction SilentlyContinue
}

Describe 'Install-Retroflect on Windows' {
    It 'refuses an unelevated session with Retroflect.NotAdmin and writes nothing' {
        Mock -ModuleName Retroflect Test-RetroflectElevated { $false }   # Wine has no unelevated token
        { Install-Retroflect -Path $script:Exe -Address 203.0.113.77 -Confirm:$false } | Should -Throw -ErrorId 'Retroflect.NotAdmin*'
        Test-Path -LiteralPath $script:Config | Should -BeFalse
        Get-ScheduledTaskStandInCall -Command 'Register-ScheduledTask' | Should -BeNullOrEmpty
    }
    It '-WhatIf writes no config and registers no task' {
        Install-Retroflect -Path $script:Exe -Address 203.0.113.77 -WhatIf
        Test-Path -LiteralPath $script:Config | Should -BeFalse
        Get-ScheduledTaskStandInCall -Command 'Register-ScheduledTask' | Should -BeNullOrEmpty
    }
    It 'writes the config to C:\ProgramData\Retroflect and registers \Retroflect\Retroflect at startup as SYSTEM' {
        $r = Install-Retroflect -Path $script:Exe -Address 203.0.113.77 -ShieldPort '8080/tcp' -Confirm:$false
        $r.Kind | Should -Be 'ScheduledTask'
        $r.Name | Should -Be '\Retroflect\Retroflect'
        $r.Changed | Should -BeTrue
        $r.ConfigPath | Should -Be $script:Config

        $config = Get-Content -LiteralPath $script:Config -Raw | ConvertFrom-Json
        @($config.reflectAddresses) | Should -Be @('203.0.113.77')
        @($config.shieldPorts | ForEach-Object { '{0}/{1}' -f $_.port, $_.protocol }) | Should -Be @('8080/tcp')

        $task = Get-ScheduledTask -TaskPath '\Retroflect\' -TaskName 'Retroflect'
        $task.Actions[0].Execute | Should -Be $script:Exe
        $task.Actions[0].Arguments | Should -Be 'run --config C:\ProgramData\Retroflect\config.json'
        $task.Actions[0].WorkingDirectory | Should -Be $script:App
        $task.Triggers[0].AtStartup | Should -BeTrue
        $task.Principal.UserId | Should -Be 'SYSTEM'
        $task.Principal.RunLevel | Should -Be 'Highest'
        $task.Settings.ExecutionTimeLimit | Should -Be ([timespan]::Zero)   # runs until shutdown
        $task.Settings.RestartCount | Should -BeGreaterThan 0
    }
    It 'is idempotent: the same install again changes nothing and registers nothing' {
        $before = @(Get-ScheduledTaskStandInCall -Command 'Register-ScheduledTask').Count
        $stamp = (Get-Item -LiteralPath $script:Config).LastWriteTimeUtc
        $r = Install-Retroflect -Path $script:Exe -Address 203.0.113.77 -ShieldPort '8080/tcp' -Confirm:$false
        $r.Changed | Should -BeFalse
        @(Get-ScheduledTaskStandInCall -Command 'Register-ScheduledTask').Count | Should -Be $before
        (Get-Item -LiteralPath $script:Config).LastWriteTimeUtc | Should -Be $stamp
    }
    It '-Start starts the task, whose command line runs the engine with the installed config' {
        $null = Install-Retroflect -Path $script:Exe -Start -Confirm:$false
        @(Get-ScheduledTaskStandInCall -Command 'Start-ScheduledTask').Count | Should -Be 1
        $deadline = [DateTime]::UtcNow.AddSeconds(90)
        while ($null -eq ($status = Get-Retroflect -ErrorAction SilentlyContinue) -and [DateTime]::UtcNow -lt $deadline) { Start-Sleep -Milliseconds 500 }
        $status.State | Should -Be 'running'
        $status.Backend | Should -Be 'windivert'
        $status.ConfigPath | Should -Be $script:Config
        @($status.ReflectAddresses | ForEach-Object { $_.ToString() }) | Should -Be @('203.0.113.77')
        (Get-ScheduledTask -TaskPath '\Retroflect\' -TaskName 'Retroflect').State | Should -Be 'Running'
        $script:EnginePid = $status.ProcessId
    }
    It '-Start again does not start a second engine' {
        $null = Install-Retroflect -Path $script:Exe -Start -Confirm:$false
        @(Get-ScheduledTaskStandInCall -Command 'Start-ScheduledTask').Count | Should -Be 1
        (Get-Retroflect).ProcessId | Should -Be $script:EnginePid
    }
}

Describe 'Uninstall-Retroflect on Windows' {
    It 'refuses an unelevated session with Retroflect.NotAdmin and removes nothing' {
        Mock -ModuleName Retroflect Test-RetroflectElevated { $false }
        { Uninstall-Retroflect -RemoveConfig -Confirm:$false } | Should -Throw -ErrorId 'Retroflect.NotAdmin*'
        Get-ScheduledTask -TaskPath '\Retroflect\' -TaskName 'Retroflect' | Should -Not -BeNullOrEmpty
        Test-Path -LiteralPath $script:Config | Should -BeTrue
    }
    It 'stops the engine through the pipe (not by killing it), unregisters the task and removes config and runtime files' {
        Test-Path -LiteralPath (Join-Path $script:DataDir 'runtime') | Should -BeTrue   # koffi, unpacked by the engine
        Uninstall-Retroflect -RemoveConfig -Confirm:$false
        Get-Retroflect -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        Get-Process -Id $script:EnginePid -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        Test-Path -LiteralPath (Join-Path $script:DataDir 'retroflect.token') | Should -BeFalse   # a killed engine leaves it
        @(Get-ScheduledTaskStandInCall -Command 'Unregister-ScheduledTask').Count | Should -Be 1
        Get-ScheduledTask -TaskPath '\Retroflect\' -TaskName 'Retroflect' -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        Test-Path -LiteralPath $script:Config | Should -BeFalse
        Test-Path -LiteralPath (Join-Path $script:DataDir 'runtime') | Should -BeFalse
    }
    It 'is idempotent: nothing installed is not an error' {
        { Uninstall-Retroflect -RemoveConfig -Confirm:$false } | Should -Not -Throw
        @(Get-ScheduledTaskStandInCall -Command 'Unregister-ScheduledTask').Count | Should -Be 1
    }
}
