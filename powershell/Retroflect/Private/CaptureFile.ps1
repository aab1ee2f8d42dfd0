# Where Save-ReflectCapture writes, opened so that an admin's capture never writes through a link, into a device or
# over a file by surprise (the same rules as `retroflect capture -w`, src/cli/capture-output.ts): a new file is
# created; an existing regular file is replaced only with -Force, and never when it has more than one name; a
# symbolic link, junction, directory, device, FIFO or socket is always refused (Retroflect.OutputRefused).

function New-RetroflectOutputRefusal {
    param([string]$Path, [string]$Why, [string]$Hint)
    return New-RetroflectErrorRecord -Code 'E_OUTPUT_REFUSED' -TargetObject $Path -Details @{ path = $Path } `
        -Message "Not writing to $Path`: $Why. Nothing was written." -Hint $Hint
}

function Get-RetroflectOutputProblem {
    # Why $Path must not be written (an ErrorRecord), or $null when it may. Looks at the path itself, never through
    # a link.
    param([Parameter(Mandatory)][string]$Path, [switch]$Force)
    if (Test-RetroflectWindows) {
        $leaf = [System.IO.Path]::GetFileName($Path)
        if ($Path -match '^\\\\[.?]\\' -or $leaf -match '^(CON|PRN|AUX|NUL|COM[0-9]|LPT[0-9])(\..*)?$') {
            return New-RetroflectOutputRefusal $Path 'it names a device' 'Name a file.'
        }
    }
    $item = Get-Item -LiteralPath $Path -Force -ErrorAction SilentlyContinue
    if ($null -eq $item) { return $null }
    $isReparse = ($item.Attributes -band [System.IO.FileAttributes]::ReparsePoint) -ne 0
    if ($isReparse -or $item.LinkType -in @('SymbolicLink', 'Junction')) {
        $hint = 'Name the file itself, or a new file in a folder only you can write to.'
        return New-RetroflectOutputRefusal $Path 'it is a symbolic link' $hint
    }
    # UnixStat (PowerShell 7.3+ on Linux and macOS) tells a FIFO, socket or device from a file; Windows has Device.
    $unixType = 'File'
    if ($null -ne $item.PSObject.Properties['UnixStat'] -and $null -ne $item.UnixStat) {
        $unixType = [string]$item.UnixStat.ItemType
    }
    $isDevice = (($item.Attributes -band [System.IO.FileAttributes]::Device) -ne 0) -or $unixType -ne 'File'
    if ($item.PSIsContainer -or $isDevice) {
        return New-RetroflectOutputRefusal $Path 'it is not a regular file' 'Name a new file.'
    }
    if (-not $Force) {
        return New-RetroflectOutputRefusal $Path 'the file exists' 'Add -Force to replace it, or name a new file.'
    }
    if ($item.LinkType -eq 'HardLink') {
        $why = 'it has more than one name (hard links): writing would change the others too'
        return New-RetroflectOutputRefusal $Path $why 'Name a new file, or remove this one first.'
    }
    return $null
}

function Open-RetroflectOutputFile {
    # Opens $Path for the capture (after Get-RetroflectOutputProblem said yes): a new file is created and never
    # replaces one that appeared meanwhile; an existing one (-Force) is checked again once open, then emptied.
    param([Parameter(Mandatory)][string]$Path, [switch]$Force)
    $existed = Test-Path -LiteralPath $Path
    $mode = [System.IO.FileMode]::CreateNew
    if ($existed -and $Force) { $mode = [System.IO.FileMode]::Open }
    try {
        $access = [System.IO.FileAccess]::Write
        $file = New-Object System.IO.FileStream($Path, $mode, $access, [System.IO.FileShare]::Read)
    }
    catch {
        if (-not $existed -and (Test-Path -LiteralPath $Path)) {
            $hint = 'Try again, in a folder only you can write to.'
            throw (New-RetroflectOutputRefusal $Path 'it appeared while being created' $hint)
        }
        throw
    }
    if ($existed) {
        $problem = Get-RetroflectOutputProblem -Path $Path -Force
        if ($null -ne $problem) {
            $file.Dispose()
            throw $problem
        }
        $file.SetLength(0)
    }
    return $file
}
