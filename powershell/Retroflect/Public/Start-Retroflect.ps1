function Start-Retroflect {
    <#
    .SYNOPSIS
    Starts the retroflect engine and waits until it answers.

    .DESCRIPTION
    Starts `retroflect run` in the background with the persisted config (or
    -ConfigPath, or -NoConfig) plus any -Address and -ShieldPort given for this
    run, waits until its control pipe answers, and returns its status. If an
    engine already answers on the pipe, nothing is started: the given addresses
    and ports are added to it for this run (temporary) and its status is
    returned, so the command is idempotent.

    Before starting, it checks what would make the engine fail: the session
    must be elevated (Retroflect.NotAdmin), the executable must exist
    (Retroflect.ExecutableNotFound), and on Windows WinDivert.dll and
    WinDivert64.sys must be next to it (Retroflect.WinDivertNotFound). If the
    engine exits during start-up, the error says why (the engine's error code
    and last message). The engine runs detached: in its own session on Linux
    (closing the terminal does not stop it), with no handle of the caller (a
    script run by Intune, a scheduled task or CI does not wait for it). Its
    console output is in the engine's data folder, which only
    administrators/root may write: %ProgramData%\Retroflect\logs or
    /var/lib/retroflect/logs, as <pipe>.out.log and <pipe>.err.log on Linux; on
    Windows the engine writes <pipe>.log itself (--log-file). When the service
    Retroflect is installed (Install-Retroflect), Start-Retroflect without
    -Pipe starts the service instead of a second copy. If an engine already
    runs, -ConfigPath, -NoConfig, -Device, -WinDivertPath and -Path cannot
    apply and a warning says so. For a permanent engine use Install-Retroflect.

    .PARAMETER Address
    Reflect addresses for this run, added to those in the config file.

    .PARAMETER ShieldPort
    Shield ports for this run: 8080 (TCP and UDP), '8080/tcp', '53/udp'.

    .PARAMETER Path
    The engine executable. Default: retroflect(.exe) next to the module or
    in its bin folder, else on PATH.

    .PARAMETER ConfigPath
    The config file to load and save changes to. Default: the engine's
    (%ProgramData%\Retroflect\config.json or /etc/retroflect/config.json).

    .PARAMETER NoConfig
    Use no config file: only -Address and -ShieldPort, and changes are not
    saved.

    .PARAMETER Device
    Linux: the engine's device: the ebpf backend's veth (default rflx0;
    its peer adds a "p"), or the TUN device (default rflct0).

    .PARAMETER Backend
    Linux: the packet backend: auto (the default: ebpf where its program
    loads, else tun, with the reason in the log and in
    BackendInfo.ebpfUnavailable), ebpf (reflects in the kernel) or tun.

    .PARAMETER PassThru
    Return the engine's status. Without it nothing is output, as
    Start-Service does.

    .PARAMETER WinDivertPath
    Windows: the folder holding WinDivert.dll and WinDivert64.sys, if not
    next to the executable.

    .PARAMETER TimeoutSeconds
    How long to wait for the engine to answer (default 30).

    .PARAMETER Pipe
    The control pipe to serve: a name (default 'retroflect') or, on Linux,
    an absolute socket path.

    .EXAMPLE
    Start-Retroflect -Address 192.0.2.1 -ShieldPort 8080

    Starts the engine reflecting 192.0.2.1 and shielding port 8080 (TCP and
    UDP) for this run.

    .EXAMPLE
    Start-Retroflect -Path C:\Tools\retroflect\retroflect.exe -WhatIf

    Windows only. Shows the command line that would be run.

    .EXAMPLE
    Start-Retroflect -NoConfig -Address 2001:db8::1 -Pipe test1 -PassThru

    Windows only (on Linux one engine runs per host, as the shield rules are
    per host). A second engine on its own pipe that uses no config file;
    returns its status.

    .INPUTS
    System.String. Reflect addresses by value or by the property name Address.

    .OUTPUTS
    None, or Retroflect.Status with -PassThru.
    .LINK
    Stop-Retroflect

    .LINK
    Get-Retroflect

    .LINK
    Install-Retroflect

    .LINK
    about_Retroflect
    #>
    [CmdletBinding(SupportsShouldProcess, ConfirmImpact = 'Low', DefaultParameterSetName = 'Config', PositionalBinding = $false)]
    [OutputType('Retroflect.Status')]
    param(
        [Parameter(Position = 0, ValueFromPipeline, ValueFromPipelineByPropertyName)]
        [Alias('ReflectAddress', 'IPAddress')]
        [string[]]$Address,

        [string[]]$ShieldPort,

        [Alias('FilePath')]
        [string]$Path,

        [Parameter(ParameterSetName = 'Config')]
        [string]$ConfigPath,

        [Parameter(Mandatory, ParameterSetName = 'NoConfig')]
        [switch]$NoConfig,

        [ValidatePattern('^[A-Za-z0-9_.-]{1,15}$')]
        [string]$Device,

        [ValidateSet('tun', 'ebpf', 'auto')]
        [string]$Backend,

        [string]$WinDivertPath,

        [ValidateRange(1, 600)]
        [int]$TimeoutSeconds = 30,

        [switch]$PassThru,

        [Parameter(ValueFromPipelineByPropertyName)]

        [Alias('PipeName')]
        [string]$Pipe
    )
    begin {
        $addresses = New-Object 'System.Collections.Generic.List[string]'
    }
    process {
        foreach ($a in $Address) { if ($a -and -not $addresses.Contains($a.Trim())) { $addresses.Add($a.Trim()) } }
    }
    end {
        try {
            $resolved = Resolve-RetroflectPipe -Pipe $Pipe
            # One parser for shield ports everywhere: a bad one is refused here, before anything starts.
            foreach ($s in $ShieldPort) { $null = ConvertTo-RetroflectPortSpec -Port $s }
            $ConfigPath = Resolve-RetroflectUserPath $PSCmdlet $ConfigPath
            $WinDivertPath = Resolve-RetroflectUserPath $PSCmdlet $WinDivertPath
        }
        catch {
            $PSCmdlet.ThrowTerminatingError($_)
        }

        # Installed as the service (Windows) and asked for the default engine: start the service, not a second copy.
        $service = Get-RetroflectService
        if ($null -ne $service -and -not $Pipe -and [string]$service.Status -ne 'Running' -and
            $PSCmdlet.ShouldProcess("service $($service.Name)", 'Start')) {
            try { Start-RetroflectService -TimeoutSeconds $TimeoutSeconds }
            catch { $PSCmdlet.ThrowTerminatingError($_) }
        }

        # Already running: add this run's entries to it (temporary, as `run` does) and report it.
        $running = $null
        try { $running = Invoke-RetroflectRequest -Pipe $Pipe -Method 'status' -ConnectTimeoutMs 500 } catch { $running = $null }
        if ($null -ne $running) {
            Write-Verbose "An engine (pid $($running.pid)) already answers on $($resolved.Display); not starting another."
            $ignored = @('ConfigPath', 'NoConfig', 'Device', 'WinDivertPath', 'Path') | Where-Object { $PSBoundParameters.ContainsKey($_) }
            if ($ignored) {
                $config = $running.configPath
                if (-not $config) { $config = 'none (-NoConfig)' }
                Write-Warning ("An engine already runs on {0} (pid {1}, config file: {2}); {3} apply only when starting one and were ignored. Run Stop-Retroflect first to start it with them." -f `
                    $resolved.Display, $running.pid, $config, (($ignored | ForEach-Object { '-' + $_ }) -join ', '))
            }
            $status = Invoke-RetroflectSession $PSCmdlet $Pipe {
                param($connection)
                $target = "running engine on $($resolved.Display)"
                if ($addresses.Count -gt 0 -and $PSCmdlet.ShouldProcess($target, 'Add reflect addresses ' + ($addresses -join ', ') + ' (temporary)')) {
                    $r = Invoke-RetroflectMethod -Connection $connection -Method 'address.add' -Params @{ addresses = $addresses.ToArray(); temporary = $true } -TargetObject $addresses.ToArray()
                    foreach ($w in $r.warnings) { Write-Warning ('{0}: {1}' -f $w.address, $w.message) }
                }
                if ($ShieldPort -and $PSCmdlet.ShouldProcess($target, 'Add shield ports ' + ($ShieldPort -join ', ') + ' (temporary)')) {
                    $null = Invoke-RetroflectMethod -Connection $connection -Method 'shield.add' -Params @{ ports = [string[]]$ShieldPort; temporary = $true } -TargetObject $ShieldPort
                }
                $persisted = Get-RetroflectPersistedSet -Connection $connection
                ConvertTo-RetroflectStatus -Status (Invoke-RetroflectMethod -Connection $connection -Method 'status') -Pipe $Pipe -Persisted $persisted
            }
            if ($PassThru) { $status }
            return
        }

        # -WhatIf shows the command even where the executable or backend is missing; the checks come after it.
        $exe = $null
        $notReady = $null
        try {
            $exe = Resolve-RetroflectExecutable -Path (Resolve-RetroflectUserPath $PSCmdlet $Path)
            Test-RetroflectBackend -Executable $exe -WinDivertPath $WinDivertPath
        }
        catch {
            $notReady = $_
            if (-not $exe) { $exe = 'retroflect' }
        }

        $argv = New-Object 'System.Collections.Generic.List[string]'
        $argv.Add('run')
        if ($Pipe) { $argv.Add('--pipe'); $argv.Add($Pipe) }
        if ($NoConfig) { $argv.Add('--no-config') }
        elseif ($ConfigPath) { $argv.Add('--config'); $argv.Add($ConfigPath) }
        if ($Device) { $argv.Add('--device'); $argv.Add($Device) }
        if ($Backend) { $argv.Add('--backend'); $argv.Add($Backend) }
        if ($WinDivertPath) { $argv.Add('--windivert-dir'); $argv.Add($WinDivertPath) }
        foreach ($a in $addresses) { $argv.Add('--reflect'); $argv.Add($a) }
        foreach ($s in $ShieldPort) { $argv.Add('--shield'); $argv.Add([string]$s) }
        $commandLine = ConvertTo-RetroflectArgumentString -ArgumentList $argv.ToArray()

        if (-not $PSCmdlet.ShouldProcess("$exe $commandLine", 'Start retroflect engine')) { return }
        if ($null -ne $notReady) { $PSCmdlet.ThrowTerminatingError($notReady) }

        if (-not (Test-RetroflectElevated)) {
            $PSCmdlet.ThrowTerminatingError((New-RetroflectErrorRecord -Code 'E_NOT_ADMIN' -TargetObject $exe `
                -Message 'Starting the retroflect engine needs an elevated session (Administrator on Windows, root on Linux).' `
                -Hint 'Run PowerShell as Administrator (or with sudo), or install the engine as a service with Install-Retroflect.'))
        }

        try {
            $logs = Initialize-RetroflectLog -PipeName $resolved.Name
            $process = Start-RetroflectDetached -Executable $exe -ArgumentList $argv.ToArray() -Log $logs
        }
        catch {
            $PSCmdlet.ThrowTerminatingError((New-RetroflectErrorRecord -Code 'PS_ENGINE_EXITED' -TargetObject $exe -InnerException $_.Exception `
                -Message "Could not start $($exe): $($_.Exception.Message)" -Hint 'Check that the file is the retroflect engine and is executable.'))
        }

        $deadline = [DateTime]::UtcNow.AddSeconds($TimeoutSeconds)
        while ($true) {
            $status = $null
            try { $status = Invoke-RetroflectRequest -Pipe $Pipe -Method 'status' -ConnectTimeoutMs 500 } catch { $status = $null }
            if ($null -ne $status -and $status.state -eq 'running') {
                if ($PassThru) {
                    Invoke-RetroflectSession $PSCmdlet $Pipe {
                        param($connection)
                        $persisted = Get-RetroflectPersistedSet -Connection $connection
                        ConvertTo-RetroflectStatus -Status (Invoke-RetroflectMethod -Connection $connection -Method 'status') -Pipe $Pipe -Persisted $persisted
                    }
                }
                return
            }
            if ($process.HasExited) {
                $exitCode = $process.ExitCode
                $lastLines = ''
                if (Test-Path -LiteralPath $logs.Err) { $lastLines = ((Get-Content -LiteralPath $logs.Err -Tail 5) -join ' ').Trim() }
                # The engine names its error code in its last message ("... [E_BACKEND_FAILED]"); else the exit code says.
                $code = $null
                $m = [regex]::Match($lastLines, '\[(E_[A-Z_]+)\]')
                if ($m.Success) { $code = $m.Groups[1].Value }
                if (-not $code) { $code = $script:ExitCodeToErrorCode[[int]$exitCode] }
                if (-not $code) { $code = 'PS_ENGINE_EXITED' }
                $PSCmdlet.ThrowTerminatingError((New-RetroflectErrorRecord -Code $code -TargetObject $exe `
                    -Message ("The retroflect engine exited during start-up with code {0}: {1}" -f $exitCode, $lastLines) `
                    -Hint "Fix what the message says; the engine's output is in $(@($logs.Err, $logs.Out) | Select-Object -Unique)."))
            }
            if ([DateTime]::UtcNow -gt $deadline) {
                $PSCmdlet.ThrowTerminatingError((New-RetroflectErrorRecord -Code 'E_TIMEOUT' -TargetObject $exe `
                    -Message "The retroflect engine (pid $($process.Id)) did not answer on $($resolved.Display) within $TimeoutSeconds s." `
                    -Hint "It is still running; look at $($logs.Err), then stop it with Stop-Process -Id $($process.Id) or wait and run Get-Retroflect."))
            }
            Start-Sleep -Milliseconds 250
        }
    }
}
