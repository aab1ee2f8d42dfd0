function Install-Retroflect {
    <#
    .SYNOPSIS
    Installs the retroflect engine to start at boot with the persisted config.

    .DESCRIPTION
    Windows: registers the service Retroflect (automatic start, LocalSystem,
    after the Base Filtering Engine), which runs `retroflect.exe run --service
    --config <ConfigPath>`, with recovery actions (restart after 5 s, 30 s,
    then 2 min; the count resets after a day) and the Event Log source
    Retroflect (Application log). An existing scheduled task
    \Retroflect\Retroflect of an earlier release is stopped and removed. Linux:
    writes the systemd unit retroflect.service to /etc/systemd/system and
    enables it. -Address and -ShieldPort are added to the config file (created
    if missing), which the engine loads at start and which Add-ReflectAddress /
    Add-ShieldPort keep up to date. Running it again with the same values
    changes nothing (idempotent); the output's Changed property says whether
    anything was written.

    .PARAMETER Address
    Reflect addresses to add to the config file.

    .PARAMETER ShieldPort
    Shield ports to add to the config file: 8080 (TCP and UDP), '8080/tcp',
    '53/udp'.

    .PARAMETER Path
    The engine executable. Default: retroflect(.exe) next to the module or
    in its bin folder, else on PATH.

    .PARAMETER ConfigPath
    The config file. Default: %ProgramData%\Retroflect\config.json or
    /etc/retroflect/config.json.

    .PARAMETER Start
    Start the engine now as well (Windows: start the service; Linux:
    systemctl enable --now).

    .PARAMETER AllowFirewall
    Windows: also create one inbound Windows Defender Firewall rule
    (Retroflect-Reflected-In) that allows connections whose remote address
    is one of the configured reflect addresses. Reflected connections
    arrive as inbound from the reflect address, so without such a rule the
    firewall may block them. Uninstall-Retroflect removes it. Ignored with
    a warning on Linux.

    .PARAMETER Root
    Linux only: the file system root to install under (default '/'). Any
    other root redirects everything the command writes (unit, config file)
    and skips systemctl and the admin check; used by image builders and
    tests. Refused on Windows, where the service and the firewall rule
    cannot be redirected.

    .EXAMPLE
    Install-Retroflect -Address 192.0.2.1 -ShieldPort 8080 -Start

    Saves the address and port in the config file, installs the service or
    unit, and starts the engine.

    .EXAMPLE
    Install-Retroflect -Address 192.0.2.1 -AllowFirewall -Start

    Windows only. Also allows reflected connections through Windows Defender
    Firewall.

    .EXAMPLE
    Install-Retroflect -WhatIf `
        -Path 'C:\Program Files\Retroflect\retroflect.exe'

    Windows only. Shows what would be installed.

    .EXAMPLE
    Install-Retroflect -Root ./image -Address 192.0.2.1

    Linux only. Writes the unit and config into the image tree ./image
    (relative to the current location) without touching this system.

    .INPUTS
    None.

    .OUTPUTS
    Retroflect.Installation (nothing with -WhatIf).
    .LINK
    Uninstall-Retroflect

    .LINK
    Start-Retroflect

    .LINK
    about_Retroflect
    #>
    [CmdletBinding(SupportsShouldProcess, ConfirmImpact = 'Medium', PositionalBinding = $false)]
    [OutputType('Retroflect.Installation')]
    param(
        [Alias('ReflectAddress', 'IPAddress')]
        [string[]]$Address,

        [string[]]$ShieldPort,

        [Alias('FilePath')]
        [string]$Path,

        [string]$ConfigPath,

        [switch]$Start,

        [switch]$AllowFirewall,

        [ValidateNotNullOrEmpty()]
        [string]$Root = '/'
    )
    $windows = Test-RetroflectWindows
    try {
        $Root = Assert-RetroflectRoot $PSCmdlet $Root $PSBoundParameters.ContainsKey('Root')
        $exe = Resolve-RetroflectExecutable -Path (Resolve-RetroflectUserPath $PSCmdlet $Path)
        if ($ConfigPath) { $ConfigPath = Resolve-RetroflectUserPath $PSCmdlet $ConfigPath }
        else { $ConfigPath = Get-RetroflectDefaultConfigPath }
        if ($Root -eq '/' -and -not (Test-RetroflectElevated)) {
            throw (New-RetroflectErrorRecord -Code 'E_NOT_ADMIN' -TargetObject $exe `
                -Message 'Installing the retroflect engine needs an elevated session (Administrator on Windows, root on Linux).' `
                -Hint 'Run PowerShell as Administrator (or with sudo).')
        }
        # Everything is checked before anything is written: a config the engine refuses would make the boot task
        # or unit fail and restart for ever.
        foreach ($s in $ShieldPort) { $null = ConvertTo-RetroflectPortSpec -Port $s }
        Test-RetroflectInstallAddress -Executable $exe -Address $Address -SyntaxOnly:($Root -ne '/')
    }
    catch {
        $PSCmdlet.ThrowTerminatingError($_)
    }
    $runArgs = @('run', '--config', $ConfigPath)
    $changed = $false
    $configFile = $ConfigPath
    if (-not $windows) { $configFile = Join-RetroflectRootPath -Root $Root -SystemPath $ConfigPath }

    try {
        if (($Address -or $ShieldPort -or -not (Test-Path -LiteralPath $configFile)) -and
            $PSCmdlet.ShouldProcess($configFile, 'Update retroflect config file')) {
            if (Update-RetroflectConfigFile -Path $configFile -Address $Address -ShieldPort $ShieldPort) { $changed = $true }
        }

        if ($windows) {
            # An install of an earlier release started the engine with a scheduled task: the service replaces it.
            if (Remove-RetroflectBootTask -Cmdlet $PSCmdlet) { $changed = $true }
            if (Register-RetroflectService -Cmdlet $PSCmdlet -Executable $exe -ArgumentList @('--config', $ConfigPath)) { $changed = $true }
            if ($AllowFirewall) {
                $ruleAddresses = @(Get-RetroflectConfigAddress -Path $configFile) + @($Address) | Where-Object { $_ }
                if (-not $ruleAddresses) {
                    Write-Warning 'No reflect address is configured, so no firewall rule was created; run Install-Retroflect -AllowFirewall -Address ... to add one.'
                }
                elseif (Set-RetroflectFirewallRule -Cmdlet $PSCmdlet -Address $ruleAddresses) { $changed = $true }
            }
            $service = Get-RetroflectService
            if ($Start -and $null -ne $service -and [string]$service.Status -ne 'Running' -and $PSCmdlet.ShouldProcess("service $($script:ServiceName)", 'Start')) {
                Start-RetroflectService
            }
            $where = $script:ServiceName
            $kind = 'Service'
            $command = Get-RetroflectServiceCommand -Executable $exe -ArgumentList @('--config', $ConfigPath)
        }
        else {
            if ($AllowFirewall) {
                Write-Warning '-AllowFirewall applies to Windows Defender Firewall only; on Linux the engine installs the rules it needs itself.'
            }
            $unitPath = Join-RetroflectRootPath -Root $Root -SystemPath ('/etc/systemd/system/' + $script:UnitName)
            $text = New-RetroflectUnitText -Executable $exe -ArgumentList $runArgs
            $current = $null
            if (Test-Path -LiteralPath $unitPath) { $current = [System.IO.File]::ReadAllText($unitPath) }
            if ($current -ne $text -and $PSCmdlet.ShouldProcess($unitPath, 'Write systemd unit')) {
                $dir = Split-Path -Parent $unitPath
                if (-not (Test-Path -LiteralPath $dir)) { $null = New-Item -ItemType Directory -Path $dir -Force }
                [System.IO.File]::WriteAllText($unitPath, $text, $script:Utf8NoBom)
                Invoke-RetroflectSystemctl -Root $Root -ArgumentList @('daemon-reload')
                $changed = $true
            }
            $enableArgs = @('enable', $script:UnitName)
            if ($Start) { $enableArgs = @('enable', '--now', $script:UnitName) }
            if ($PSCmdlet.ShouldProcess($script:UnitName, ($enableArgs -join ' '))) {
                Invoke-RetroflectSystemctl -Root $Root -ArgumentList $enableArgs
            }
            $where = $unitPath
            $kind = 'SystemdUnit'
            $command = ($text -split "`n" | Where-Object { $_ -like 'ExecStart=*' }) -replace '^ExecStart=', ''
        }
    }
    catch {
        $PSCmdlet.ThrowTerminatingError($_)
    }
    # -WhatIf has said what would change; an Installation object would describe something that does not exist.
    if ($WhatIfPreference) { return }
    [pscustomobject]@{
        PSTypeName = 'Retroflect.Installation'
        Kind       = $kind
        Name       = $where
        Command    = $command
        ConfigPath = $ConfigPath
        ConfigFile = $configFile
        Changed    = $changed
        Root       = $Root
    }
}
