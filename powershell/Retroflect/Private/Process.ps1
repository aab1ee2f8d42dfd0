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

function Get-RetroflectLogDirectory {
    # The engine's console output goes next to its runtime files, in its data folder that only administrators/root
    # may write (%ProgramData%\Retroflect\logs, /var/lib/retroflect/logs), never in the shared temp folder.
    return (Join-Path (Split-Path -Parent (Get-RetroflectRuntimePath)) 'logs')
}

function Test-RetroflectLink {
    param([string]$Path)
    $item = Get-Item -LiteralPath $Path -Force -ErrorAction SilentlyContinue
    return ($null -ne $item -and ($item.Attributes -band [System.IO.FileAttributes]::ReparsePoint))
}

function Initialize-RetroflectLog {
    <#
    Prepares the log files of the engine on one pipe, truncated: on Linux <logs>/<pipe>.out.log and .err.log (its
    output), on Windows <logs>\<pipe>.log (its own --log-file: the engine inherits no handle of ours). The
    folder is created admin-only; a link in the place of the folder or of a file is refused or removed (a link
    there would make an elevated process write through it into another file). Returns {Out, Err}.
    #>
    param([Parameter(Mandatory)][string]$PipeName)
    $dir = Get-RetroflectLogDirectory
    foreach ($d in @((Split-Path -Parent $dir), $dir)) {
        if (Test-RetroflectLink $d) {
            throw (New-RetroflectErrorRecord -Code 'E_ACCESS_DENIED' -TargetObject $d `
                -Message "$d is a link; the engine's logs are not written through links." -Hint "Remove the link $d (it was not made by retroflect)." )
        }
    }
    if (-not (Test-Path -LiteralPath $dir)) {
        if (Test-RetroflectWindows) { $null = New-Item -ItemType Directory -Path $dir -Force }
        else {
            $null = New-Item -ItemType Directory -Path $dir -Force
            & chmod 0700 $dir
        }
    }
    $safe = $PipeName -replace '[^A-Za-z0-9._-]', '_'
    $logs = [pscustomobject]@{ Out = (Join-Path $dir ($safe + '.out.log')); Err = (Join-Path $dir ($safe + '.err.log')) }
    if (Test-RetroflectWindows) {
        $one = Join-Path $dir ($safe + '.log')
        $logs = [pscustomobject]@{ Out = $one; Err = $one }
    }
    foreach ($file in @($logs.Out, $logs.Err) | Select-Object -Unique) {
        if (Test-RetroflectLink $file) { Remove-Item -LiteralPath $file -Force }
        # CreateNew after removing: fails instead of following anything planted in between.
        if (Test-Path -LiteralPath $file) { Remove-Item -LiteralPath $file -Force }
        $stream = New-Object System.IO.FileStream($file, [System.IO.FileMode]::CreateNew, [System.IO.FileAccess]::Write)
        $stream.Dispose()
    }
    return $logs
}

function Start-RetroflectProcessNoInherit {
    <#
    Windows: CreateProcessW with bInheritHandles FALSE, a console of its own with a hidden window, and a new
    process group, in the executable's folder (CREATE_NO_WINDOW and DETACHED_PROCESS end the caller under Wine 8). Returns the process (opened before our handle to it is closed, so its exit code stays
    readable however fast it ends).
    #>
    param([Parameter(Mandatory)][string]$Executable, [Parameter(Mandatory)][string]$CommandLine)
    if (-not ('Retroflect.Native.Launcher' -as [type])) {
        Add-Type -Namespace 'Retroflect.Native' -Name 'Launcher' -UsingNamespace 'System.Text' -MemberDefinition @'
[StructLayout(LayoutKind.Sequential, CharSet = CharSet.Unicode)]
public struct StartupInfo {
    public int cb; public string lpReserved; public string lpDesktop; public string lpTitle;
    public int dwX; public int dwY; public int dwXSize; public int dwYSize; public int dwXCountChars; public int dwYCountChars;
    public int dwFillAttribute; public int dwFlags; public short wShowWindow; public short cbReserved2; public IntPtr lpReserved2;
    public IntPtr hStdInput; public IntPtr hStdOutput; public IntPtr hStdError;
}
[StructLayout(LayoutKind.Sequential)]
public struct ProcessInformation { public IntPtr hProcess; public IntPtr hThread; public int dwProcessId; public int dwThreadId; }
[DllImport("kernel32.dll", SetLastError = true, CharSet = CharSet.Unicode)]
static extern bool CreateProcessW(string application, StringBuilder commandLine, IntPtr processAttributes, IntPtr threadAttributes,
    bool inheritHandles, uint creationFlags, IntPtr environment, string currentDirectory, ref StartupInfo startupInfo, out ProcessInformation info);
[DllImport("kernel32.dll")]
static extern bool CloseHandle(IntPtr handle);
public static System.Diagnostics.Process Start(string application, string commandLine, string directory) {
    var si = new StartupInfo();
    si.cb = Marshal.SizeOf(si);
    si.dwFlags = 0x1;      // STARTF_USESHOWWINDOW
    si.wShowWindow = 0;    // SW_HIDE
    ProcessInformation pi;
    // CREATE_NEW_CONSOLE | CREATE_NEW_PROCESS_GROUP; inheritHandles false: the child gets no handle of ours.
    uint flags = 0x00000010 | 0x00000200;
    if (!CreateProcessW(application, new StringBuilder(commandLine), IntPtr.Zero, IntPtr.Zero, false, flags, IntPtr.Zero, directory, ref si, out pi)) {
        throw new System.ComponentModel.Win32Exception();
    }
    try {
        var process = System.Diagnostics.Process.GetProcessById(pi.dwProcessId);
        var opened = process.SafeHandle;   // its own handle, while ours keeps the process object (and exit code) alive
        return process;
    }
    finally { CloseHandle(pi.hThread); CloseHandle(pi.hProcess); }
}
'@
    }
    return [Retroflect.Native.Launcher]::Start($Executable, $CommandLine, (Split-Path -Parent $Executable))
}

function Start-RetroflectDetached {
    <#
    Starts the engine detached from this session: its own session and process group on Linux (setsid: closing the
    terminal or ending this PowerShell does not signal it), a hidden window on Windows; never the caller's handles
    (a caller under Intune, a scheduled task or CI that waits for its output to end must not wait for the engine).
    Linux: standard input from the null device, output to the log files. Windows: .NET's Process.Start (and
    Start-Process with a redirection) create the process with every inheritable handle of this one, the pipe an
    outer script reads among them; so CreateProcessW is called directly with bInheritHandles FALSE and no console
    window, and the engine writes its own log (--log-file). Returns the process.
    #>
    param([Parameter(Mandatory)][string]$Executable, [string[]]$ArgumentList, [Parameter(Mandatory)][object]$Log)
    if (Test-RetroflectWindows) {
        $commandLine = '"{0}" {1}' -f $Executable, (ConvertTo-RetroflectArgumentString -ArgumentList (@($ArgumentList) + @('--log-file', $Log.Err)))
        return (Start-RetroflectProcessNoInherit -Executable $Executable -CommandLine $commandLine)
    }
    # .NET redirects through pipes that this process must keep reading; the files are opened by sh instead. The
    # script is fixed text: the executable, its arguments and the log paths are passed as arguments, never spliced.
    # sh is not a process group leader, so setsid replaces it in place and the pid stays the engine's.
    $info = New-Object System.Diagnostics.ProcessStartInfo
    $info.FileName = '/bin/sh'
    $info.UseShellExecute = $false
    foreach ($a in @('-c', 'out=$1; err=$2; shift 2; exec setsid "$@" </dev/null >>"$out" 2>>"$err"', 'retroflect-start', $Log.Out, $Log.Err, $Executable)) {
        $info.ArgumentList.Add($a)
    }
    foreach ($a in $ArgumentList) { $info.ArgumentList.Add($a) }
    return [System.Diagnostics.Process]::Start($info)
}
