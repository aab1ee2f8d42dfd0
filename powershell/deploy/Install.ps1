<#
.SYNOPSIS
Installs or upgrades retroflect @VERSION@ from this release folder.

.DESCRIPTION
Run it as an Intune Win32 app's install command, a GPO startup script, or by hand from an elevated prompt:
    powershell.exe -NoProfile -ExecutionPolicy Bypass -File .\Install.ps1
It never prompts. On Windows (PowerShell 5.1 or 7; a 32-bit host relaunches itself in the 64-bit Windows PowerShell
with the same parameters and hands back its output and exit code):
  - the engine goes to   $env:ProgramFiles\Retroflect\@VERSION@\
  - the module goes to   $env:ProgramFiles\WindowsPowerShell\Modules\Retroflect\@VERSION@\  (Import-Module Retroflect
                         works by name in 5.1 and 7)
  - the service Retroflect (automatic start, LocalSystem, restart on failure) runs it with
    %ProgramData%\Retroflect\config.json, and is started now; a scheduled task of an earlier release is removed.
On Linux (pwsh) the engine goes to /opt/retroflect/@VERSION@, the module to /usr/local/share/powershell/Modules,
and the systemd unit retroflect.service is enabled and started.

When this version is already installed as this script would leave it and its engine answers, it changes nothing,
does not restart the engine, writes one log line and exits 0 (a GPO startup script runs it at every boot).
An upgrade stops the running engine, installs the new version beside the old one, points the service at it,
starts it and checks that it answers with the new version; the config file is kept. If any step fails (also when
the new engine does not answer in time), everything it changed is put back: the engine it started is stopped, the
service or unit, the firewall rule, the files, the module and config.json are as before, and the engine that ran
before runs again. Older versions' folders are removed afterwards; a newer version is never replaced unless
-AllowDowngrade is given.

Exit codes (Intune's return codes; docs/windows.md has the same table):
    0     installed and running (or already was: nothing changed)
    3010  installed and running; an old version's files were in use and go at the next reboot
    1638  not installed: a newer version is installed (give -AllowDowngrade to replace it)
    1     failed and rolled back (the reason on stderr and in the deploy log)
The deploy log is retroflect-install-<yyyyMMdd>.log (one a day, at most 1 MB plus one .old file, 30 days kept) in
%ProgramData%\Microsoft\IntuneManagementExtension\Logs when Intune manages the device (its "Collect diagnostics"
takes that folder), else in %ProgramData%\Retroflect\logs; /var/log/retroflect on Linux.

.PARAMETER Address
Reflect addresses to add to the config file (kept on upgrade; the engine picks a usable one itself when none is set).

.PARAMETER ShieldPort
Shield ports to add to the config file: 8080 (TCP and UDP), 8080/tcp, 53/udp.

.PARAMETER AllowFirewall
Windows: also create the inbound Windows Defender Firewall rule Retroflect-Reflected-In that lets reflected
connections in from the reflect addresses (Install-Retroflect -AllowFirewall; Uninstall.ps1 removes it).

.PARAMETER AllowDowngrade
Install even when a newer version is installed, and remove that newer version. Without it that case exits 1638 and
changes nothing.

.PARAMETER Root
Linux only: install under this folder instead of / (image builders and tests). The engine is then started directly
instead of through systemd, with the config file under the root and the control socket
<Root>/run/retroflect/retroflect.sock.

.EXAMPLE
powershell.exe -NoProfile -ExecutionPolicy Bypass -File .\Install.ps1
Installs (or upgrades to) this version and starts it at boot and now.

.EXAMPLE
pwsh -NoProfile -File ./Install.ps1 -ShieldPort 8080
Linux: installs, shields port 8080 from other hosts, and starts the systemd unit.
#>
[CmdletBinding()]
param(
    [string[]]$Address,
    [string[]]$ShieldPort,
    [switch]$AllowFirewall,
    [switch]$AllowDowngrade,
    [ValidateNotNullOrEmpty()]
    [string]$Root = '/'
)

$Version = '@VERSION@'
$ErrorActionPreference = 'Stop'
$ConfirmPreference = 'None'
$ProgressPreference = 'SilentlyContinue'

. (Join-Path $PSScriptRoot 'Deployment.ps1')
# Before anything else: the 64-bit run's output is this script's output, its exit code this script's.
$relaunch = Get-RetroflectDeploy64Relaunch -ScriptPath $PSCommandPath -Bound $PSBoundParameters
if ($null -ne $relaunch) {
    Remove-Item Env:RETROFLECT_TEST_DEPLOY_AS_32BIT -ErrorAction SilentlyContinue
    & $relaunch.Host $relaunch.Arguments
    exit $LASTEXITCODE
}
# powershell.exe -File (Intune's and GPO's command lines, and the 64-bit relaunch) hands `-Address a,b` over as
# the one string 'a,b': split it, so such a list means the same as it does typed at a prompt.
$Address = @($Address | ForEach-Object { $_ -split ',' } | ForEach-Object { $_.Trim() } | Where-Object { $_ })
$ShieldPort = @($ShieldPort | ForEach-Object { $_ -split ',' } | ForEach-Object { $_.Trim() } | Where-Object { $_ })
$layout = Get-RetroflectDeployLayout -Version $Version -Root $Root
$log = $null

function Stop-Install([string]$Why, [int]$Code = $script:DeployExitCode.Failed) {
    if ($log) { Write-RetroflectDeployLog -Log $log -Message "FAILED (exit $Code): $Why" }
    else { $log = [pscustomobject]@{ Path = 'none: the log folder is for elevated sessions' } }
    [Console]::Error.WriteLine("retroflect $Version was not installed: $Why (log: $($log.Path))")
    exit $Code
}

function Complete-Install($Status, [bool]$Pending) {
    if ($Pending) {
        Write-RetroflectDeployLog -Log $log `
            -Message "installed; a reboot completes the removal (exit $($script:DeployExitCode.RebootPending))"
        Write-Output ("retroflect $Version installed and running (pid $($Status.ProcessId)); " +
            'a reboot removes the files of the old version still in use.')
        exit $script:DeployExitCode.RebootPending
    }
    Write-RetroflectDeployLog -Log $log -Message 'installed (exit 0)'
    Write-Output "retroflect $Version installed and running (pid $($Status.ProcessId))."
    exit $script:DeployExitCode.Success
}

function Complete-Step([string]$Name) {
    # TEST HOOK (Deployment.ps1): fail right after this step, to prove the rollback.
    if ($env:RETROFLECT_TEST_DEPLOY_FAIL_AFTER -eq $Name) { throw "test hook: failing after step '$Name'" }
}

try {
    if (-not $layout.Windows -and $Root -ne '/' -and $Root -notmatch '^/') { Stop-Install "-Root must be an absolute path, got '$Root'" }
    if ($layout.Windows -and $Root -ne '/') { Stop-Install '-Root is for Linux image builds only; on Windows everything installs under Program Files.' }
    if ($Root -eq '/' -and -not (Test-RetroflectDeployElevated -Layout $layout)) {
        Stop-Install 'this needs an elevated session (Administrator on Windows, root on Linux); Intune and GPO startup scripts run as SYSTEM'
    }
    $log = Open-RetroflectDeployLog -Layout $layout -Action 'install'
    Test-RetroflectReleaseFiles -From $PSScriptRoot
    $newer = @(Get-RetroflectInstalledVersion -Layout $layout |
        Where-Object { (Compare-RetroflectDeployVersion -A $_.Version -B $Version) -gt 0 })
    if ($newer.Count -gt 0 -and -not $AllowDowngrade) {
        $why = "version $($newer[0].Version) is installed, which is newer; nothing was changed (give -AllowDowngrade to replace it)"
        Stop-Install $why $script:DeployExitCode.NewerInstalled
    }
    Import-RetroflectDeployModule -Manifest (Join-Path $PSScriptRoot "Retroflect/$($Version -replace '[-+].*$', '')/Retroflect.psd1")
    $unhealthy = Get-RetroflectDeployHealth -Layout $layout -From $PSScriptRoot -Address $Address -ShieldPort $ShieldPort `
        -AllowFirewall:$AllowFirewall
    if (-not $unhealthy -and $newer.Count -gt 0) {
        $unhealthy = "version $($newer[0].Version) is to be replaced (-AllowDowngrade)"
    }
    if (-not $unhealthy) {
        $status = Get-Retroflect -Pipe $layout.Pipe
        # Older versions a reboot freed (3010 before) go now; the engine is not touched either way.
        if (@(Get-RetroflectOlderVersionFolder -Layout $layout -Version $Version).Count -eq 0) {
            Write-RetroflectDeployLog -Log $log `
                -Message "retroflect $Version is installed and running (pid $($status.ProcessId)); nothing to do"
            Write-Output "retroflect $Version installed and running (pid $($status.ProcessId))."
            exit $script:DeployExitCode.Success
        }
        $pending = Remove-RetroflectOldVersion -Layout $layout -Keep $Version -Log $log
    }
    else {
        $previous = Get-RetroflectInstalledVersion -Layout $layout | Where-Object { $_.Version -ne $Version } |
            Select-Object -First 1
        $before = Save-RetroflectDeployState -Layout $layout
        Write-RetroflectDeployLog -Log $log -Message ("installing {0} ({1}); parameters: {2}; previous: {3}; engine running: {4}" -f
            $Version, $unhealthy,
            ((ConvertTo-RetroflectDeployArgument -Bound $PSBoundParameters) -join ' '),
            $(if ($previous) { $previous.Version } else { 'none' }),
            $(if ($before.Running) { "$($before.Running.Version) pid $($before.Running.ProcessId)" } else { 'no' }))
    }
}
catch {
    Stop-Install $_.Exception.Message
}

$placed = $null
$started = @()
if (-not $unhealthy) { Complete-Install -Status $status -Pending $pending }
try {
    if ($before.Running) {
        Stop-RetroflectDeployedEngine -Layout $layout -Executable @($before.BootExecutable)
        Write-RetroflectDeployLog -Log $log -Message "stopped engine $($before.Running.Version)"
        if ($previous) {
            Clear-RetroflectDriverService -Layout $layout -Executable (Join-Path $PSScriptRoot $layout.ExeName) `
                -OldVersionDir (Split-Path -Parent $previous.Executable) -Log $log
        }
    }
    Complete-Step 'stop'
    $placed = Copy-RetroflectRelease -Layout $layout -From $PSScriptRoot
    Write-RetroflectDeployLog -Log $log `
        -Message "copied $($placed.Executable) and $($placed.ModuleDir) ($($placed.Unblocked) files unblocked)"
    Complete-Step 'copy'
    $null = Register-RetroflectBoot -Layout $layout -Executable $placed.Executable -Address $Address -ShieldPort $ShieldPort
    Write-RetroflectDeployLog -Log $log -Message "registered the boot start of $($placed.Executable)"
    Complete-Step 'register'
    if ($AllowFirewall) {
        if ($layout.Windows) {
            $null = Register-RetroflectBoot -Layout $layout -Executable $placed.Executable -AllowFirewall
            Write-RetroflectDeployLog -Log $log -Message 'firewall rule in place'
        }
        else {
            Write-RetroflectDeployLog -Log $log -Message '-AllowFirewall is for Windows Defender Firewall; the Linux engine sets its own rules'
        }
    }
    Complete-Step 'firewall'
    $started = @($placed.Executable)
    $status = Start-RetroflectDeployed -Layout $layout -Executable $placed.Executable -ExpectedVersion $Version `
        -Step { param($s) Complete-Step $s }
    Write-RetroflectDeployLog -Log $log -Message "engine $($status.Version) running, pid $($status.ProcessId)"
}
catch {
    $why = $_.Exception.Message
    Write-RetroflectDeployLog -Log $log -Message "install failed: $why; rolling back"
    $failures = @(Restore-RetroflectDeployState -Layout $layout -State $before -Placed $placed -StartedExecutable $started `
        -Log $log)
    if ($failures.Count -gt 0) { $why = "$why; the rollback failed too: $($failures -join '; ')" }
    elseif ($before.Running) { $why = "$why (rolled back to $($before.Running.Version), which is running again)" }
    else { $why = "$why (rolled back: everything is as before)" }
    Stop-Install $why
}

Complete-RetroflectRelease -Placed $placed
$pending = Remove-RetroflectOldVersion -Layout $layout -Keep $Version -IncludeNewer:$AllowDowngrade -Log $log
Complete-Install -Status $status -Pending $pending
