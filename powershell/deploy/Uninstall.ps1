<#
.SYNOPSIS
Removes retroflect: stops the engine, removes the service or unit, the executables, the module and the engine's
runtime files and logs. The config file stays unless -RemoveConfig is given.

.DESCRIPTION
Run it as an Intune Win32 app's uninstall command, a GPO script, or by hand from an elevated prompt:
    powershell.exe -NoProfile -ExecutionPolicy Bypass -File .\Uninstall.ps1
Every installed version is removed, not only this one. It never prompts, and running it again when nothing is
installed changes nothing and exits 0. Install.ps1 also leaves a copy of this script in the engine's folder
(%ProgramFiles%\Retroflect\<version>, /opt/retroflect/<version>).

Exit codes: 0 removed (or nothing was installed); 3010 removed, some files in use go at the next reboot; 1 failed,
with the reason on stderr.

.PARAMETER RemoveConfig
Also remove the config file and the engine's data folder, so nothing at all is left.

.PARAMETER Pipe
The engine's control pipe name (Linux: or socket path). Default: retroflect.

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
    [ValidatePattern('^[A-Za-z0-9._/-]{1,200}$')]
    [string]$Pipe = 'retroflect',
    [ValidateNotNullOrEmpty()]
    [string]$Root = '/'
)

$ErrorActionPreference = 'Stop'
$ConfirmPreference = 'None'
$ProgressPreference = 'SilentlyContinue'

. (Join-Path $PSScriptRoot 'Deployment.ps1')
$relaunched = Invoke-RetroflectDeploy64 -ScriptPath $PSCommandPath -Bound $PSBoundParameters
if ($null -ne $relaunched) { exit $relaunched }
$layout = Get-RetroflectDeployLayout -Version '0.0.0' -Root $Root
try {
    if ($layout.Windows -and $Root -ne '/') { throw '-Root is for Linux image builds only.' }
    if ($Root -eq '/' -and -not (Test-RetroflectDeployElevated -Layout $layout)) {
        throw 'this needs an elevated session (Administrator on Windows, root on Linux)'
    }
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
        if (Get-Retroflect -Pipe $Pipe -ErrorAction SilentlyContinue) { Stop-Retroflect -Pipe $Pipe -Confirm:$false }
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
        try { Remove-Item -LiteralPath $dir -Recurse -Force }
        catch {
            if (-not $layout.Windows) { throw }
            Register-RetroflectDeleteAtReboot -Path $dir
            $pending = $true
        }
    }
    # The engine's data: runtime files, tokens, logs. The config file stays for a later install unless -RemoveConfig.
    if ($layout.Windows) {
        if (Test-Path -LiteralPath $layout.DataDir) {
            foreach ($item in (Get-ChildItem -LiteralPath $layout.DataDir -Force)) {
                if (-not $RemoveConfig -and $item.FullName -eq $layout.ConfigFile) { continue }
                Remove-Item -LiteralPath $item.FullName -Recurse -Force
            }
            if ($RemoveConfig) { Remove-Item -LiteralPath $layout.DataDir -Recurse -Force }
        }
    }
    else {
        foreach ($dir in @($layout.DataDir, $layout.LogDir)) {
            if (Test-Path -LiteralPath $dir) { Remove-Item -LiteralPath $dir -Recurse -Force }
        }
        $configDir = Split-Path -Parent $layout.ConfigFile
        if ($RemoveConfig -and (Test-Path -LiteralPath $configDir)) { Remove-Item -LiteralPath $configDir -Recurse -Force }
    }
}
catch {
    [Console]::Error.WriteLine("retroflect was not fully removed: $($_.Exception.Message)")
    exit 1
}
if ($pending) {
    Write-Output 'retroflect removed; files still in use go at the next reboot.'
    exit 3010
}
Write-Output 'retroflect removed.'
exit 0
