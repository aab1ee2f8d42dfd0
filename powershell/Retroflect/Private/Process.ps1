# Starting the engine executable.

function ConvertTo-RetroflectArgumentString {
    <#
    Joins arguments into one command line that splits back into the same argv. Start-Process and
    ProcessStartInfo.Arguments take a single string on Windows PowerShell 5.1; .NET splits it with the Microsoft C
    runtime rules on Windows and with the same rules on Linux, so quoting by those rules is right on both.
    #>
    param([string[]]$ArgumentList)
    $parts = New-Object 'System.Collections.Generic.List[string]'
    foreach ($arg in $ArgumentList) {
        if ($arg -ne '' -and $arg -notmatch '[\s"]') { $parts.Add($arg); continue }
        $sb = New-Object System.Text.StringBuilder
        $backslash = [char]92
        $quote = [char]34
        [void]$sb.Append($quote)
        $backslashes = 0
        foreach ($ch in $arg.ToCharArray()) {
            if ($ch -eq $backslash) { $backslashes++; continue }
            if ($ch -eq $quote) {
                # Backslashes before a quote are doubled, and the quote itself is escaped.
                [void]$sb.Append($backslash, 2 * $backslashes + 1)
            }
            elseif ($backslashes -gt 0) {
                [void]$sb.Append($backslash, $backslashes)
            }
            $backslashes = 0
            [void]$sb.Append($ch)
        }
        # Backslashes before the closing quote are doubled so they stay literal.
        [void]$sb.Append($backslash, 2 * $backslashes)
        [void]$sb.Append($quote)
        $parts.Add($sb.ToString())
    }
    return ($parts -join ' ')
}

function Resolve-RetroflectExecutable {
    <#
    The engine executable: -Path if given; else the one Install.ps1 installed with this module (recorded in
    InstalledEngine.txt in the module folder); else retroflect(.exe) in the module folder, its bin\ folder, or two
    folders up (a release archive: Retroflect\<version>\ beside the executable); else the first 'retroflect' on
    PATH. Throws Retroflect.ExecutableNotFound.
    #>
    param([string]$Path)
    if ($Path) {
        if (Test-Path -LiteralPath $Path -PathType Leaf) { return (Resolve-Path -LiteralPath $Path).ProviderPath }
        throw (New-RetroflectErrorRecord -Code 'PS_EXECUTABLE_NOT_FOUND' -TargetObject $Path `
            -Message "The retroflect engine executable '$Path' does not exist." `
            -Hint 'Give the full path of retroflect.exe (Windows) or retroflect (Linux) with -Path.')
    }
    $name = 'retroflect'
    if (Test-RetroflectWindows) { $name = 'retroflect.exe' }
    $moduleRoot = Split-Path -Parent $PSScriptRoot
    $record = Join-Path $moduleRoot 'InstalledEngine.txt'
    if (Test-Path -LiteralPath $record -PathType Leaf) {
        $installed = ([System.IO.File]::ReadAllText($record)).Trim()
        if ($installed -and (Test-Path -LiteralPath $installed -PathType Leaf)) { return $installed }
    }
    $archiveRoot = Split-Path -Parent (Split-Path -Parent $moduleRoot)
    foreach ($candidate in @((Join-Path $moduleRoot $name), (Join-Path (Join-Path $moduleRoot 'bin') $name), (Join-Path $archiveRoot $name))) {
        if (Test-Path -LiteralPath $candidate -PathType Leaf) { return $candidate }
    }
    $command = Get-Command -Name 'retroflect' -CommandType Application -ErrorAction SilentlyContinue | Select-Object -First 1
    if ($null -ne $command) { return $command.Source }
    throw (New-RetroflectErrorRecord -Code 'PS_EXECUTABLE_NOT_FOUND' -TargetObject $name `
        -Message "The retroflect engine executable ($name) was not found next to the module ($moduleRoot) or on PATH." `
        -Hint 'Copy it next to the module, add its folder to PATH, or give its full path with -Path.')
}

function Test-RetroflectBackend {
    # Fails early, with a clear message, when the packet backend cannot work: WinDivert files missing (Windows) or
    # no TUN device node (Linux). The engine checks again; this only saves a start that would fail.
    param([Parameter(Mandatory)][string]$Executable, [string]$WinDivertPath)
    if (Test-RetroflectWindows) {
        $dir = $WinDivertPath
        if (-not $dir) { $dir = Split-Path -Parent $Executable }
        $missing = @()
        foreach ($file in @('WinDivert.dll', 'WinDivert64.sys')) {
            if (-not (Test-Path -LiteralPath (Join-Path $dir $file) -PathType Leaf)) { $missing += $file }
        }
        if ($missing.Count -gt 0) {
            throw (New-RetroflectErrorRecord -Code 'PS_WINDIVERT_NOT_FOUND' -TargetObject $dir `
                -Message ("WinDivert is missing: {0} not found in {1}." -f ($missing -join ' and '), $dir) `
                -Hint 'Put WinDivert.dll and WinDivert64.sys (WinDivert 2.x, 64-bit) next to retroflect.exe, or give their folder with -WinDivertPath.')
        }
        return
    }
    if (-not (Test-Path -LiteralPath '/dev/net/tun')) {
        throw (New-RetroflectErrorRecord -Code 'E_BACKEND_UNAVAILABLE' -TargetObject '/dev/net/tun' `
            -Message 'This host has no /dev/net/tun, so the TUN packet backend cannot start.' `
            -Hint "Load the tun kernel module ('modprobe tun'), or in a container pass the device (--device /dev/net/tun).")
    }
}

function Get-RetroflectLogPath {
    # Where Start-Retroflect sends the engine's console output: one pair of files per pipe name, in the temp folder.
    param([Parameter(Mandatory)][string]$PipeName)
    $safe = $PipeName -replace '[^A-Za-z0-9._-]', '_'
    $dir = [System.IO.Path]::GetTempPath()
    return [pscustomobject]@{
        Out = Join-Path $dir ('retroflect-' + $safe + '.out.log')
        Err = Join-Path $dir ('retroflect-' + $safe + '.err.log')
    }
}
