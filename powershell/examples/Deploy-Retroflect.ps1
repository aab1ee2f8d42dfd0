<#
.SYNOPSIS
Deployment / remediation script for retroflect (Intune remediation, ConfigMgr, or by hand as Administrator).

.DESCRIPTION
Makes the machine compliant with Detect-Retroflect.ps1: copies the module and the engine (retroflect.exe with
WinDivert.dll and WinDivert64.sys, shipped next to this script) to Program Files, installs the service, writes
the expected addresses and ports to the config file, starts the engine and checks it. Every step is idempotent,
so running it again on a compliant machine changes nothing. Exit 0 on success, 1 on failure (the error is on
STDERR). Runs under Windows PowerShell 5.1.
#>
[CmdletBinding(SupportsShouldProcess)]
param(
    [string[]]$Address = @('192.0.2.1'),
    [string[]]$ShieldPort = @('8080/tcp'),
    [string]$Source = $PSScriptRoot
)
$ErrorActionPreference = 'Stop'
try {
    $target = Join-Path $env:ProgramFiles 'Retroflect'
    $moduleDir = Join-Path $target 'Retroflect'
    if ($PSCmdlet.ShouldProcess($target, 'Copy module and engine')) {
        $null = New-Item -ItemType Directory -Path $target -Force
        # Only changed binaries are copied: a running engine holds retroflect.exe and WinDivert.dll open, and Windows
        # refuses to overwrite them, so an unchanged machine is left alone and a changed engine is stopped (gracefully,
        # so it undoes its host changes) before its files are replaced; the service starts the new one below.
        $changed = @(foreach ($file in @('retroflect.exe', 'WinDivert.dll', 'WinDivert64.sys')) {
            $to = Join-Path $moduleDir $file
            if (-not (Test-Path -LiteralPath $to) -or
                (Get-FileHash -LiteralPath (Join-Path $Source $file)).Hash -ne (Get-FileHash -LiteralPath $to).Hash) { $file }
        })
        if ($changed.Count -gt 0 -and (Test-Path -LiteralPath (Join-Path $moduleDir 'Retroflect.psd1'))) {
            Import-Module (Join-Path $moduleDir 'Retroflect.psd1') -Force
            Stop-Retroflect -Confirm:$false
        }
        Copy-Item -Path (Join-Path $Source 'Retroflect') -Destination $target -Recurse -Force
        foreach ($file in $changed) {
            Copy-Item -LiteralPath (Join-Path $Source $file) -Destination $moduleDir -Force
        }
    }
    Import-Module (Join-Path $moduleDir 'Retroflect.psd1') -Force

    # The service and the persisted config (idempotent); -Start starts the service if it is not running.
    $install = Install-Retroflect -Path (Join-Path $moduleDir 'retroflect.exe') -Address $Address -ShieldPort $ShieldPort -Start -Confirm:$false
    Write-Verbose ("Installation: {0} (changed: {1})" -f $install.Name, $install.Changed)

    # Wait for the engine to answer, then make sure the running engine has everything (a running engine that
    # predates this config gets the entries added live).
    $deadline = (Get-Date).AddSeconds(60)
    while ($null -eq (Get-Retroflect -ErrorAction SilentlyContinue)) {
        if ((Get-Date) -gt $deadline) { throw 'The retroflect engine did not start within 60 s; see the Application event log (source Retroflect) and C:\ProgramData\Retroflect\logs\engine.log.' }
        Start-Sleep -Seconds 1
    }
    $null = $Address | Add-ReflectAddress -Confirm:$false
    foreach ($spec in $ShieldPort) {
        $parts = $spec -split '/'
        $protocol = 'both'
        if ($parts.Count -gt 1) { $protocol = $parts[1] }
        $null = Add-ShieldPort -Port ([int]$parts[0]) -Protocol $protocol -Confirm:$false
    }
    Get-Retroflect | Format-List | Out-String | Write-Verbose
    exit 0
}
catch {
    [Console]::Error.WriteLine("retroflect deployment failed: $($_.Exception.Message)")
    if ($_.ErrorDetails -and $_.ErrorDetails.RecommendedAction) { [Console]::Error.WriteLine($_.ErrorDetails.RecommendedAction) }
    exit 1
}
