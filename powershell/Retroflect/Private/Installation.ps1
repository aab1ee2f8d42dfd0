# Install-Retroflect / Uninstall-Retroflect helpers: the engine as a Windows scheduled task or a systemd unit.

# Windows: the scheduled task's folder and name. Linux: the systemd unit's name.
$script:TaskPath = '\Retroflect\'
$script:TaskName = 'Retroflect'
$script:UnitName = 'retroflect.service'
# Windows: the inbound Windows Defender Firewall rule of Install-Retroflect -AllowFirewall.
$script:FirewallRuleName = 'Retroflect-Reflected-In'

function Assert-RetroflectRoot {
    <#
    -Root redirects everything or nothing: on Windows the scheduled task and the firewall rule live in the system,
    not in a folder, so a -Root there would redirect only the config file. Returns the root resolved against $PWD.
    #>
    param($Cmdlet, [string]$Root, [bool]$Given)
    if ($Given -and (Test-RetroflectWindows)) {
        throw (New-RetroflectErrorRecord -Code 'E_INVALID_PARAMS' -TargetObject $Root `
            -Message '-Root is for Linux image trees; on Windows the scheduled task and the firewall rule cannot be redirected under another root.' `
            -Hint 'Leave out -Root on Windows.')
    }
    if ($Root -eq '/') { return $Root }
    return (Resolve-RetroflectUserPath $Cmdlet $Root)
}

function Join-RetroflectRootPath {
    # A system path (/etc/...) under -Root, so tests can install into a scratch folder.
    param([Parameter(Mandatory)][string]$Root, [Parameter(Mandatory)][string]$SystemPath)
    if ($Root -eq '/' -or -not $Root) { return $SystemPath }
    return (Join-Path $Root ($SystemPath.TrimStart('/')))
}

function Invoke-RetroflectSystemctl {
    # systemctl only acts on the real system; under any other -Root the call is reported and skipped.
    param([Parameter(Mandatory)][string]$Root, [Parameter(Mandatory)][string[]]$ArgumentList)
    if ($Root -ne '/') {
        Write-Verbose ("Skipped (root is {0}): systemctl {1}" -f $Root, ($ArgumentList -join ' '))
        return
    }
    $output = & systemctl @ArgumentList 2>&1
    if ($LASTEXITCODE -ne 0) {
        throw (New-RetroflectErrorRecord -Code 'PS_INSTALL_FAILED' -TargetObject $script:UnitName `
            -Message ("systemctl {0} failed (exit {1}): {2}" -f ($ArgumentList -join ' '), $LASTEXITCODE, (($output | Out-String).Trim())) `
            -Hint 'Check the unit with: systemctl status retroflect.service')
    }
}

function ConvertTo-RetroflectSystemdArgument {
    # systemd splits ExecStart= on spaces and honours double quotes; quote when needed.
    param([Parameter(Mandatory)][string]$Value)
    if ($Value -notmatch '[\s"\\]') { return $Value }
    return '"' + ($Value -replace '\\', '\\' -replace '"', '\"') + '"'
}

function New-RetroflectUnitText {
    param([Parameter(Mandatory)][string]$Executable, [Parameter(Mandatory)][string[]]$ArgumentList)
    $exec = (@($Executable) + $ArgumentList | ForEach-Object { ConvertTo-RetroflectSystemdArgument $_ }) -join ' '
    $lines = @(
        '# Installed by the Retroflect PowerShell module (Install-Retroflect). Remove with Uninstall-Retroflect.'
        '[Unit]'
        'Description=retroflect: reflect traffic sent to chosen addresses back into this host'
        'Wants=network-online.target'
        'After=network-online.target'
        # Never give up restarting (the back-off below keeps it from spinning); the default gives up after 5 in 10 s.
        'StartLimitIntervalSec=0'
        ''
        '[Service]'
        'Type=simple'
        ('ExecStart=' + $exec)
        # A failure (non-zero exit, a signal death) restarts it: after 5 s, growing in 5 steps to 2 min (systemd 254+;
        # older systemd logs that it ignores RestartSteps/RestartMaxDelaySec and restarts every 5 s).
        'Restart=on-failure'
        'RestartSec=5'
        'RestartSteps=5'
        'RestartMaxDelaySec=120'
        # systemctl stop sends SIGTERM: the engine drains, undoes its host changes and exits 0.
        'KillSignal=SIGTERM'
        'TimeoutStopSec=30'
        # Its output is the journal: event lines carry syslog priorities (<3>, <4>, <6>) and event IDs.
        'SyslogIdentifier=retroflect'
        ''
        '[Install]'
        'WantedBy=multi-user.target'
    )
    return (($lines -join "`n") + "`n")
}

function Update-RetroflectConfigFile {
    <#
    Adds addresses and ports to the config file the engine loads at start ({schemaVersion, reflectAddresses,
    shieldPorts}; src/config/config-file.ts), creating it if missing. The engine validates it strictly when it
    starts. Returns $true when the file changed. Written to a temp file first, then moved over, so a crash never
    leaves half a file.
    #>
    param([Parameter(Mandatory)][string]$Path, [string[]]$Address, [string[]]$ShieldPort)
    $addresses = New-Object 'System.Collections.Generic.List[string]'
    $ports = New-Object 'System.Collections.Generic.List[object]'
    $keys = @{}
    if (Test-Path -LiteralPath $Path) {
        try {
            $current = Get-Content -LiteralPath $Path -Raw -ErrorAction Stop | ConvertFrom-Json -ErrorAction Stop
        }
        catch {
            throw (New-RetroflectErrorRecord -Code 'E_CONFIG_INVALID' -TargetObject $Path -InnerException $_.Exception `
                -Message "The config file $Path could not be read: $($_.Exception.Message)" `
                -Hint 'Fix the file by hand or move it away; it was not changed.')
        }
        foreach ($a in $current.reflectAddresses) { $addresses.Add([string]$a) }
        foreach ($p in $current.shieldPorts) {
            $ports.Add([ordered]@{ port = [int]$p.port; protocol = [string]$p.protocol })
            $keys['{0}/{1}' -f $p.port, $p.protocol] = $true
        }
    }
    $changed = -not (Test-Path -LiteralPath $Path)
    foreach ($a in $Address) {
        $text = $a.Trim()
        if (-not $addresses.Contains($text)) { $addresses.Add($text); $changed = $true }
    }
    foreach ($given in $ShieldPort) {
        foreach ($spec in (ConvertTo-RetroflectPortSpec -Port $given)) {
            $key = '{0}/{1}' -f $spec.port, $spec.protocol
            if ($keys.ContainsKey($key)) { continue }
            $keys[$key] = $true
            $ports.Add($spec)
            $changed = $true
        }
    }
    if (-not $changed) { return $false }
    $content = [ordered]@{ schemaVersion = 1; reflectAddresses = $addresses.ToArray(); shieldPorts = $ports.ToArray() }
    $json = ConvertTo-Json -InputObject $content -Depth 5
    $dir = Split-Path -Parent $Path
    if (-not (Test-Path -LiteralPath $dir)) { $null = New-Item -ItemType Directory -Path $dir -Force }
    $temp = $Path + '.tmp-' + [guid]::NewGuid().ToString('N')
    [System.IO.File]::WriteAllText($temp, $json + "`n", $script:Utf8NoBom)
    Move-Item -LiteralPath $temp -Destination $Path -Force
    return $true
}

function Get-RetroflectConfigAddress {
    # The reflect addresses in a config file (none when it does not exist).
    param([Parameter(Mandatory)][string]$Path)
    if (-not (Test-Path -LiteralPath $Path)) { return @() }
    return @((Get-Content -LiteralPath $Path -Raw | ConvertFrom-Json).reflectAddresses | ForEach-Object { [string]$_ })
}

function Test-RetroflectInstallAddress {
    <#
    Install-Retroflect checks addresses before it writes anything, with the engine's own rules: the engine
    executable's dry run (`run --dry-run --no-config --reflect ...`, which changes nothing) validates them against
    this host. Under another -Root (an image for another machine) only the syntax is checked, since this host's
    addresses say nothing about that one. Throws Retroflect.InvalidAddress with the engine's message.
    #>
    param([Parameter(Mandatory)][string]$Executable, [string[]]$Address, [switch]$SyntaxOnly)
    foreach ($a in $Address) {
        $ip = $null
        if (-not [System.Net.IPAddress]::TryParse(([string]$a).Trim().Trim('[', ']'), [ref]$ip)) {
            throw (New-RetroflectErrorRecord -Code 'E_INVALID_ADDRESS' -TargetObject $a -Message "'$a' is not an IP address." `
                -Hint 'Give an IPv4 address in dotted form (192.0.2.1) or an IPv6 address (2001:db8::1); Test-ReflectAddress suggests one.')
        }
    }
    if ($SyntaxOnly -or -not $Address) { return }
    $argv = @('run', '--dry-run', '--no-config')
    foreach ($a in $Address) { $argv += @('--reflect', $a) }
    $output = & $Executable @argv 2>&1
    if ($LASTEXITCODE -eq 0) { return }
    $text = (($output | ForEach-Object { [string]$_ }) -join "`n").Trim()
    $message = ($text -split "`n" | Where-Object { $_ -like 'error:*' } | Select-Object -First 1) -replace '^error:\s*', '' -replace '\s*\[E_[A-Z_]+\]$', ''
    $hint = ($text -split "`n" | Where-Object { $_ -like 'hint:*' } | Select-Object -First 1) -replace '^hint:\s*', ''
    if (-not $message) { $message = $text }
    $code = 'E_INVALID_ADDRESS'
    $m = [regex]::Match($text, '\[(E_[A-Z_]+)\]')
    if ($m.Success) { $code = $m.Groups[1].Value }
    throw (New-RetroflectErrorRecord -Code $code -TargetObject $Address -Message $message -Hint $hint)
}

function Set-RetroflectFirewallRule {
    <#
    Windows: the one inbound Windows Defender Firewall rule that lets reflected connections in. Reflected packets
    arrive as inbound from the reflect address on a physical interface, so the firewall judges them like traffic
    from the network; the rule allows exactly the reflect addresses as remote addresses, all programs, every
    profile. The engine drops packets from the network that forge a reflect address as their source, so nothing
    else gets in through it. Created, or its remote addresses updated; returns $true when something changed.
    #>
    param([Parameter(Mandatory)]$Cmdlet, [Parameter(Mandatory)][string[]]$Address)
    $wanted = @($Address | ForEach-Object { ConvertTo-RetroflectCanonicalAddress $_ } | Sort-Object -Unique)
    $rule = Get-NetFirewallRule -Name $script:FirewallRuleName -ErrorAction SilentlyContinue
    if ($null -eq $rule) {
        if (-not $Cmdlet.ShouldProcess("Windows Defender Firewall rule $($script:FirewallRuleName) (inbound, allow from $($wanted -join ', '))", 'Create')) { return $false }
        $null = New-NetFirewallRule -Name $script:FirewallRuleName -DisplayName 'Retroflect: reflected connections' -Group 'Retroflect' `
            -Description 'Allows connections reflected by retroflect: inbound from its reflect addresses only. Installed by Install-Retroflect -AllowFirewall; removed by Uninstall-Retroflect.' `
            -Direction Inbound -Action Allow -Profile Any -RemoteAddress $wanted -ErrorAction Stop
        return $true
    }
    $current = @((Get-NetFirewallAddressFilter -AssociatedNetFirewallRule $rule -ErrorAction Stop).RemoteAddress | ForEach-Object { ConvertTo-RetroflectCanonicalAddress $_ } | Sort-Object -Unique)
    if (($current -join ',') -eq ($wanted -join ',')) { return $false }
    if (-not $Cmdlet.ShouldProcess("Windows Defender Firewall rule $($script:FirewallRuleName)", "Allow from $($wanted -join ', ')")) { return $false }
    Set-NetFirewallRule -Name $script:FirewallRuleName -RemoteAddress $wanted -ErrorAction Stop
    return $true
}

function Remove-RetroflectFirewallRule {
    # Windows: removes the rule of Install-Retroflect -AllowFirewall, if there is one.
    param([Parameter(Mandatory)]$Cmdlet)
    $rule = Get-NetFirewallRule -Name $script:FirewallRuleName -ErrorAction SilentlyContinue
    if ($null -eq $rule) { return }
    if ($Cmdlet.ShouldProcess("Windows Defender Firewall rule $($script:FirewallRuleName)", 'Remove')) {
        Remove-NetFirewallRule -Name $script:FirewallRuleName -ErrorAction Stop
    }
}
