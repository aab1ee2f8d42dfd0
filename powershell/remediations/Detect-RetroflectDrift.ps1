# Intune Remediations, detection script: is this machine's retroflect configuration the wanted one?
#
# Exit 0 with one line when the running engine reflects exactly the wanted addresses (each with exactly its port
# maps) and shields exactly the wanted ports, all saved in its config file; exit 1 with one line saying what
# differs otherwise (Remediate-RetroflectDrift.ps1 then makes it so). Entries set by managed policy (Group Policy,
# Intune settings: Source 'Policy') are neither wanted nor unwanted here. Uses the Retroflect module that the
# release's Install.ps1 installs; nothing else is needed beside this file. Runs in Windows PowerShell 5.1 and 7.
#
# Edit the block below, the same way in both scripts of the pair.

# ---- wanted state -------------------------------------------------------------------------------------------
# Each address as 'ADDRESS' or 'ADDRESS PORT=TARGET[/tcp|/udp] ...'; each port as '8080', '8080/tcp', '53/udp'.
$WantedAddresses = @('198.51.100.7')
$WantedShieldPorts = @()
# The engine's control pipe; empty for the default.
$Pipe = ''
# ---- end of wanted state ------------------------------------------------------------------------------------

$ErrorActionPreference = 'Stop'

function ConvertTo-DriftKey {
    # 'address' for an address, 'address port=target/proto' per map (both protocols written out), 'port/proto'.
    param([string]$Kind, [string]$Text)
    $parts = @($Text.Trim() -split '\s+' | Where-Object { $_ })
    if ($Kind -eq 'port') {
        if ($parts[0] -match '^(\d+)/(tcp|udp)$') { return @($parts[0].ToLowerInvariant()) }
        return @(('{0}/tcp' -f $parts[0]), ('{0}/udp' -f $parts[0]))
    }
    $address = ([System.Net.IPAddress]::Parse($parts[0].Trim('[', ']'))).ToString()
    $keys = @($address)
    foreach ($map in @($parts | Select-Object -Skip 1)) {
        if ($map -match '^(\d+)=(\d+)/(tcp|udp)$') { $keys += ('{0} {1}' -f $address, $map.ToLowerInvariant()) }
        else { $keys += ('{0} {1}/tcp' -f $address, $map); $keys += ('{0} {1}/udp' -f $address, $map) }
    }
    return $keys
}

try {
    Import-Module Retroflect -ErrorAction Stop
    $common = @{ ErrorAction = 'Stop' }
    if ($Pipe) { $common.Pipe = $Pipe }
    $wanted = @{}
    foreach ($a in $WantedAddresses) { foreach ($k in (ConvertTo-DriftKey 'address' $a)) { $wanted[$k] = $true } }
    foreach ($p in $WantedShieldPorts) { foreach ($k in (ConvertTo-DriftKey 'port' ([string]$p))) { $wanted[$k] = $true } }

    $have = @{}
    $policy = @{}
    $unsaved = New-Object 'System.Collections.Generic.List[string]'
    foreach ($a in @(Get-ReflectAddress @common)) {
        $address = $a.IPAddress.ToString()
        $keys = @($address) + @($a.PortMap | Where-Object { $null -ne $_ } | ForEach-Object { '{0} {1}' -f $address, $_.ToString() })
        foreach ($k in $keys) { if ($a.Source -eq 'Policy') { $policy[$k] = $true } else { $have[$k] = $true } }
        if ($a.Source -eq 'Temporary') { $unsaved.Add($address) }
    }
    foreach ($p in @(Get-ShieldPort @common)) {
        $k = '{0}/{1}' -f $p.Port, $p.Protocol
        if ($p.Source -eq 'Policy') { $policy[$k] = $true } else { $have[$k] = $true }
        if ($p.Source -eq 'Temporary') { $unsaved.Add($k) }
    }
    $missing = @($wanted.Keys | Where-Object { -not $have.ContainsKey($_) -and -not $policy.ContainsKey($_) } | Sort-Object)
    $extra = @($have.Keys | Where-Object { -not $wanted.ContainsKey($_) } | Sort-Object)
    $notSaved = @($unsaved | Where-Object { $wanted.ContainsKey($_) } | Sort-Object)
    if ($missing.Count -or $extra.Count -or $notSaved.Count) {
        $what = @()
        if ($missing.Count) { $what += 'missing ' + ($missing -join ', ') }
        if ($extra.Count) { $what += 'not wanted ' + ($extra -join ', ') }
        if ($notSaved.Count) { $what += 'not saved ' + ($notSaved -join ', ') }
        Write-Output ('Retroflect drift: ' + ($what -join '; '))
        exit 1
    }
    Write-Output ('Retroflect compliant: {0} address(es), {1} shield port(s) as wanted.' -f @($WantedAddresses).Count, @($WantedShieldPorts).Count)
    exit 0
}
catch {
    Write-Output ('Retroflect drift: cannot read the configuration: ' + $_.Exception.Message)
    exit 1
}
