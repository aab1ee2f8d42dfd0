# Windows: the engine as the service Retroflect (retroflect.exe run --service; src/cli/service-host.ts), its
# recovery actions and its Event Log source. Install-Retroflect registers them, Uninstall-Retroflect removes them,
# Start-/Stop-Retroflect act through the service when it is installed. sc.exe gets argument arrays, never a string.

$script:ServiceName = 'Retroflect'
$script:ServiceDisplayName = 'Retroflect'
$script:ServiceDescription = 'Reflects traffic this host sends to the configured reflect addresses back into it as ' +
    'inbound, so sandboxed (UWP/AppContainer) apps reach local servers. Installed by Install-Retroflect.'
# WinDivert's driver filters through the Base Filtering Engine: start after it.
$script:ServiceDependsOn = @('BFE')
# Recovery: restart after 5 s, then 30 s, then 2 min (each later failure too); the count resets after a day
# without failure. failureflag 1: also when the engine stops with an error exit code, not only when it crashes.
$script:ServiceFailureResetSeconds = 86400
$script:ServiceFailureActions = 'restart/5000/restart/30000/restart/120000'
# The Event Log source of src/platform/windows/event-log.ts; .NET's EventLogMessages.dll reads "%1" for every ID.
$script:EventLogSourceKey = 'HKLM:\SYSTEM\CurrentControlSet\Services\EventLog\Application\Retroflect'
$script:EventLogMessageFile = '%SystemRoot%\Microsoft.NET\Framework64\v4.0.30319\EventLogMessages.dll'
# What the engine's status says about how it runs (src/platform/run-mode.ts), as Get-Retroflect shows it.
$script:RunsAsNames = @{ service = 'Service'; unit = 'Unit'; console = 'Console' }

function Invoke-RetroflectSc {
    <# sc.exe by its full path (Wine finds no command through PATHEXT); a failure throws with sc's own words. #>
    param([Parameter(Mandatory)][string[]]$ArgumentList)
    $sc = Join-Path ([Environment]::GetFolderPath('System')) 'sc.exe'
    $output = & $sc @ArgumentList 2>&1
    if ($LASTEXITCODE -ne 0) {
        throw (New-RetroflectErrorRecord -Code 'PS_INSTALL_FAILED' -TargetObject $script:ServiceName `
            -Message ("sc.exe {0} failed (exit {1}): {2}" -f ($ArgumentList -join ' '), $LASTEXITCODE,
                (($output | Out-String).Trim())) `
            -Hint 'Check the service with: sc.exe qc Retroflect; sc.exe qfailure Retroflect')
    }
}

function Get-RetroflectService {
    # The installed service, or $null (Windows only; never an error).
    if (-not (Test-RetroflectWindows)) { return $null }
    return (Get-Service -Name $script:ServiceName -ErrorAction SilentlyContinue)
}

function Get-RetroflectServiceCommand {
    # The service's command line: the executable quoted, then `run --service` and the given arguments.
    param([Parameter(Mandatory)][string]$Executable, [string[]]$ArgumentList)
    $line = ConvertTo-RetroflectArgumentString -ArgumentList (@('run', '--service') + $ArgumentList)
    return ('"{0}" {1}' -f $Executable, $line)
}

function Get-RetroflectServiceImagePath {
    # The command line the SCM runs for the service, from its registry key (the same on PowerShell 5.1 and 7).
    $key = "HKLM:\SYSTEM\CurrentControlSet\Services\$($script:ServiceName)"
    return [string](Get-ItemProperty -LiteralPath $key -Name ImagePath -ErrorAction SilentlyContinue).ImagePath
}

function Get-RetroflectInstalledExecutable {
    # The engine executable the service runs (the first word of its ImagePath), or $null (then the driver release
    # resolves the executable itself).
    $image = Get-RetroflectServiceImagePath
    if ($image -match '^"([^"]+)"') { return $Matches[1] }
    if ($image) { return ($image -split ' ')[0] }
    return $null
}

function Register-RetroflectService {
    <#
    Creates the service (automatic start, LocalSystem, after BFE) or points it at a new command line, sets its
    recovery actions and registers the Event Log source. Returns $true when the service was created or changed.
    #>
    param([Parameter(Mandatory)]$Cmdlet, [Parameter(Mandatory)][string]$Executable, [string[]]$ArgumentList)
    $command = Get-RetroflectServiceCommand -Executable $Executable -ArgumentList $ArgumentList
    $changed = $false
    $service = Get-RetroflectService
    if ($null -eq $service) {
        if (-not $Cmdlet.ShouldProcess("service $($script:ServiceName) ($command)", 'Create')) { return $false }
        $null = New-Service -Name $script:ServiceName -BinaryPathName $command -DisplayName $script:ServiceDisplayName `
            -Description $script:ServiceDescription -StartupType Automatic -DependsOn $script:ServiceDependsOn `
            -ErrorAction Stop
        $changed = $true
    }
    elseif ((Get-RetroflectServiceImagePath) -ne $command) {
        if (-not $Cmdlet.ShouldProcess("service $($script:ServiceName)", "Run $command")) { return $false }
        if ($service.Status -ne 'Stopped') { Stop-Service -Name $script:ServiceName -ErrorAction Stop }
        Invoke-RetroflectSc -ArgumentList @('config', $script:ServiceName, 'binPath=', $command, 'start=', 'auto')
        $changed = $true
    }
    $recovery = "Set recovery: $($script:ServiceFailureActions), reset after $($script:ServiceFailureResetSeconds) s"
    if ($Cmdlet.ShouldProcess("service $($script:ServiceName)", $recovery)) {
        $reset = [string]$script:ServiceFailureResetSeconds
        $actions = $script:ServiceFailureActions
        Invoke-RetroflectSc -ArgumentList @('failure', $script:ServiceName, 'reset=', $reset, 'actions=', $actions)
        try { Invoke-RetroflectSc -ArgumentList @('failureflag', $script:ServiceName, '1') }
        catch {
            # Older sc.exe (and Wine's) lack failureflag: recovery then applies only when the engine crashes.
            Write-Warning ("Recovery actions apply only when the engine crashes, not when it stops with an error: " +
                $_.Exception.Message)
        }
    }
    if (Register-RetroflectEventSource -Cmdlet $Cmdlet) { $changed = $true }
    return $changed
}

function Register-RetroflectEventSource {
    # The Application log's source Retroflect, so Event Viewer shows the engine's text with its event ID.
    param([Parameter(Mandatory)]$Cmdlet)
    $key = Get-Item -LiteralPath $script:EventLogSourceKey -ErrorAction SilentlyContinue
    $current = $null
    if ($null -ne $key) { $current = $key.GetValue('EventMessageFile', $null, 'DoNotExpandEnvironmentNames') }
    if ($current -eq $script:EventLogMessageFile) { return $false }
    $what = "Event Log source $($script:ServiceName) (Application log)"
    if (-not $Cmdlet.ShouldProcess($what, 'Register')) { return $false }
    $null = New-Item -Path $script:EventLogSourceKey -Force -ErrorAction Stop
    $null = New-ItemProperty -LiteralPath $script:EventLogSourceKey -Name EventMessageFile -PropertyType ExpandString `
        -Value $script:EventLogMessageFile -Force -ErrorAction Stop
    $null = New-ItemProperty -LiteralPath $script:EventLogSourceKey -Name TypesSupported -PropertyType DWord -Value 7 `
        -Force -ErrorAction Stop
    return $true
}

function Unregister-RetroflectService {
    # Stops the service (the engine cleans up on the stop control), deletes it and the Event Log source.
    param([Parameter(Mandatory)]$Cmdlet, [int]$TimeoutSeconds = 60)
    $service = Get-RetroflectService
    if ($null -ne $service -and $Cmdlet.ShouldProcess("service $($script:ServiceName)", 'Stop and delete')) {
        if ($service.Status -ne 'Stopped') { Stop-RetroflectService -TimeoutSeconds $TimeoutSeconds }
        Invoke-RetroflectSc -ArgumentList @('delete', $script:ServiceName)
    }
    $source = "Event Log source $($script:ServiceName)"
    if ((Test-Path -LiteralPath $script:EventLogSourceKey) -and $Cmdlet.ShouldProcess($source, 'Remove')) {
        Remove-Item -LiteralPath $script:EventLogSourceKey -Recurse -Force -ErrorAction Stop
    }
}

function Wait-RetroflectServiceStatus {
    param([Parameter(Mandatory)][string]$Status, [int]$TimeoutSeconds = 60)
    $deadline = [DateTime]::UtcNow.AddSeconds($TimeoutSeconds)
    while ([DateTime]::UtcNow -lt $deadline) {
        $service = Get-RetroflectService
        if ($null -eq $service -or [string]$service.Status -eq $Status) { return $service }
        Start-Sleep -Milliseconds 250
    }
    return (Get-RetroflectService)
}

function Get-RetroflectServiceExitCode {
    # The engine's exit code the SCM keeps for a stopped service (sc.exe query: SERVICE_EXIT_CODE), or $null.
    $sc = Join-Path ([Environment]::GetFolderPath('System')) 'sc.exe'
    $text = (& $sc query $script:ServiceName 2>&1 | Out-String)
    $win32 = [regex]::Match($text, 'WIN32_EXIT_CODE\s*:\s*(\d+)')
    $specific = [regex]::Match($text, 'SERVICE_EXIT_CODE\s*:\s*(\d+)')
    $serviceSpecific = $win32.Success -and [int]$win32.Groups[1].Value -eq 1066 -and $specific.Success
    if ($serviceSpecific) { return [int]$specific.Groups[1].Value }
    return $null
}

function Start-RetroflectService {
    <#
    Starts the installed service and waits until it runs; a service that stops instead throws with the engine's
    exit code (the service-specific exit code) mapped to its error code, and where to read why.
    #>
    param([int]$TimeoutSeconds = 60)
    Start-Service -Name $script:ServiceName -ErrorAction SilentlyContinue
    $service = Wait-RetroflectServiceStatus -Status 'Running' -TimeoutSeconds $TimeoutSeconds
    if ($null -ne $service -and [string]$service.Status -eq 'Running') { return }
    $exit = Get-RetroflectServiceExitCode
    $code = $null
    if ($null -ne $exit) { $code = $script:ExitCodeToErrorCode[$exit] }
    if (-not $code) { $code = 'PS_ENGINE_EXITED' }
    $log = Join-Path (Get-RetroflectLogDirectory) 'engine.log'
    throw (New-RetroflectErrorRecord -Code $code -TargetObject $script:ServiceName `
        -Message ("The service {0} did not start (status {1}, engine exit code {2})." -f
            $script:ServiceName, $service.Status, $exit) `
        -Hint "The reason is in the Application event log (source Retroflect) and in $log.")
}

function Stop-RetroflectService {
    # Stops the service through the SCM (the engine drains and cleans up on the stop control) and waits.
    param([int]$TimeoutSeconds = 60)
    Stop-Service -Name $script:ServiceName -ErrorAction SilentlyContinue
    $service = Wait-RetroflectServiceStatus -Status 'Stopped' -TimeoutSeconds $TimeoutSeconds
    if ($null -ne $service -and [string]$service.Status -ne 'Stopped') {
        throw (New-RetroflectErrorRecord -Code 'E_TIMEOUT' -TargetObject $script:ServiceName `
            -Message ("The service {0} was asked to stop but is {1} after {2} s." -f
                $script:ServiceName, $service.Status, $TimeoutSeconds) `
            -Hint 'Wait and check with Get-Service Retroflect.')
    }
}

function Remove-RetroflectBootTask {
    <#
    Migration from releases that started the engine with the scheduled task \Retroflect\Retroflect: stop its engine
    through the pipe (so it cleans up), then unregister the task. Returns $true when there was one.
    #>
    param([Parameter(Mandatory)]$Cmdlet)
    if (-not (Get-Command -Name Get-ScheduledTask -ErrorAction SilentlyContinue)) { return $false }
    $task = Get-ScheduledTask -TaskPath $script:TaskPath -TaskName $script:TaskName -ErrorAction SilentlyContinue
    if ($null -eq $task) { return $false }
    $what = "scheduled task $($script:TaskPath)$($script:TaskName)"
    if (-not $Cmdlet.ShouldProcess($what, 'Stop and unregister (replaced by the service)')) { return $false }
    try { Stop-Retroflect -Confirm:$false } catch { Write-Verbose "Graceful stop failed: $($_.Exception.Message)" }
    if ($task.State -eq 'Running') {
        Stop-ScheduledTask -TaskPath $script:TaskPath -TaskName $script:TaskName -ErrorAction SilentlyContinue
    }
    Unregister-ScheduledTask -TaskPath $script:TaskPath -TaskName $script:TaskName -Confirm:$false -ErrorAction Stop
    return $true
}
