<#
.SYNOPSIS
Intune detection script for retroflect @VERSION@: one line on stdout and exit 0 only when this version is installed
and its engine answers.

.DESCRIPTION
Upload it as the Win32 app's custom detection script (it stands alone: it needs no other file of the release).
When retroflect @VERSION@ is installed (engine in %ProgramFiles%\Retroflect\@VERSION@, module in
%ProgramFiles%\WindowsPowerShell\Modules\Retroflect\@VERSION@) and its engine answers on its pipe with that version,
it writes one line to stdout and exits 0. Otherwise it writes nothing to stdout, the reason to stderr, and exits 1.
On Linux (pwsh) the same with /opt/retroflect and /usr/local/share/powershell/Modules.

.PARAMETER Root
Linux only: the folder Install.ps1 -Root installed under.

.EXAMPLE
powershell.exe -NoProfile -ExecutionPolicy Bypass -File .\Detect.ps1
#>
[CmdletBinding()]
param(
    [string]$Root = '/'
)
$Version = '@VERSION@'
$ModuleVersion = $Version -replace '[-+].*$', ''
$ErrorActionPreference = 'Stop'

function Write-NotDetected([string]$Why) {
    [Console]::Error.WriteLine("retroflect $Version not detected: $Why")
    exit 1
}

$windows = ($PSVersionTable.PSEdition -eq 'Desktop') -or [bool]$IsWindows
if ($windows) {
    $exe = Join-Path $env:ProgramFiles "Retroflect\$Version\retroflect.exe"
    $manifest = Join-Path $env:ProgramFiles "WindowsPowerShell\Modules\Retroflect\$ModuleVersion\Retroflect.psd1"
}
else {
    $prefix = ''
    if ($Root -ne '/') { $prefix = $Root.TrimEnd('/') }
    $exe = "$prefix/opt/retroflect/$Version/retroflect"
    $manifest = "$prefix/usr/local/share/powershell/Modules/Retroflect/$ModuleVersion/Retroflect.psd1"
}
# The engine Install.ps1 starts listens on the default pipe; under a test root on the socket Install.ps1 -Root gives it.
$Pipe = 'retroflect'
if (-not $windows -and $Root -ne '/') { $Pipe = "$prefix/run/retroflect/retroflect.sock" }
if (-not (Test-Path -LiteralPath $exe -PathType Leaf)) { Write-NotDetected "the engine $exe is not installed" }
if (-not (Test-Path -LiteralPath $manifest -PathType Leaf)) { Write-NotDetected "the module $manifest is not installed" }
try { Import-Module $manifest -Force }
catch { Write-NotDetected "the module does not load: $($_.Exception.Message)" }

$status = Get-Retroflect -Pipe $Pipe -ErrorAction SilentlyContinue
if (-not $status) { Write-NotDetected "no engine answers on pipe '$Pipe'" }
if ($status.Version -ne $Version) { Write-NotDetected "the engine answering is version $($status.Version)" }
Write-Output ("retroflect {0} installed and running (pid {1})" -f $Version, $status.ProcessId)
exit 0
