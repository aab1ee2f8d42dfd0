<#
.SYNOPSIS
Installs or upgrades retroflect @VERSION@ from this release folder.

.DESCRIPTION
Run it as an Intune Win32 app's install command, a GPO startup script, or by hand from an elevated prompt:
    powershell.exe -NoProfile -ExecutionPolicy Bypass -File .\Install.ps1
It never prompts. On Windows (PowerShell 5.1 or 7; a 32-bit host relaunches itself 64-bit first):
  - the engine goes to   $env:ProgramFiles\Retroflect\@VERSION@\
  - the module goes to   $env:ProgramFiles\WindowsPowerShell\Modules\Retroflect\@VERSION@\  (Import-Module Retroflect
                         works by name in 5.1 and 7)
  - the service Retroflect (automatic start, LocalSystem, restart on failure) runs it with
    %ProgramData%\Retroflect\config.json, and is started now; a scheduled task of an earlier release is removed.
On Linux (pwsh) the engine goes to /opt/retroflect/@VERSION@, the module to /usr/local/share/powershell/Modules,
and the systemd unit retroflect.service is enabled and started.

An upgrade stops the running engine, installs the new version beside the old one, points the service at it,
starts it and checks that it answers with the new version; the config file is kept. If any step fails, the previous
version is put back and started again. Older versions' folders are removed afterwards.

Exit codes (as Intune expects): 0 installed and running; 3010 installed and running, but an old version's files were
in use and go at the next reboot; 1 failed (the reason on stderr and in the log under %ProgramData%\Retroflect\logs,
or /var/log/retroflect on Linux).

.PARAMETER Address
Reflect addresses to add to the config file (kept on upgrade; the engine picks a usable one itself when none is set).

.PARAMETER ShieldPort
Shield ports to add to the config file: 8080 (TCP and UDP), 8080/tcp, 53/udp.

.PARAMETER Pipe
The engine's control pipe name (Linux: or socket path). Default: retroflect.

.PARAMETER Root
Linux only: install under this folder instead of / (image builders and tests). The engine is then started directly
instead of through systemd, with the config file under the root.

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
    [ValidatePattern('^[A-Za-z0-9._/-]{1,200}$')]
    [string]$Pipe = 'retroflect',
    [ValidateNotNullOrEmpty()]
    [string]$Root = '/'
)

$Version = '@VERSION@'
$ErrorActionPreference = 'Stop'
# powershell.exe -File (Intune's and GPO's command lines, and the 64-bit relaunch, Invoke-RetroflectDeploy64) hands `-Address a,b` over as
# the one string 'a,b': split it, so such a list means the same as it does typed at a prompt.
$Address = @($Address | ForEach-Object { $_ -split ',' } | ForEach-Object { $_.Trim() } | Where-Object { $_ })
$ShieldPort = @($ShieldPort | ForEach-Object { $_ -split ',' } | ForEach-Object { $_.Trim() } | Where-Object { $_ })
$ConfirmPreference = 'None'
$ProgressPreference = 'SilentlyContinue'

. (Join-Path $PSScriptRoot 'Deployment.ps1')
$relaunched = Invoke-RetroflectDeploy64 -ScriptPath $PSCommandPath -Bound $PSBoundParameters
if ($null -ne $relaunched) { exit $relaunched }
$layout = Get-RetroflectDeployLayout -Version $Version -Root $Root
$log = New-RetroflectDeployLog -Layout $layout -Action 'install'

function Stop-Install([string]$Why, [int]$Code = 1) {
    Write-RetroflectDeployLog -Log $log -Message "FAILED: $Why"
    [Console]::Error.WriteLine("retroflect $Version was not installed: $Why (log: $($log.Path))")
    exit $Code
}

try {
    if (-not $layout.Windows -and $Root -ne '/' -and $Root -notmatch '^/') { Stop-Install "-Root must be an absolute path, got '$Root'" }
    if ($layout.Windows -and $Root -ne '/') { Stop-Install '-Root is for Linux image builds only; on Windows everything installs under Program Files.' }
    if ($Root -eq '/' -and -not (Test-RetroflectDeployElevated -Layout $layout)) {
        Stop-Install 'this needs an elevated session (Administrator on Windows, root on Linux); Intune and GPO startup scripts run as SYSTEM'
    }
    Test-RetroflectReleaseFiles -From $PSScriptRoot

    Import-Module (Join-Path $PSScriptRoot "Retroflect/$($Version -replace '[-+].*$', '')/Retroflect.psd1") -Force
    $previous = Get-RetroflectInstalledVersion -Layout $layout | Where-Object { $_.Version -ne $Version } | Select-Object -First 1
    $running = Get-Retroflect -Pipe $Pipe -ErrorAction SilentlyContinue
    Write-RetroflectDeployLog -Log $log -Message ("installing {0}; previous: {1}; engine running: {2}" -f $Version,
        $(if ($previous) { $previous.Version } else { 'none' }), $(if ($running) { "$($running.Version) pid $($running.ProcessId)" } else { 'no' }))
    if ($running) {
        Stop-Retroflect -Pipe $Pipe -Confirm:$false
        Write-RetroflectDeployLog -Log $log -Message "stopped engine $($running.Version)"
    }
    if ($previous) {
        $newExe = Join-Path $PSScriptRoot $layout.ExeName
        $oldDir = Split-Path -Parent $previous.Executable
        Clear-RetroflectDriverService -Layout $layout -Executable $newExe -OldVersionDir $oldDir -Log $log
    }
}
catch {
    Stop-Install $_.Exception.Message
}

$placed = $null
try {
    $placed = Copy-RetroflectRelease -Layout $layout -From $PSScriptRoot
    Write-RetroflectDeployLog -Log $log -Message "copied $($placed.Executable) and $($placed.ModuleDir)"
    $null = Register-RetroflectBoot -Layout $layout -Executable $placed.Executable -Address $Address -ShieldPort $ShieldPort -Pipe $Pipe
    $status = Start-RetroflectDeployed -Layout $layout -Executable $placed.Executable -Pipe $Pipe -ExpectedVersion $Version
    Write-RetroflectDeployLog -Log $log -Message "engine $($status.Version) running, pid $($status.ProcessId)"
}
catch {
    $why = $_.Exception.Message
    Write-RetroflectDeployLog -Log $log -Message "install failed: $why; rolling back"
    try {
        Stop-Retroflect -Pipe $Pipe -Confirm:$false -ErrorAction SilentlyContinue
        if ($placed) { Undo-RetroflectRelease -Placed $placed }
        if ($previous) {
            Import-Module $previous.Manifest -Force
            $null = Register-RetroflectBoot -Layout $layout -Executable $previous.Executable -Pipe $Pipe
            $back = Start-RetroflectDeployed -Layout $layout -Executable $previous.Executable -Pipe $Pipe -ExpectedVersion $previous.Version
            Write-RetroflectDeployLog -Log $log -Message "rolled back to $($back.Version), pid $($back.ProcessId)"
            $why = "$why (rolled back to $($previous.Version), which is running again)"
        }
    }
    catch {
        $why = "$why; the rollback failed too: $($_.Exception.Message)"
    }
    Stop-Install $why
}

Complete-RetroflectRelease -Placed $placed
$pending = Remove-RetroflectOldVersion -Layout $layout -Keep $Version -Log $log
if ($pending) {
    Write-Output "retroflect $Version installed and running (pid $($status.ProcessId)); a reboot removes the files of the old version still in use."
    exit 3010
}
Write-Output "retroflect $Version installed and running (pid $($status.ProcessId))."
exit 0
