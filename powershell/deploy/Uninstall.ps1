<#
.SYNOPSIS
Removes retroflect: stops the engine, removes the service or unit, the executables, the module and the engine's
runtime files and the engine's log. The config file stays unless -RemoveConfig is given; the deploy logs stay.

.DESCRIPTION
Run it as an Intune Win32 app's uninstall command, a GPO script, or by hand from an elevated prompt:
    powershell.exe -NoProfile -ExecutionPolicy Bypass -File .\Uninstall.ps1
Every installed version is removed, not only this one. It never prompts, and running it again when nothing is
installed changes nothing and exits 0. Install.ps1 also leaves a copy of this script in the engine's folder
(%ProgramFiles%\Retroflect\<version>, /opt/retroflect/<version>).

Exit codes (docs/windows.md has the table of both scripts):
    0     removed (or nothing was installed)
    3010  removed; some files in use go at the next reboot
    1     failed, with the reason on stderr and in the deploy log
The deploy log is retroflect-uninstall-<yyyyMMdd>.log beside Install.ps1's (Get-Help .\Install.ps1 says where); it is
kept, so what happened can still be read (and collected by Intune) after the removal.

.PARAMETER RemoveConfig
Also remove the config file and the engine's data folder, so nothing but the deploy logs is left.

.PARAMETER Root
Linux only: the folder Install.ps1 -Root installed under.

.EXAMPLE
powershell.exe -NoProfile -ExecutionPolicy Bypass -File .\Uninstall.ps1
Removes retroflect and keeps its config for a later install.

.EXAMPLE
pwsh -NoProfile -File ./Uninstall.ps1 -RemoveConfig
Removes retroflect and its config.
#>
[CmdletBinding()]
param(
    [switch]$RemoveConfig,
    [ValidateNotNullOrEmpty()]
    [string]$Root = '/'
)

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
$layout = Get-RetroflectDeployLayout -Version '0.0.0' -Root $Root
$log = $null
try {
    if ($layout.Windows -and $Root -ne '/') { throw '-Root is for Linux image builds only.' }
    if ($Root -eq '/' -and -not (Test-RetroflectDeployElevated -Layout $layout)) {
        throw 'this needs an elevated session (Administrator on Windows, root on Linux)'
    }
    $log = Open-RetroflectDeployLog -Layout $layout -Action 'uninstall'
    $forwarded = (ConvertTo-RetroflectDeployArgument -Bound $PSBoundParameters) -join ' '
    Write-RetroflectDeployLog -Log $log -Message "uninstalling; parameters: $forwarded"
    # The module of the newest installed version (or the one beside this script) stops the engine and removes the
    # service or unit; with neither there is nothing of ours running.
    $installed = @(Get-RetroflectInstalledVersion -Layout $layout)
    $manifest = $null
    if ($installed.Count -gt 0) { $manifest = $installed[0].Manifest }
    else {
        $beside = Get-ChildItem -Path (Join-Path $PSScriptRoot 'Retroflect/*/Retroflect.psd1') -ErrorAction SilentlyContinue | Select-Object -First 1
        if ($beside) { $manifest = $beside.FullName }
    }
    if ($manifest) {
        # A Retroflect module still loaded in this session (an earlier run in the same console) may come from a
        # folder that is gone: importing over it re-reads its format file there and fails.
        Remove-Module Retroflect -ErrorAction SilentlyContinue
        Import-Module $manifest -Force
        if (Get-Retroflect -Pipe $layout.Pipe -ErrorAction SilentlyContinue) {
            Stop-Retroflect -Pipe $layout.Pipe -Confirm:$false
        }
        $params = @{ ConfigPath = $layout.ConfigPath; Confirm = $false }
        if (-not $layout.Windows) { $params.Root = $layout.Root }
        Uninstall-Retroflect @params
    }
    # Its files go next; a module left loaded from them would break the next Import-Module in this session.
    Remove-Module Retroflect -ErrorAction SilentlyContinue
    $pending = $false
    # Engine folders and module folders of every version.
    foreach ($dir in @($layout.AppDir, (Join-Path $layout.ModulesDir 'Retroflect'))) {
        if (-not (Test-Path -LiteralPath $dir)) { continue }
        try {
            Remove-Item -LiteralPath $dir -Recurse -Force
            Write-RetroflectDeployLog -Log $log -Message "removed $dir"
        }
        catch {
            $why = $_.Exception.Message
            Write-RetroflectDeployLog -Log $log -Message "in use, removed at the next reboot: $dir ($why)"
            if (-not $layout.Windows) { throw }
            $unscheduled = @(Register-RetroflectDeleteAtReboot -Path $dir)
            if ($unscheduled.Count -gt 0) {
                Write-RetroflectDeployLog -Log $log -Message "could not be scheduled for removal at reboot: $($unscheduled -join '; ')"
            }
            $pending = $true
        }
    }
    # The engine's data: runtime files, tokens, its log. The config file stays for a later install unless
    # -RemoveConfig; the deploy logs (retroflect-*.log*) stay always.
    $isDeployLog = { param($item) -not $item.PSIsContainer -and $item.Name -like 'retroflect-*.log*' }
    if ($layout.Windows) {
        if (Test-Path -LiteralPath $layout.DataDir) {
            $items = Get-ChildItem -LiteralPath $layout.DataDir -Force -Recurse |
                Sort-Object { $_.FullName.Length } -Descending
            foreach ($item in $items) {
                if (-not $RemoveConfig -and $item.FullName -eq $layout.ConfigFile) { continue }
                if (& $isDeployLog $item) { continue }
                if ($item.PSIsContainer -and (Get-ChildItem -LiteralPath $item.FullName -Force)) { continue }
                Remove-Item -LiteralPath $item.FullName -Recurse -Force
            }
        }
    }
    else {
        if (Test-Path -LiteralPath $layout.DataDir) { Remove-Item -LiteralPath $layout.DataDir -Recurse -Force }
        $configDir = Split-Path -Parent $layout.ConfigFile
        if ($RemoveConfig -and (Test-Path -LiteralPath $configDir)) {
            Remove-Item -LiteralPath $configDir -Recurse -Force
        }
    }
}
catch {
    if ($log) {
        $why = $_.Exception.Message
        Write-RetroflectDeployLog -Log $log -Message "FAILED (exit $($script:DeployExitCode.Failed)): $why"
    }
    [Console]::Error.WriteLine("retroflect was not fully removed: $($_.Exception.Message)")
    exit $script:DeployExitCode.Failed
}
if ($pending) {
    Write-RetroflectDeployLog -Log $log `
        -Message "removed; a reboot completes it (exit $($script:DeployExitCode.RebootPending))"
    Write-Output 'retroflect removed; files still in use go at the next reboot.'
    exit $script:DeployExitCode.RebootPending
}
Write-RetroflectDeployLog -Log $log -Message 'removed (exit 0)'
Write-Output 'retroflect removed.'
exit $script:DeployExitCode.Success
