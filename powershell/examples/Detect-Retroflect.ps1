<#
.SYNOPSIS
Intune (or any MDM) detection script for retroflect.

.DESCRIPTION
Exit 0 and write one line to STDOUT when retroflect is installed to start at boot, its engine is running, and it
has every expected reflect address and shield port. Otherwise write nothing to STDOUT, explain on STDERR and exit 1,
so the remediation script (Deploy-Retroflect.ps1) runs. Runs as SYSTEM under Windows PowerShell 5.1.
Edit the expected values below to match the deployment.
#>
$ExpectedAddresses = @('192.0.2.1')
$ExpectedShieldPorts = @('8080/tcp')
$ModulePath = Join-Path $env:ProgramFiles 'Retroflect\Retroflect\Retroflect.psd1'

function Write-NotDetected([string]$Why) {
    [Console]::Error.WriteLine("retroflect not compliant: $Why")
    exit 1
}

try {
    Import-Module $ModulePath -ErrorAction Stop
}
catch {
    Write-NotDetected "the Retroflect module is not installed at $ModulePath"
}

$service = Get-Service -Name 'Retroflect' -ErrorAction SilentlyContinue
if ($null -eq $service) { Write-NotDetected 'the service Retroflect is missing' }

$status = Get-Retroflect -ErrorAction SilentlyContinue
if ($null -eq $status -or $status.State -ne 'running') { Write-NotDetected 'the engine is not running' }

$configured = @($status.ReflectAddresses | ForEach-Object { $_.ToString() })
foreach ($a in $ExpectedAddresses) {
    if ($configured -notcontains ([ipaddress]$a).ToString()) { Write-NotDetected "reflect address $a is not configured" }
}
$ports = @($status.ShieldPorts | ForEach-Object { '{0}/{1}' -f $_.Port, $_.Protocol })
foreach ($p in $ExpectedShieldPorts) {
    $wanted = @($p)
    if ($p -notmatch '/') { $wanted = @("$p/tcp", "$p/udp") }
    foreach ($w in $wanted) { if ($ports -notcontains $w) { Write-NotDetected "shield port $w is not configured" } }
}

Write-Output ("retroflect {0} running (pid {1}): {2}; shield {3}" -f $status.Version, $status.ProcessId, ($configured -join ', '), ($ports -join ', '))
exit 0
