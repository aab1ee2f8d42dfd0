# Shared by Install.ps1 and Uninstall.ps1 of a retroflect release (dot-sourced; Detect.ps1 stands alone because Intune
# uploads detection scripts on their own). Windows PowerShell 5.1 and PowerShell 7 syntax only.
# Where things go is decided once, in Get-RetroflectDeployLayout; every other function takes that layout.

$script:VersionPattern = '^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$'
$script:DeployUtf8 = New-Object System.Text.UTF8Encoding($false)
# The exit codes of Install.ps1 / Uninstall.ps1 (the table in docs/windows.md and the scripts' help says the same).
# 1638 is Windows Installer's "another version of this product is already installed", which admins know from MSI.
$script:DeployExitCode = @{ Success = 0; Failed = 1; NewerInstalled = 1638; RebootPending = 3010 }
# Deploy logs: one file per action and day, capped; a full file is moved to <name>.old (one kept) and a new one begun.
$script:DeployLogMaxBytes = 1MB
$script:DeployLogKeepDays = 30
# Intune's "Collect diagnostics" takes this folder (and no folder of ours); it exists where Intune manages the device.
$script:IntuneLogDir = 'Microsoft\IntuneManagementExtension\Logs'
# How long Install.ps1 waits for an installed engine that is starting (a GPO startup script runs during boot).
$script:DeployHealthWaitSeconds = 30
# TEST HOOKS, never set on a real host: RETROFLECT_TEST_DEPLOY_FAIL_AFTER=<step> makes Install.ps1 fail right after
# that step (Get-RetroflectDeployStep lists them; 'answer' fails as the engine not answering in time does), so the
# tests prove the rollback after each step; RETROFLECT_TEST_DEPLOY_AS_32BIT=1 makes this 64-bit host act as the 32-bit
# host of a 64-bit Windows (it relaunches itself through %WINDIR%\sysnative).
$script:DeploySteps = @('stop', 'copy', 'register', 'firewall', 'start', 'answer')

function Get-RetroflectDeployStep { $script:DeploySteps }

function Import-RetroflectDeployModule {
    <#
    Imports the Retroflect module from -Manifest as the only one in this session (another version loaded earlier, in
    an admin's console, would answer the same command names), and keeps it for Get-RetroflectDeployModule.
    #>
    param([Parameter(Mandatory)][string]$Manifest)
    Remove-Module Retroflect -ErrorAction SilentlyContinue
    $script:DeployModule = Import-Module $Manifest -Force -PassThru
}

function Get-RetroflectDeployModule {
    <# The module Import-RetroflectDeployModule loaded: the deploy scripts use a few of its private functions. #>
    if ($null -eq $script:DeployModule) { throw 'the Retroflect module is not loaded (Import-RetroflectDeployModule)' }
    return $script:DeployModule
}

function Get-RetroflectDeploy64Relaunch {
    <#
    A 32-bit PowerShell on 64-bit Windows (Intune's agent, old GPO hosts) sees the 32-bit Program Files and registry:
    returns the 64-bit host and the arguments that run the script again with the same parameters, or $null when this
    host is already the right one. The caller runs it at script level (its stdout is the script's; its exit code is
    the script's). Windows PowerShell 5.1's -File binds a switch given by name only ('-Switch'; '-Switch:$true' is a
    string there and fails to convert), so a set switch goes as its name and a cleared one is left out (the same as
    not given); a list goes as 'a,b', which Install.ps1 splits.
    #>
    param([Parameter(Mandatory)][string]$ScriptPath, [Parameter(Mandatory)][System.Collections.IDictionary]$Bound)
    $wow64 = [bool]$env:PROCESSOR_ARCHITEW6432 -and -not [Environment]::Is64BitProcess
    if (-not $wow64 -and $env:RETROFLECT_TEST_DEPLOY_AS_32BIT -ne '1') { return $null }
    $arguments = @('-NoProfile', '-NonInteractive', '-ExecutionPolicy', 'Bypass', '-File', $ScriptPath)
    $arguments += @(ConvertTo-RetroflectDeployArgument -Bound $Bound)
    return [pscustomobject]@{
        Host      = Join-Path $env:WINDIR 'sysnative\WindowsPowerShell\v1.0\powershell.exe'
        Arguments = $arguments
    }
}

function ConvertTo-RetroflectDeployArgument {
    <# Bound parameters as powershell.exe -File arguments every version binds (see Get-RetroflectDeploy64Relaunch). #>
    param([Parameter(Mandatory)][System.Collections.IDictionary]$Bound)
    foreach ($key in @($Bound.Keys | Sort-Object)) {
        $value = $Bound[$key]
        if ($value -is [System.Management.Automation.SwitchParameter] -or $value -is [bool]) {
            if ([bool]$value) { "-$key" }
            continue
        }
        "-$key"
        (@($value) -join ',')
    }
}

function Compare-RetroflectDeployVersion {
    <# -1, 0 or 1 as version A is older than, the same as or newer than B (1.2.3-rc1 is older than 1.2.3). #>
    param([Parameter(Mandatory)][string]$A, [Parameter(Mandatory)][string]$B)
    $numeric = ([version]($A -replace '[-+].*$', '')).CompareTo([version]($B -replace '[-+].*$', ''))
    if ($numeric -ne 0) { return [Math]::Sign($numeric) }
    $labelA = ($A -replace '^[^-]*-?', '') -replace '\+.*$', ''
    $labelB = ($B -replace '^[^-]*-?', '') -replace '\+.*$', ''
    if ($A -notmatch '-') { $labelA = '' }
    if ($B -notmatch '-') { $labelB = '' }
    if ($labelA -eq $labelB) { return 0 }
    if (-not $labelA) { return 1 }
    if (-not $labelB) { return -1 }
    return [Math]::Sign([string]::CompareOrdinal($labelA, $labelB))
}

function Get-RetroflectDeployLayout {
    param([Parameter(Mandatory)][string]$Version, [string]$Root = '/')
    # PowerShell finds a module by name only in a folder named like its ModuleVersion, which has no pre-release label.
    $moduleVersion = $Version -replace '[-+].*$', ''
    $windows = ($PSVersionTable.PSEdition -eq 'Desktop') -or [bool]$IsWindows
    if ($windows) {
        $programFiles = $env:ProgramFiles
        $data = Join-Path $env:ProgramData 'Retroflect'
        # Deploy logs go where Intune's diagnostics collection finds them on a device Intune manages, else beside the
        # engine's log (docs/windows.md, "Deployment logs").
        $logDir = Join-Path $env:ProgramData $script:IntuneLogDir
        if (-not (Test-Path -LiteralPath $logDir -PathType Container)) { $logDir = Join-Path $data 'logs' }
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
            LogDir     = $logDir
            RuntimeDir = Join-Path $data 'runtime'
            ConfigFile = Join-Path $data 'config.json'
            ConfigPath = Join-Path $data 'config.json'
            Pipe       = 'retroflect'
        }
    }
    $under = {
        param([string]$Path)
        if ($Root -eq '/') { return $Path }
        return (Join-Path $Root $Path.TrimStart('/'))
    }
    # The systemd unit's engine listens on the default socket; an engine under a test root on a socket of that root.
    $pipe = 'retroflect'
    if ($Root -ne '/') { $pipe = & $under '/run/retroflect/retroflect.sock' }
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
        RuntimeDir = $null
        ConfigFile = & $under '/etc/retroflect/config.json'
        ConfigPath = '/etc/retroflect/config.json'
        Pipe       = $pipe
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

function Open-RetroflectDeployLog {
    <#
    Today's log of this action (retroflect-<action>-<yyyyMMdd>.log), appended to, never through a link. A file past
    the size cap is moved to <name>.old (replacing the one before) and a new one begun; day files of this action
    older than the kept days are removed.
    #>
    param([Parameter(Mandatory)]$Layout, [Parameter(Mandatory)][string]$Action)
    foreach ($dir in @($Layout.DataDir, $Layout.LogDir)) {
        if ($Layout.Windows -or $dir -eq $Layout.LogDir) {
            if (Test-RetroflectReparsePoint $dir) { throw "$dir is a link; refusing to write the log through it" }
            if (-not (Test-Path -LiteralPath $dir)) { $null = New-Item -ItemType Directory -Path $dir -Force }
        }
    }
    if (-not $Layout.Windows) { & chmod 0750 $Layout.LogDir }
    $prefix = "retroflect-$Action-"
    $path = Join-Path $Layout.LogDir ('{0}{1}.log' -f $prefix, (Get-Date -Format 'yyyyMMdd'))
    if (Test-RetroflectReparsePoint $path) { throw "$path is a link; refusing to write the log through it" }
    $oldest = (Get-Date).Date.AddDays(-$script:DeployLogKeepDays)
    $dayFiles = @(Get-ChildItem -LiteralPath $Layout.LogDir -Filter "$prefix*.log*" -File -ErrorAction SilentlyContinue)
    foreach ($file in $dayFiles) {
        if ($file.LastWriteTime -lt $oldest) {
            Remove-Item -LiteralPath $file.FullName -Force -ErrorAction SilentlyContinue
        }
    }
    $log = [pscustomobject]@{ Path = $path }
    Limit-RetroflectDeployLog -Log $log
    return $log
}

function Limit-RetroflectDeployLog {
    <# Moves the day file to <name>.old when -Adding more bytes would take it past the cap. #>
    param([Parameter(Mandatory)]$Log, [int]$Adding = 1)
    $file = Get-Item -LiteralPath $Log.Path -ErrorAction SilentlyContinue
    if ($null -eq $file -or $file.Length -eq 0 -or $file.Length + $Adding -le $script:DeployLogMaxBytes) { return }
    Move-Item -LiteralPath $Log.Path -Destination ($Log.Path + '.old') -Force
}

function Write-RetroflectDeployLog {
    param([Parameter(Mandatory)]$Log, [Parameter(Mandatory)][string]$Message)
    $line = '{0} [{1}] {2}' -f (Get-Date -Format 'yyyy-MM-ddTHH:mm:ss.fffzzz'), $PID, $Message
    $text = $line + [Environment]::NewLine
    Limit-RetroflectDeployLog -Log $Log -Adding $script:DeployUtf8.GetByteCount($text)
    [System.IO.File]::AppendAllText($Log.Path, $text, $script:DeployUtf8)
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
    <# Every file SHA256SUMS lists is in -From with that checksum (a damaged download fails before anything changes). #>
    param([Parameter(Mandatory)][string]$From)
    $sums = Join-Path $From 'SHA256SUMS'
    if (-not (Test-Path -LiteralPath $sums -PathType Leaf)) {
        throw 'SHA256SUMS is missing beside Install.ps1; unpack the whole archive'
    }
    foreach ($line in [System.IO.File]::ReadAllLines($sums)) {
        if ($line -notmatch '^([0-9a-f]{64})  (.+)$') { continue }
        $name = $Matches[2]
        $want = $Matches[1]
        $file = Join-Path $From $name
        if (-not (Test-Path -LiteralPath $file -PathType Leaf)) { throw "$name is missing; unpack the whole archive" }
        $actual = (Get-FileHash -LiteralPath $file -Algorithm SHA256).Hash.ToLowerInvariant()
        if ($actual -ne $want) {
            throw "$name is damaged (its SHA-256 does not match SHA256SUMS); download the archive again"
        }
    }
}

# What goes to the engine's folder (when the release has it); the module's files go to its version folder.
$script:EngineFiles = @('retroflect.exe', 'retroflect', 'LICENSE', 'THIRD-PARTY-NOTICES.txt', 'Uninstall.ps1',
    'Deployment.ps1', 'WinDivert.dll', 'WinDivert64.sys', 'WinDivert-LICENSE.txt')

function Get-RetroflectReleasePlacement {
    <# Each file of the release that is installed: its name in SHA256SUMS, its SHA-256, where it comes from and goes. #>
    param([Parameter(Mandatory)]$Layout, [Parameter(Mandatory)][string]$From)
    $modulePrefix = 'Retroflect/' + (Split-Path -Leaf $Layout.ModuleDir) + '/'
    foreach ($line in [System.IO.File]::ReadAllLines((Join-Path $From 'SHA256SUMS'))) {
        if ($line -notmatch '^([0-9a-f]{64})  (.+)$') { continue }
        $name = $Matches[2]
        $hash = $Matches[1]
        if ($script:EngineFiles -contains $name) { $target = Join-Path $Layout.VersionDir $name }
        elseif ($name.StartsWith($modulePrefix)) {
            $relative = $name.Substring($modulePrefix.Length) -replace '/', [System.IO.Path]::DirectorySeparatorChar
            $target = Join-Path $Layout.ModuleDir $relative
        }
        else { continue }
        [pscustomobject]@{ Name = $name; Hash = $hash; Source = (Join-Path $From $name); Target = $target }
    }
}

function Copy-RetroflectRelease {
    <#
    Puts this release's files in place: the engine folder (executable, WinDivert files when present, licences,
    Uninstall.ps1 + Deployment.ps1 so the installation can always be removed, SHA256SUMS) and the module's version
    folder, with InstalledEngine.txt telling the module where its engine is; what it copies is unblocked. A folder of
    the same version (a repair) is moved aside first and put back by Undo-RetroflectRelease.
    #>
    param([Parameter(Mandatory)]$Layout, [Parameter(Mandatory)][string]$From)
    $placed = [pscustomobject]@{
        Executable = Join-Path $Layout.VersionDir $Layout.ExeName
        VersionDir = $Layout.VersionDir
        ModuleDir  = $Layout.ModuleDir
        Backups    = @()
        Created    = @()
        Unblocked  = 0
    }
    foreach ($dir in @($Layout.VersionDir, $Layout.ModuleDir)) {
        if (Test-Path -LiteralPath $dir) {
            $aside = $dir + '.previous-' + [guid]::NewGuid().ToString('N').Substring(0, 8)
            Move-Item -LiteralPath $dir -Destination $aside
            $placed.Backups += [pscustomobject]@{ Path = $dir; Aside = $aside }
        }
        # Parents made here (the first install) go again on a rollback.
        $missing = @()
        $parent = Split-Path -Parent $dir
        while ($parent -and -not (Test-Path -LiteralPath $parent)) {
            $missing += $parent
            $parent = Split-Path -Parent $parent
        }
        $null = New-Item -ItemType Directory -Path $dir -Force
        $placed.Created += $dir
        $placed.Created += $missing
    }
    $copied = @()
    foreach ($file in @(Get-RetroflectReleasePlacement -Layout $Layout -From $From)) {
        $parent = Split-Path -Parent $file.Target
        if (-not (Test-Path -LiteralPath $parent)) { $null = New-Item -ItemType Directory -Path $parent -Force }
        Copy-Item -LiteralPath $file.Source -Destination $file.Target
        $copied += $file.Target
    }
    Copy-Item -LiteralPath (Join-Path $From 'SHA256SUMS') -Destination $Layout.VersionDir
    if (-not $Layout.Windows) { & chmod 0755 $placed.Executable }
    [System.IO.File]::WriteAllText((Join-Path $Layout.ModuleDir 'InstalledEngine.txt'), $placed.Executable, $script:DeployUtf8)
    $placed.Unblocked = Unblock-RetroflectDeployFile -Layout $Layout -Path $copied
    return $placed
}

function Unblock-RetroflectDeployFile {
    <#
    Windows: removes the "downloaded from the Internet" mark (the Zone.Identifier stream a browser or Expand-Archive of
    a downloaded zip leaves) from the copied files, so 5.1's RemoteSigned policy loads the module without asking.
    Asked only of a file that has the stream: where streams do not exist (Wine's file system) there is nothing to do.
    Returns how many files it unblocked.
    #>
    param([Parameter(Mandatory)]$Layout, [string[]]$Path)
    if (-not $Layout.Windows -or -not (Get-Command Unblock-File -ErrorAction SilentlyContinue)) { return 0 }
    $count = 0
    foreach ($p in $Path) {
        $zone = $null
        try { $zone = Get-Item -LiteralPath $p -Stream 'Zone.Identifier' -ErrorAction Stop } catch { $zone = $null }
        if ($null -eq $zone) { continue }
        Unblock-File -LiteralPath $p -ErrorAction Stop
        $count++
    }
    return $count
}

function Undo-RetroflectRelease {
    param([Parameter(Mandatory)]$Placed)
    foreach ($dir in $Placed.Created) {
        if (Test-Path -LiteralPath $dir) { Remove-Item -LiteralPath $dir -Recurse -Force }
    }
    foreach ($b in $Placed.Backups) { Move-Item -LiteralPath $b.Aside -Destination $b.Path }
}

function Complete-RetroflectRelease {
    param($Placed)
    if ($null -eq $Placed) { return }
    foreach ($b in $Placed.Backups) { Remove-Item -LiteralPath $b.Aside -Recurse -Force -ErrorAction SilentlyContinue }
}

function Get-RetroflectDeployHealth {
    <#
    Why this version is not installed as Install.ps1 would leave it, or $null when it is: every installed file
    matches this release's SHA256SUMS, the boot registration runs its executable with the config, the config already
    has the given addresses and ports, the firewall rule is there when asked for, and the engine answers with this
    version (an engine still starting is waited for; a GPO startup script runs during boot). Changes nothing.
    #>
    param([Parameter(Mandatory)]$Layout, [Parameter(Mandatory)][string]$From, [string[]]$Address, [string[]]$ShieldPort,
        [switch]$AllowFirewall)
    $exe = Join-Path $Layout.VersionDir $Layout.ExeName
    if ((Get-RetroflectBootExecutable -Layout $Layout) -ne $exe) {
        return 'the boot registration does not run this version'
    }
    foreach ($file in @(Get-RetroflectReleasePlacement -Layout $Layout -From $From)) {
        if (-not (Test-Path -LiteralPath $file.Target -PathType Leaf)) { return "$($file.Target) is missing" }
        $hash = (Get-FileHash -LiteralPath $file.Target -Algorithm SHA256).Hash.ToLowerInvariant()
        if ($hash -ne $file.Hash) { return "$($file.Target) differs from the release" }
    }
    if (-not (Test-Path -LiteralPath $Layout.ConfigFile -PathType Leaf)) { return 'there is no config file' }
    if ($Address -or $ShieldPort) {
        # The module's own config update, on a copy: would it change anything?
        $name = 'retroflect-config-' + [guid]::NewGuid().ToString('N') + '.json'
        $copy = Join-Path ([System.IO.Path]::GetTempPath()) $name
        Copy-Item -LiteralPath $Layout.ConfigFile -Destination $copy
        $update = { param($p, $a, $s) Update-RetroflectConfigFile -Path $p -Address $a -ShieldPort $s }
        try { $changes = & (Get-RetroflectDeployModule) $update $copy $Address $ShieldPort }
        finally { Remove-Item -LiteralPath $copy -Force -ErrorAction SilentlyContinue }
        if ($changes) { return 'the config lacks some of the given addresses or ports' }
    }
    if ($AllowFirewall -and $Layout.Windows -and $null -eq (Get-RetroflectDeployFirewallRule)) {
        return 'the firewall rule is missing'
    }
    $deadline = (Get-Date).AddSeconds($script:DeployHealthWaitSeconds)
    do {
        $status = Get-Retroflect -Pipe $Layout.Pipe -ErrorAction SilentlyContinue
        if ($status) { break }
        if ($Layout.Windows) {
            $service = Get-Service -Name 'Retroflect' -ErrorAction SilentlyContinue
            if ($null -eq $service -or [string]$service.Status -notin @('StartPending', 'Running')) { break }
        }
        else { break }
        Start-Sleep -Milliseconds 500
    } while ((Get-Date) -lt $deadline)
    if (-not $status) { return 'the engine does not answer' }
    if ($status.Version -ne $Layout.Version) { return "the engine answering is version $($status.Version)" }
    return $null
}

function Get-RetroflectBootExecutable {
    <# The executable the boot registration runs (the service's ImagePath; the unit's ExecStart), or $null. #>
    param([Parameter(Mandatory)]$Layout)
    if ($Layout.Windows) {
        if (-not (Get-Service -Name 'Retroflect' -ErrorAction SilentlyContinue)) { return $null }
        return (& (Get-RetroflectDeployModule) { Get-RetroflectInstalledExecutable })
    }
    $unit = Get-RetroflectUnitPath -Layout $Layout
    if (-not (Test-Path -LiteralPath $unit -PathType Leaf)) { return $null }
    foreach ($line in [System.IO.File]::ReadAllLines($unit)) {
        if ($line -match '^ExecStart="([^"]+)"') { return $Matches[1] }
        if ($line -match '^ExecStart=(\S+)') { return $Matches[1] }
    }
    return $null
}

function Get-RetroflectUnitPath {
    param([Parameter(Mandatory)]$Layout)
    if ($Layout.Root -eq '/') { return '/etc/systemd/system/retroflect.service' }
    return (Join-Path $Layout.Root 'etc/systemd/system/retroflect.service')
}

function Get-RetroflectDeployFirewallRule {
    <# Windows: the rule of Install-Retroflect -AllowFirewall as [name, remote addresses], or $null. #>
    $name = & (Get-RetroflectDeployModule) { $script:FirewallRuleName }
    $rule = Get-NetFirewallRule -Name $name -ErrorAction SilentlyContinue
    if ($null -eq $rule) { return $null }
    $filter = Get-NetFirewallAddressFilter -AssociatedNetFirewallRule $rule
    return [pscustomobject]@{ Name = $name; RemoteAddress = @($filter.RemoteAddress) }
}

function Register-RetroflectBoot {
    <# The service (Windows) or systemd unit (Linux) for this executable, through the module's Install-Retroflect. #>
    param([Parameter(Mandatory)]$Layout, [Parameter(Mandatory)][string]$Executable, [string[]]$Address,
        [string[]]$ShieldPort, [switch]$AllowFirewall)
    $params = @{ Path = $Executable; ConfigPath = $Layout.ConfigPath; Confirm = $false }
    if ($Address) { $params.Address = $Address }
    if ($ShieldPort) { $params.ShieldPort = $ShieldPort }
    if ($AllowFirewall) { $params.AllowFirewall = $true }
    if (-not $Layout.Windows) { $params.Root = $Layout.Root }
    return (Install-Retroflect @params)
}

function Save-RetroflectDeployState {
    <# What Install.ps1 may change, as it is before it starts, for Restore-RetroflectDeployState. #>
    param([Parameter(Mandatory)]$Layout)
    $config = $null
    if (Test-Path -LiteralPath $Layout.ConfigFile -PathType Leaf) {
        $config = [System.IO.File]::ReadAllBytes($Layout.ConfigFile)
    }
    $configDirExisted = Test-Path -LiteralPath (Split-Path -Parent $Layout.ConfigFile)
    $firewall = $null
    if ($Layout.Windows) { $firewall = Get-RetroflectDeployFirewallRule }
    $running = Get-Retroflect -Pipe $Layout.Pipe -ErrorAction SilentlyContinue
    return [pscustomobject]@{
        Config          = $config
        ConfigDirExists = $configDirExisted
        BootExecutable  = Get-RetroflectBootExecutable -Layout $Layout
        Firewall        = $firewall
        Running         = $running
        RuntimeExists   = ($Layout.RuntimeDir -and (Test-Path -LiteralPath $Layout.RuntimeDir))
    }
}

function Restore-RetroflectDeployState {
    <#
    Puts back what Install.ps1 changed since Save-RetroflectDeployState: stops the engine it started (through the boot
    registration, then any process still running the new executable, so an engine that did not answer goes too), the
    boot registration, the firewall rule, the files and module (Undo-RetroflectRelease), config.json and the engine's
    runtime folder, and starts the engine that ran before. Every step is tried; the failures are returned.
    #>
    [CmdletBinding()]
    param([Parameter(Mandatory)]$Layout, [Parameter(Mandatory)]$State, $Placed, [string[]]$StartedExecutable, $Log)
    $try = {
        param([string]$What, [scriptblock]$Action)
        try { & $Action; if ($Log) { Write-RetroflectDeployLog -Log $Log -Message "rollback: $What" } }
        catch { $script:RollbackFailures += "$($What): $($_.Exception.Message)" }
    }
    $script:RollbackFailures = @()
    & $try 'stopped the engine this run started' {
        Stop-RetroflectDeployedEngine -Layout $Layout -Executable $StartedExecutable
    }
    & $try 'boot registration as before' {
        $now = Get-RetroflectBootExecutable -Layout $Layout
        if ($State.BootExecutable -and $now -ne $State.BootExecutable) {
            $params = @{ Path = $State.BootExecutable; ConfigPath = $Layout.ConfigPath; Confirm = $false }
            if (-not $Layout.Windows) { $params.Root = $Layout.Root }
            $null = Install-Retroflect @params
        }
        elseif (-not $State.BootExecutable -and $now) {
            $params = @{ ConfigPath = $Layout.ConfigPath; Confirm = $false }
            if (-not $Layout.Windows) { $params.Root = $Layout.Root }
            Uninstall-Retroflect @params
        }
    }
    if ($Layout.Windows) {
        & $try 'firewall rule as before' {
            $now = Get-RetroflectDeployFirewallRule
            $name = & (Get-RetroflectDeployModule) { $script:FirewallRuleName }
            if ($null -eq $State.Firewall -and $null -ne $now) { Remove-NetFirewallRule -Name $name -ErrorAction Stop }
            elseif ($null -ne $State.Firewall -and $null -eq $now) {
                $cmdlet = $PSCmdlet
                $set = { param($c, $a) Set-RetroflectFirewallRule -Cmdlet $c -Address $a }
                $null = & (Get-RetroflectDeployModule) $set $cmdlet $State.Firewall.RemoteAddress
            }
            elseif ($null -ne $State.Firewall -and
                (@($now.RemoteAddress) -join ',') -ne (@($State.Firewall.RemoteAddress) -join ',')) {
                Set-NetFirewallRule -Name $name -RemoteAddress $State.Firewall.RemoteAddress -ErrorAction Stop
            }
        }
    }
    if ($Placed) { & $try 'engine and module files as before' { Undo-RetroflectRelease -Placed $Placed } }
    & $try 'config.json as before' {
        if ($null -ne $State.Config) { [System.IO.File]::WriteAllBytes($Layout.ConfigFile, $State.Config) }
        elseif (Test-Path -LiteralPath $Layout.ConfigFile) {
            Remove-Item -LiteralPath $Layout.ConfigFile -Force
            $dir = Split-Path -Parent $Layout.ConfigFile
            if (-not $State.ConfigDirExists -and -not (Get-ChildItem -LiteralPath $dir -Force)) {
                Remove-Item -LiteralPath $dir -Force
            }
        }
    }
    if ($Layout.RuntimeDir -and -not $State.RuntimeExists) {
        & $try 'runtime folder as before' { Remove-RetroflectDeployTree -Path $Layout.RuntimeDir }
    }
    if ($State.Running -and $State.BootExecutable) {
        & $try "engine $($State.Running.Version) running again" {
            $null = Start-RetroflectDeployed -Layout $Layout -Executable $State.BootExecutable `
                -ExpectedVersion $State.Running.Version
        }
    }
    return $script:RollbackFailures
}

function Remove-RetroflectDeployTree {
    <# Removes a folder; a process that just ended may hold a file a moment longer, so it tries again briefly. #>
    param([Parameter(Mandatory)][string]$Path)
    for ($try = 1; (Test-Path -LiteralPath $Path); $try++) {
        try { Remove-Item -LiteralPath $Path -Recurse -Force -ErrorAction Stop }
        catch {
            if ($try -ge 20) { throw }
            Start-Sleep -Milliseconds 500
        }
    }
}

function Stop-RetroflectDeployedEngine {
    <#
    Stops the engine through what runs it (the service; the systemd unit; under a test root the pipe), then ends any
    process still running one of -Executable: an engine that never answered is stopped too.
    #>
    param([Parameter(Mandatory)]$Layout, [string[]]$Executable)
    if ($Layout.Windows) {
        $service = Get-Service -Name 'Retroflect' -ErrorAction SilentlyContinue
        if ($service -and [string]$service.Status -ne 'Stopped') {
            Stop-Service -Name 'Retroflect' -Force -ErrorAction SilentlyContinue
            $null = & (Get-RetroflectDeployModule) { Wait-RetroflectServiceStatus -Status 'Stopped' -TimeoutSeconds 60 }
        }
    }
    elseif ($Layout.Root -eq '/') { $null = & systemctl stop retroflect.service 2>&1 }
    else { Stop-Retroflect -Pipe $Layout.Pipe -Confirm:$false -ErrorAction SilentlyContinue }
    foreach ($exe in @($Executable | Where-Object { $_ })) {
        foreach ($p in @(Get-Process -ErrorAction SilentlyContinue | Where-Object { $_.Path -eq $exe })) {
            Stop-Process -Id $p.Id -Force -ErrorAction SilentlyContinue
            $null = $p.WaitForExit(30000)
        }
    }
}

function Start-RetroflectDeployed {
    <#
    Starts the installed engine the way boot will (the service Retroflect; the systemd unit), or directly under a
    test root, and waits until it answers with the expected version. Throws with the reason otherwise. -Step is
    called between starting and waiting (Install.ps1's test hook).
    #>
    param([Parameter(Mandatory)]$Layout, [Parameter(Mandatory)][string]$Executable,
        [Parameter(Mandatory)][string]$ExpectedVersion, [int]$TimeoutSeconds = 60, [scriptblock]$Step = {})
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
        $dir = Split-Path -Parent $Layout.Pipe
        # The engine serves its socket only from a folder of root's with mode 0700.
        if (-not (Test-Path -LiteralPath $dir)) { $null = New-Item -ItemType Directory -Path $dir -Force }
        & chmod 0700 $dir
        $null = Start-Retroflect -Path $Executable -ConfigPath $Layout.ConfigFile -Pipe $Layout.Pipe `
            -TimeoutSeconds $TimeoutSeconds -Confirm:$false
    }
    & $Step 'start'
    $deadline = (Get-Date).AddSeconds($TimeoutSeconds)
    $status = $null
    # TEST HOOK (see the top of this file), for the install's start only (the one given -Step), never a rollback's:
    # the engine started but the wait ends as if the time were up.
    $hooked = $PSBoundParameters.ContainsKey('Step') -and $env:RETROFLECT_TEST_DEPLOY_FAIL_AFTER -eq 'answer'
    if (-not $hooked) {
        do {
            $status = Get-Retroflect -Pipe $Layout.Pipe -ErrorAction SilentlyContinue
            if ($status -and $status.Version -eq $ExpectedVersion) { return $status }
            Start-Sleep -Milliseconds 250
        } while ((Get-Date) -lt $deadline)
    }
    if ($status) {
        throw "the engine answering on pipe '$($Layout.Pipe)' is version $($status.Version), not $ExpectedVersion"
    }
    throw "the engine did not answer on pipe '$($Layout.Pipe)' within $TimeoutSeconds s"
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

function Get-RetroflectOlderVersionFolder {
    <# The engine and module folders of versions older than -Version, complete or not. #>
    param([Parameter(Mandatory)]$Layout, [Parameter(Mandatory)][string]$Version)
    foreach ($parent in @($Layout.AppDir, (Join-Path $Layout.ModulesDir 'Retroflect'))) {
        foreach ($dir in @(Get-ChildItem -LiteralPath $parent -Directory -ErrorAction SilentlyContinue)) {
            if ($dir.Name -match $script:VersionPattern -and (Compare-RetroflectDeployVersion -A $dir.Name -B $Version) -lt 0) {
                $dir.FullName
            }
        }
    }
}

function Remove-RetroflectOldVersion {
    <#
    Removes the installed versions older than -Keep (and, with -IncludeNewer, the newer ones: a downgrade the admin
    asked for with -AllowDowngrade). Returns $true when some file was in use (a reboot removes it).
    #>
    param([Parameter(Mandatory)]$Layout, [Parameter(Mandatory)][string]$Keep, [switch]$IncludeNewer, $Log)
    $pending = $false
    foreach ($parent in @($Layout.AppDir, (Join-Path $Layout.ModulesDir 'Retroflect'))) {
        if (-not (Test-Path -LiteralPath $parent)) { continue }
        foreach ($dir in (Get-ChildItem -LiteralPath $parent -Directory)) {
            if ($dir.Name -notmatch $script:VersionPattern) { continue }
            $order = Compare-RetroflectDeployVersion -A $dir.Name -B $Keep
            if ($dir.Name -eq $Keep -or $dir.Name -eq ($Keep -replace '[-+].*$', '') -or $order -eq 0) { continue }
            if ($order -gt 0 -and -not $IncludeNewer) { continue }
            try {
                Remove-Item -LiteralPath $dir.FullName -Recurse -Force
                if ($Log) { Write-RetroflectDeployLog -Log $Log -Message "removed $($dir.FullName)" }
            }
            catch {
                if (-not $Layout.Windows) { throw }
                $pending = $true
                $why = $_.Exception.Message
                $unscheduled = @(Register-RetroflectDeleteAtReboot -Path $dir.FullName)
                if ($Log) { Write-RetroflectDeployLog -Log $Log -Message "in use, removed at the next reboot: $($dir.FullName) ($why)" }
                if ($Log -and $unscheduled.Count -gt 0) {
                    Write-RetroflectDeployLog -Log $Log -Message ("could not be scheduled for removal at the next reboot, " +
                        "so the next run removes them: $($unscheduled -join '; ')")
                }
            }
        }
    }
    return $pending
}

function Register-RetroflectDeleteAtReboot {
    <#
    Windows: what is still in use (a loaded WinDivert driver file) is deleted by the session manager at the next boot.
    Returns what could not be scheduled (path and Win32 error); the caller logs it. Install.ps1 removes what is left
    on its next run (the second-run check removes older versions without touching the engine).
    #>
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
        if (-not [Retroflect.Deploy.NativeMethods]::MoveFileEx($item.FullName, $null, $delayUntilReboot)) {
            '{0} (Win32 error {1})' -f $item.FullName, [System.Runtime.InteropServices.Marshal]::GetLastWin32Error()
        }
    }
}
