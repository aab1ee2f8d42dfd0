# Shared by Install.ps1 and Uninstall.ps1 of a retroflect release (dot-sourced; Detect.ps1 stands alone because Intune
# uploads detection scripts on their own). Windows PowerShell 5.1 and PowerShell 7 syntax only.
# Where things go is decided once, in Get-RetroflectDeployLayout; every other function takes that layout.

$script:VersionPattern = '^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$'
$script:DeployUtf8 = New-Object System.Text.UTF8Encoding($false)

function Invoke-RetroflectDeploy64 {
    <#
    A 32-bit PowerShell on 64-bit Windows (Intune's default agent, old GPO hosts) sees the 32-bit Program Files and
    registry: run the script again in the 64-bit host with the same parameters. Returns that run's exit code, or
    $null when this host is already the right one.
    #>
    param([Parameter(Mandatory)][string]$ScriptPath, [Parameter(Mandatory)][System.Collections.IDictionary]$Bound)
    if (-not $env:PROCESSOR_ARCHITEW6432 -or [Environment]::Is64BitProcess) { return $null }
    $host64 = Join-Path $env:WINDIR 'sysnative\WindowsPowerShell\v1.0\powershell.exe'
    $relaunch = @('-NoProfile', '-NonInteractive', '-ExecutionPolicy', 'Bypass', '-File', $ScriptPath)
    foreach ($key in $Bound.Keys) {
        $value = $Bound[$key]
        if ($value -is [System.Management.Automation.SwitchParameter]) { $relaunch += "-$($key):`$$([bool]$value)" }
        else { $relaunch += "-$key"; $relaunch += (@($value) -join ',') }
    }
    & $host64 @relaunch
    return $LASTEXITCODE
}

function Get-RetroflectDeployLayout {
    param([Parameter(Mandatory)][string]$Version, [string]$Root = '/')
    # PowerShell finds a module by name only in a folder named like its ModuleVersion, which has no pre-release label.
    $moduleVersion = $Version -replace '[-+].*$', ''
    $windows = ($PSVersionTable.PSEdition -eq 'Desktop') -or [bool]$IsWindows
    if ($windows) {
        $programFiles = $env:ProgramFiles
        $data = Join-Path $env:ProgramData 'Retroflect'
        return [pscustomobject]@{
            Windows    = $true
            Root       = '/'
            Version    = $Version
            ExeName    = 'retroflect.exe'
            AppDir     = Join-Path $programFiles 'Retroflect'
            VersionDir = Join-Path (Join-Path $programFiles 'Retroflect') $Version
            ModulesDir = Join-Path $programFiles 'WindowsPowerShell\Modules'
            ModuleDir  = Join-Path (Join-Path $programFiles 'WindowsPowerShell\Modules\Retroflect') $moduleVersion
            DataDir    = $data
            LogDir     = Join-Path $data 'logs'
            ConfigFile = Join-Path $data 'config.json'
            ConfigPath = Join-Path $data 'config.json'
        }
    }
    $under = {
        param([string]$Path)
        if ($Root -eq '/') { return $Path }
        return (Join-Path $Root $Path.TrimStart('/'))
    }
    return [pscustomobject]@{
        Windows    = $false
        Root       = $Root
        Version    = $Version
        ExeName    = 'retroflect'
        AppDir     = & $under '/opt/retroflect'
        VersionDir = & $under "/opt/retroflect/$Version"
        ModulesDir = & $under '/usr/local/share/powershell/Modules'
        ModuleDir  = & $under "/usr/local/share/powershell/Modules/Retroflect/$moduleVersion"
        DataDir    = & $under '/var/lib/retroflect'
        LogDir     = & $under '/var/log/retroflect'
        ConfigFile = & $under '/etc/retroflect/config.json'
        ConfigPath = '/etc/retroflect/config.json'
    }
}

function Test-RetroflectDeployElevated {
    param([Parameter(Mandatory)]$Layout)
    if ($Layout.Windows) {
        $principal = New-Object System.Security.Principal.WindowsPrincipal([System.Security.Principal.WindowsIdentity]::GetCurrent())
        return $principal.IsInRole([System.Security.Principal.WindowsBuiltInRole]::Administrator)
    }
    return ("$(& id -u)".Trim() -eq '0')
}

function Test-RetroflectReparsePoint([string]$Path) {
    # A symbolic link or junction: a planted one would make SYSTEM/root write wherever it points.
    $item = Get-Item -LiteralPath $Path -Force -ErrorAction SilentlyContinue
    return ($null -ne $item -and ($item.Attributes -band [System.IO.FileAttributes]::ReparsePoint))
}

function New-RetroflectDeployLog {
    <# A new log file (never an existing one, never through a link) in the admin-only log folder. #>
    param([Parameter(Mandatory)]$Layout, [Parameter(Mandatory)][string]$Action)
    foreach ($dir in @($Layout.DataDir, $Layout.LogDir)) {
        if ($Layout.Windows -or $dir -eq $Layout.LogDir) {
            if (Test-RetroflectReparsePoint $dir) { throw "$dir is a link; refusing to write the log through it" }
            if (-not (Test-Path -LiteralPath $dir)) { $null = New-Item -ItemType Directory -Path $dir -Force }
        }
    }
    if (-not $Layout.Windows) { & chmod 0750 $Layout.LogDir }
    $name = '{0}-{1}-{2}.log' -f $Action, (Get-Date -Format 'yyyyMMdd-HHmmss'), $PID
    $path = Join-Path $Layout.LogDir $name
    $stream = New-Object System.IO.FileStream($path, [System.IO.FileMode]::CreateNew, [System.IO.FileAccess]::Write, [System.IO.FileShare]::Read)
    $stream.Dispose()
    return [pscustomobject]@{ Path = $path }
}

function Write-RetroflectDeployLog {
    param([Parameter(Mandatory)]$Log, [Parameter(Mandatory)][string]$Message)
    $line = '{0} {1}' -f (Get-Date -Format 'yyyy-MM-ddTHH:mm:ss.fffzzz'), $Message
    [System.IO.File]::AppendAllText($Log.Path, $line + [Environment]::NewLine, $script:DeployUtf8)
    Write-Verbose $line
}

function Get-RetroflectInstalledVersion {
    <# Installed versions (engine folder with its executable and the module of the same version), newest first. #>
    param([Parameter(Mandatory)]$Layout)
    if (-not (Test-Path -LiteralPath $Layout.AppDir)) { return }
    $found = foreach ($dir in (Get-ChildItem -LiteralPath $Layout.AppDir -Directory -ErrorAction SilentlyContinue)) {
        if ($dir.Name -notmatch $script:VersionPattern) { continue }
        $exe = Join-Path $dir.FullName $Layout.ExeName
        $manifest = Join-Path (Join-Path (Join-Path $Layout.ModulesDir 'Retroflect') ($dir.Name -replace '[-+].*$', '')) 'Retroflect.psd1'
        if (-not (Test-Path -LiteralPath $exe -PathType Leaf) -or -not (Test-Path -LiteralPath $manifest -PathType Leaf)) { continue }
        [pscustomobject]@{
            Version    = $dir.Name
            SortKey    = [version]($dir.Name -replace '[-+].*$', '')
            Executable = $exe
            Manifest   = $manifest
        }
    }
    $found | Sort-Object SortKey, Version -Descending
}

function Test-RetroflectReleaseFiles {
    <# Every file SHA256SUMS lists is here with that checksum (a damaged download fails before anything changes). #>
    param([Parameter(Mandatory)][string]$From)
    $sums = Join-Path $From 'SHA256SUMS'
    if (-not (Test-Path -LiteralPath $sums -PathType Leaf)) { throw 'SHA256SUMS is missing beside Install.ps1; unpack the whole archive' }
    foreach ($line in [System.IO.File]::ReadAllLines($sums)) {
        if ($line -notmatch '^([0-9a-f]{64})  (.+)$') { continue }
        $file = Join-Path $From $Matches[2]
        if (-not (Test-Path -LiteralPath $file -PathType Leaf)) { throw "$($Matches[2]) is missing; unpack the whole archive" }
        $actual = (Get-FileHash -LiteralPath $file -Algorithm SHA256).Hash.ToLowerInvariant()
        if ($actual -ne $Matches[1]) { throw "$($Matches[2]) is damaged (its SHA-256 does not match SHA256SUMS); download the archive again" }
    }
}

function Copy-RetroflectRelease {
    <#
    Puts this release's files in place: the engine folder (executable, WinDivert files when present, licences,
    Uninstall.ps1 + Deployment.ps1 so the installation can always be removed) and the module's version folder, with
    InstalledEngine.txt telling the module where its engine is. A folder of the same version (a repair) is moved aside
    first and put back by Undo-RetroflectRelease.
    #>
    param([Parameter(Mandatory)]$Layout, [Parameter(Mandatory)][string]$From)
    $placed = [pscustomobject]@{
        Executable = Join-Path $Layout.VersionDir $Layout.ExeName
        VersionDir = $Layout.VersionDir
        ModuleDir  = $Layout.ModuleDir
        Backups    = @()
        Created    = @()
    }
    foreach ($dir in @($Layout.VersionDir, $Layout.ModuleDir)) {
        if (Test-Path -LiteralPath $dir) {
            $aside = $dir + '.previous-' + [guid]::NewGuid().ToString('N').Substring(0, 8)
            Move-Item -LiteralPath $dir -Destination $aside
            $placed.Backups += [pscustomobject]@{ Path = $dir; Aside = $aside }
        }
        $null = New-Item -ItemType Directory -Path $dir -Force
        $placed.Created += $dir
    }
    $files = @($Layout.ExeName, 'LICENSE', 'THIRD-PARTY-NOTICES.txt', 'Uninstall.ps1', 'Deployment.ps1', 'SHA256SUMS',
        'WinDivert.dll', 'WinDivert64.sys', 'WinDivert-LICENSE.txt')
    foreach ($name in $files) {
        $src = Join-Path $From $name
        if (Test-Path -LiteralPath $src -PathType Leaf) { Copy-Item -LiteralPath $src -Destination $Layout.VersionDir }
    }
    if (-not $Layout.Windows) { & chmod 0755 $placed.Executable }
    Copy-Item -Path (Join-Path (Join-Path (Join-Path $From 'Retroflect') (Split-Path -Leaf $Layout.ModuleDir)) '*') -Destination $Layout.ModuleDir -Recurse
    [System.IO.File]::WriteAllText((Join-Path $Layout.ModuleDir 'InstalledEngine.txt'), $placed.Executable, $script:DeployUtf8)
    return $placed
}

function Undo-RetroflectRelease {
    param([Parameter(Mandatory)]$Placed)
    foreach ($dir in $Placed.Created) { Remove-Item -LiteralPath $dir -Recurse -Force -ErrorAction SilentlyContinue }
    foreach ($b in $Placed.Backups) { Move-Item -LiteralPath $b.Aside -Destination $b.Path }
}

function Complete-RetroflectRelease {
    param($Placed)
    if ($null -eq $Placed) { return }
    foreach ($b in $Placed.Backups) { Remove-Item -LiteralPath $b.Aside -Recurse -Force -ErrorAction SilentlyContinue }
}

function Register-RetroflectBoot {
    <# The service (Windows) or systemd unit (Linux) for this executable, through the module's Install-Retroflect. #>
    param([Parameter(Mandatory)]$Layout, [Parameter(Mandatory)][string]$Executable, [string[]]$Address, [string[]]$ShieldPort, [string]$Pipe)
    $params = @{ Path = $Executable; ConfigPath = $Layout.ConfigPath; Confirm = $false }
    if ($Address) { $params.Address = $Address }
    if ($ShieldPort) { $params.ShieldPort = $ShieldPort }
    if (-not $Layout.Windows) { $params.Root = $Layout.Root }
    return (Install-Retroflect @params)
}

function Start-RetroflectDeployed {
    <#
    Starts the installed engine the way boot will (the service Retroflect; the systemd unit), or directly under a
    test root, and waits until its pipe answers with the expected version. Throws with the reason otherwise.
    #>
    param([Parameter(Mandatory)]$Layout, [Parameter(Mandatory)][string]$Executable, [Parameter(Mandatory)][string]$Pipe,
        [Parameter(Mandatory)][string]$ExpectedVersion, [int]$TimeoutSeconds = 60)
    if ($Layout.Windows) {
        # A running service is restarted, so the command line Install-Retroflect just set is the one that runs.
        $service = Get-Service -Name 'Retroflect' -ErrorAction Stop
        if ($service.Status -eq 'Running') { Restart-Service -Name 'Retroflect' -ErrorAction Stop }
        else { Start-Service -Name 'Retroflect' -ErrorAction Stop }
    }
    elseif ($Layout.Root -eq '/') {
        $out = & systemctl restart retroflect.service 2>&1
        if ($LASTEXITCODE -ne 0) { throw "systemctl restart retroflect.service failed: $out" }
    }
    else {
        $null = Start-Retroflect -Path $Executable -ConfigPath $Layout.ConfigFile -Pipe $Pipe -TimeoutSeconds $TimeoutSeconds -Confirm:$false
    }
    $deadline = (Get-Date).AddSeconds($TimeoutSeconds)
    do {
        $status = Get-Retroflect -Pipe $Pipe -ErrorAction SilentlyContinue
        if ($status -and $status.Version -eq $ExpectedVersion) { return $status }
        Start-Sleep -Milliseconds 250
    } while ((Get-Date) -lt $deadline)
    if ($status) { throw "the engine answering on pipe '$Pipe' is version $($status.Version), not $ExpectedVersion" }
    throw "the engine did not answer on pipe '$Pipe' within $TimeoutSeconds s"
}

function Clear-RetroflectDriverService {
    <#
    Windows upgrade, after the old engine stopped: the WinDivert driver service entry of the old version's files is
    removed, so the new version's driver loads cleanly, but only when no program holds a WinDivert handle (asked
    through WinDivert's REFLECT layer by this release's executable, 'driver release'); otherwise, and for another
    tool's entry, it is left alone (docs/windows.md). Never fails the install: the outcome goes to the log.
    #>
    param(
        [Parameter(Mandatory)]$Layout,
        [Parameter(Mandatory)][string]$Executable,
        [Parameter(Mandatory)][string]$OldVersionDir,
        $Log
    )
    if (-not $Layout.Windows) { return }
    $lines = & $Executable driver release --json --windivert-dir $OldVersionDir 2>$null
    $outcome = $null
    try { $outcome = (($lines | Out-String).Trim()) | ConvertFrom-Json } catch { $outcome = $null }
    if ($Log) {
        $said = "not checked (exit $LASTEXITCODE); left as it is"
        if ($null -ne $outcome -and $null -ne $outcome.PSObject.Properties['detail']) { $said = [string]$outcome.detail }
        Write-RetroflectDeployLog -Log $Log -Message ('WinDivert driver service: ' + $said)
    }
}

function Remove-RetroflectOldVersion {
    <# Removes every installed version but -Keep. Returns $true when some file was in use (a reboot removes it). #>
    param([Parameter(Mandatory)]$Layout, [Parameter(Mandatory)][string]$Keep, $Log)
    $pending = $false
    foreach ($parent in @($Layout.AppDir, (Join-Path $Layout.ModulesDir 'Retroflect'))) {
        if (-not (Test-Path -LiteralPath $parent)) { continue }
        foreach ($dir in (Get-ChildItem -LiteralPath $parent -Directory)) {
            if ($dir.Name -eq $Keep -or $dir.Name -eq ($Keep -replace '[-+].*$', '')) { continue }
            try {
                Remove-Item -LiteralPath $dir.FullName -Recurse -Force
                if ($Log) { Write-RetroflectDeployLog -Log $Log -Message "removed $($dir.FullName)" }
            }
            catch {
                if (-not $Layout.Windows) { throw }
                $pending = $true
                Register-RetroflectDeleteAtReboot -Path $dir.FullName
                if ($Log) { Write-RetroflectDeployLog -Log $Log -Message "in use, removed at the next reboot: $($dir.FullName) ($($_.Exception.Message))" }
            }
        }
    }
    return $pending
}

function Register-RetroflectDeleteAtReboot {
    <# Windows: what is still in use (a loaded WinDivert driver file) is deleted by the session manager at the next boot. #>
    param([Parameter(Mandatory)][string]$Path)
    if (-not ('Retroflect.Deploy.NativeMethods' -as [type])) {
        Add-Type -Namespace 'Retroflect.Deploy' -Name 'NativeMethods' -MemberDefinition @'
[System.Runtime.InteropServices.DllImport("kernel32.dll", SetLastError = true, CharSet = System.Runtime.InteropServices.CharSet.Unicode)]
public static extern bool MoveFileEx(string existingFileName, string newFileName, int flags);
'@
    }
    $delayUntilReboot = 4
    $items = @(Get-ChildItem -LiteralPath $Path -Recurse -Force -ErrorAction SilentlyContinue | Sort-Object { $_.FullName.Length } -Descending)
    foreach ($item in $items + @(Get-Item -LiteralPath $Path -Force)) {
        $null = [Retroflect.Deploy.NativeMethods]::MoveFileEx($item.FullName, $null, $delayUntilReboot)
    }
}
