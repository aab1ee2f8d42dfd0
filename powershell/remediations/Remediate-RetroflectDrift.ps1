# Intune Remediations, remediation script: make this machine's retroflect configuration the wanted one.
#
# Makes the running engine and its config file hold exactly the wanted reflect addresses (each with exactly its
# port maps) and shield ports, leaving entries set by managed policy as they are (Set-ReflectAddress,
# Set-ShieldPort: idempotent). Exit 0 with one line saying what changed; exit 1 with one line saying why not.
# Uses the Retroflect module that the release's Install.ps1 installs; nothing else is needed beside this file.
# Runs in Windows PowerShell 5.1 and 7.
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

try {
    Import-Module Retroflect -ErrorAction Stop
    $common = @{ ErrorAction = 'Stop'; Confirm = $false }
    if ($Pipe) { $common.Pipe = $Pipe }
    $addresses = @(foreach ($a in $WantedAddresses) {
        $parts = @(([string]$a).Trim() -split '\s+' | Where-Object { $_ })
        [pscustomobject]@{ IPAddress = $parts[0]; PortMap = @($parts | Select-Object -Skip 1) }
    })
    $changes = @()
    $changes += @(Set-ReflectAddress -Address $addresses @common)
    $changes += @(Set-ShieldPort -Port @($WantedShieldPorts) @common)
    if ($changes.Count) { Write-Output ('Retroflect remediated: ' + (($changes | ForEach-Object { $_.ToString() }) -join '; ')) }
    else { Write-Output 'Retroflect remediated: nothing to change.' }
    exit 0
}
catch {
    Write-Output ('Retroflect remediation failed: ' + $_.Exception.Message)
    exit 1
}
