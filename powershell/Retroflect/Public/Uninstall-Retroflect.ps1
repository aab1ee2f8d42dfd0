function Uninstall-Retroflect {
    <#
    .SYNOPSIS
    Removes the boot-time retroflect engine installed by Install-Retroflect.

    .DESCRIPTION
    Stops the installed engine gracefully (so it undoes its routes, firewall
    rules and WinDivert handles), then removes the service Retroflect and its
    Event Log source (and a scheduled task of an earlier release) on Windows,
    or disables and deletes the systemd unit (Linux), and the engine's unpacked
    runtime files (%ProgramData%\Retroflect\runtime,
    /var/lib/retroflect/runtime). On Windows the WinDivert driver service entry
    is removed too, but only when no program holds a WinDivert handle and the
    entry names our WinDivert64.sys (or a file that is gone): another tool's
    driver keeps working. With -RemoveConfig the config file is deleted too
    (and its folder, if empty). Nothing installed is not an error (idempotent).

    .PARAMETER ConfigPath
    The config file to delete with -RemoveConfig. Default: the engine's
    default path.

    .PARAMETER RemoveConfig
    Also delete the config file, so nothing is left behind.

    .PARAMETER Root
    Linux only: the file system root the unit was installed under (default
    '/'). Any other root redirects every removal and skips systemctl.
    Refused on Windows.

    .EXAMPLE
    Uninstall-Retroflect

    Removes the service or unit (and the firewall rule of -AllowFirewall);
    keeps the config file. Does not ask (ConfirmImpact Medium), so it runs
    unattended, for example under Intune with pwsh -NonInteractive.

    .EXAMPLE
    Uninstall-Retroflect -RemoveConfig -Confirm:$false

    Removes the service or unit and the config file without asking.

    .INPUTS
    None.

    .OUTPUTS
    None.
    .LINK
    Install-Retroflect

    .LINK
    about_Retroflect
    #>
    [CmdletBinding(SupportsShouldProcess, ConfirmImpact = 'Medium', PositionalBinding = $false)]
    [OutputType([void])]
    param(
        [string]$ConfigPath,

        [switch]$RemoveConfig,

        [ValidateNotNullOrEmpty()]
        [string]$Root = '/'
    )
    $windows = Test-RetroflectWindows
    try {
        $Root = Assert-RetroflectRoot $PSCmdlet $Root $PSBoundParameters.ContainsKey('Root')
        if ($ConfigPath) { $ConfigPath = Resolve-RetroflectUserPath $PSCmdlet $ConfigPath }
        else { $ConfigPath = Get-RetroflectDefaultConfigPath }
        if ($Root -eq '/' -and -not (Test-RetroflectElevated)) {
            throw (New-RetroflectErrorRecord -Code 'E_NOT_ADMIN' `
                -Message 'Uninstalling the retroflect engine needs an elevated session (Administrator on Windows, root on Linux).' `
                -Hint 'Run PowerShell as Administrator (or with sudo).')
        }
        if ($windows) {
            # The installed engine: its folder holds the WinDivert files whose driver entry is ours.
            $engineExe = Get-RetroflectInstalledExecutable
            # The service: the SCM's stop control makes the engine undo its host changes before it ends.
            Unregister-RetroflectService -Cmdlet $PSCmdlet
            # A scheduled task of an earlier release, if one is left.
            $null = Remove-RetroflectBootTask -Cmdlet $PSCmdlet
            # The rule of Install-Retroflect -AllowFirewall: allowing reflect addresses in is pointless without the engine.
            Remove-RetroflectFirewallRule -Cmdlet $PSCmdlet
            # WinDivert's driver service entry: removed only when no program holds a WinDivert handle and it is ours.
            Invoke-RetroflectDriverRelease -Cmdlet $PSCmdlet -Executable $engineExe
        }
        else {
            $unitPath = Join-RetroflectRootPath -Root $Root -SystemPath ('/etc/systemd/system/' + $script:UnitName)
            if (-not (Test-Path -LiteralPath $unitPath)) {
                Write-Verbose "No unit $unitPath; nothing to remove."
            }
            elseif ($PSCmdlet.ShouldProcess($unitPath, 'Stop, disable and delete systemd unit')) {
                # systemctl stop sends SIGTERM, on which the engine undoes its host changes.
                Invoke-RetroflectSystemctl -Root $Root -ArgumentList @('disable', '--now', $script:UnitName)
                Remove-Item -LiteralPath $unitPath -Force -ErrorAction Stop
                Invoke-RetroflectSystemctl -Root $Root -ArgumentList @('daemon-reload')
            }
        }
        # The engine's unpacked native module is ours alone, whatever -RemoveConfig says: nothing is left behind.
        $runtimeDir = Get-RetroflectRuntimePath
        if (-not $windows) { $runtimeDir = Join-RetroflectRootPath -Root $Root -SystemPath $runtimeDir }
        if ((Test-Path -LiteralPath $runtimeDir) -and $PSCmdlet.ShouldProcess($runtimeDir, 'Delete engine runtime files')) {
            # A process that just ended (the engine, or 'retroflect driver release', which loads the same module) may
            # hold its file for a moment longer, as may a virus scanner: try again briefly before giving up.
            for ($try = 1; ; $try++) {
                try { Remove-Item -LiteralPath $runtimeDir -Recurse -Force -ErrorAction Stop; break }
                catch {
                    if ($try -ge $script:RuntimeRemoveTries) { throw }
                    Start-Sleep -Milliseconds $script:RuntimeRemoveRetryMs
                }
            }
            $parent = Split-Path -Parent $runtimeDir
            if ((Test-Path -LiteralPath $parent) -and -not (Get-ChildItem -LiteralPath $parent -Force)) {
                Remove-Item -LiteralPath $parent -Force -ErrorAction Stop
            }
        }
        if ($RemoveConfig) {
            $configFile = $ConfigPath
            if (-not $windows) { $configFile = Join-RetroflectRootPath -Root $Root -SystemPath $ConfigPath }
            if ((Test-Path -LiteralPath $configFile) -and $PSCmdlet.ShouldProcess($configFile, 'Delete config file')) {
                Remove-Item -LiteralPath $configFile -Force -ErrorAction Stop
                $dir = Split-Path -Parent $configFile
                if ((Test-Path -LiteralPath $dir) -and -not (Get-ChildItem -LiteralPath $dir -Force)) {
                    Remove-Item -LiteralPath $dir -Force -ErrorAction Stop
                }
            }
        }
    }
    catch {
        $PSCmdlet.ThrowTerminatingError($_)
    }
}
