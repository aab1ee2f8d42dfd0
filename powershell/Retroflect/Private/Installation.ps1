# Install-Retroflect / Uninstall-Retroflect helpers: the engine as a Windows scheduled task or a systemd unit.

# Windows: the scheduled task's folder and name. Linux: the systemd unit's name.
$script:TaskPath = '\Retroflect\'
$script:TaskName = 'Retroflect'
$script:UnitName = 'retroflect.service'

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
        ''
        '[Service]'
        'Type=simple'
        ('ExecStart=' + $exec)
        'Restart=on-failure'
        'RestartSec=5'
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
    foreach ($spec in $ShieldPort) {
        $m = [regex]::Match(([string]$spec).Trim().ToLowerInvariant(), '^(\d{1,5})(?:/(tcp|udp|both))?$')
        if (-not $m.Success -or [int]$m.Groups[1].Value -lt 1 -or [int]$m.Groups[1].Value -gt 65535) {
            throw (New-RetroflectErrorRecord -Code 'E_INVALID_PORT' -TargetObject $spec `
                -Message "'$spec' is not a shield port." -Hint 'Give a port from 1 to 65535, optionally with /tcp or /udp (8080, 8080/tcp, 53/udp).')
        }
        $protocols = @('tcp', 'udp')
        if ($m.Groups[2].Success -and $m.Groups[2].Value -ne 'both') { $protocols = @($m.Groups[2].Value) }
        foreach ($proto in $protocols) {
            $key = '{0}/{1}' -f [int]$m.Groups[1].Value, $proto
            if ($keys.ContainsKey($key)) { continue }
            $keys[$key] = $true
            $ports.Add([ordered]@{ port = [int]$m.Groups[1].Value; protocol = $proto })
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
