# Platform facts the module needs: which OS, whether this session is elevated, where things live by default.
# PowerShell 5.1 has no $IsWindows/$IsLinux variables, so they are derived here once.

function Test-RetroflectWindows {
    [CmdletBinding()]
    [OutputType([bool])]
    param()
    # $IsWindows exists only on PowerShell 6+; Windows PowerShell 5.1 (Desktop edition) is always Windows.
    if ($PSVersionTable.PSEdition -eq 'Desktop') { return $true }
    return [bool]$IsWindows
}

function Test-RetroflectElevated {
    [CmdletBinding()]
    [OutputType([bool])]
    param()
    if (Test-RetroflectWindows) {
        $identity = [System.Security.Principal.WindowsIdentity]::GetCurrent()
        $principal = New-Object System.Security.Principal.WindowsPrincipal($identity)
        return $principal.IsInRole([System.Security.Principal.WindowsBuiltInRole]::Administrator)
    }
    # .NET has no geteuid(); `id -u` is in coreutils on every Linux. A process's user does not change: asked once.
    if ($null -eq $script:IsRoot) {
        $uid = (& id -u) 2>$null
        $script:IsRoot = ("$uid".Trim() -eq '0')
    }
    return $script:IsRoot
}

$script:IsRoot = $null

# Default pipe name served by `retroflect run` (docs/protocol.md, "Transport and pipe naming").
$script:DefaultPipeName = 'retroflect'
# Linux: folder of the engine's Unix sockets; a pipe name N maps to "$LinuxSocketDir/N.sock".
$script:LinuxSocketDir = '/run/retroflect'
# Pipe names the engine accepts: letters, digits, '.', '_', '-'; 1 to 64 characters.
$script:PipeNamePattern = '^[A-Za-z0-9._-]{1,64}$'

function Get-RetroflectDefaultConfigPath {
    [CmdletBinding()]
    [OutputType([string])]
    param()
    if (Test-RetroflectWindows) {
        return (Join-Path ([Environment]::GetFolderPath('CommonApplicationData')) 'Retroflect\config.json')
    }
    return '/etc/retroflect/config.json'
}

function Get-RetroflectRuntimePath {
    # Where the single-file engine writes its native FFI module before loading it (src/platform/koffi-bundled.ts).
    [CmdletBinding()]
    [OutputType([string])]
    param()
    if (Test-RetroflectWindows) {
        return (Join-Path ([Environment]::GetFolderPath('CommonApplicationData')) 'Retroflect\runtime')
    }
    return '/var/lib/retroflect/runtime'
}

function Get-RetroflectTokenPath {
    # Windows only: the engine writes a fresh access token here at every start (docs/protocol.md, "Access").
    [CmdletBinding()]
    [OutputType([string])]
    param([Parameter(Mandatory)][string]$PipeName)
    $dir = Join-Path ([Environment]::GetFolderPath('CommonApplicationData')) 'Retroflect'
    return (Join-Path $dir ($PipeName + '.token'))
}
