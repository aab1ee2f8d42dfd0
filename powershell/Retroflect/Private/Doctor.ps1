# Test-Retroflect's half of the doctor: runs 'retroflect doctor --json' (the checks live in the engine executable, so
# the CLI, PowerShell and scripts get the same answers) and turns its report into Retroflect.Check objects.

# `retroflect doctor` exit codes (src/errors.ts ExitCode): 0 no check failed, 12 at least one failed.
$script:DoctorExitCodes = @(0, 12)
# Uninstall: how often, and how far apart, removing the runtime folder is tried while a just-ended process holds it.
$script:RuntimeRemoveTries = 20
$script:RuntimeRemoveRetryMs = 250

function Invoke-RetroflectDoctor {
    <#
    Runs '<exe> doctor --json' with the given arguments and returns the parsed report. A failure of the command itself
    (not a failed check) becomes the ErrorRecord of its error code.
    #>
    param([Parameter(Mandatory)][string]$Executable, [string[]]$ArgumentList)
    $argv = @('doctor', '--json') + @($ArgumentList)
    $lines = & $Executable @argv 2>$null
    $code = $LASTEXITCODE
    $text = ($lines | Out-String).Trim()
    $report = $null
    if ($text) {
        try { $report = $text | ConvertFrom-Json } catch { $report = $null }
    }
    if ($null -ne $report -and $null -ne $report.PSObject.Properties['error']) {
        throw (ConvertFrom-RetroflectWireError -WireError $report.error)
    }
    $complete = $null -ne $report -and $null -ne $report.PSObject.Properties['checks']
    if (-not $complete -or $script:DoctorExitCodes -notcontains $code) {
        throw (New-RetroflectErrorRecord -Code 'PS_ENGINE_EXITED' -TargetObject $Executable `
            -Message ("'{0} doctor' ended with exit code {1} without a report." -f $Executable, $code) `
            -Hint 'Run the same command in a console to see its message.')
    }
    return $report
}

function Invoke-RetroflectDriverRelease {
    <#
    Windows, at uninstall: asks the engine executable to remove the WinDivert driver service entry. It does so only
    when no program holds a WinDivert handle (WinDivert's REFLECT layer says so) and the entry is ours or stale, so
    another tool's driver keeps working (docs/windows.md). Never fails the uninstall: what it did is written to the
    verbose stream, and a check it could not make is a warning.
    #>
    param([Parameter(Mandatory)][System.Management.Automation.PSCmdlet]$Cmdlet, [string]$Executable)
    if (-not $Executable) {
        try { $Executable = Resolve-RetroflectExecutable }
        catch { Write-Verbose 'No engine executable: the WinDivert driver service is left as it is.'; return }
    }
    $action = 'Remove if no program uses WinDivert and the entry is ours'
    if (-not $Cmdlet.ShouldProcess('WinDivert driver service', $action)) { return }
    $lines = & $Executable driver release --json 2>$null
    $result = $null
    try { $result = (($lines | Out-String).Trim()) | ConvertFrom-Json } catch { $result = $null }
    if ($null -eq $result -or $null -eq $result.PSObject.Properties['outcome']) {
        $text = "Could not ask '{0} driver release' about the WinDivert driver service (exit {1}); left as it is."
        Write-Warning ($text -f $Executable, $LASTEXITCODE)
        return
    }
    if ($result.outcome -eq 'unchecked') { Write-Warning $result.detail } else { Write-Verbose $result.detail }
}

function Invoke-RetroflectOfflineAddressTest {
    <#
    Test-ReflectAddress without an engine: when nothing answers on $Pipe, '<exe> address test --json' runs the
    engine's checks on this host and its results are returned (the address.test shape). $null when an engine
    answers (or no executable is found): then the engine is asked, and reports its own errors.
    #>
    param([string]$Pipe, [Parameter(Mandatory)][string[]]$Address)
    if (Test-RetroflectPipeAnswers -Pipe $Pipe) { return $null }
    try { $exe = Resolve-RetroflectExecutable } catch { return $null }
    $argv = @('address', 'test', '--json')
    if ($Pipe) { $argv += @('--pipe', $Pipe) }
    $lines = & $exe @argv @Address 2>$null
    try { $results = (($lines | Out-String).Trim()) | ConvertFrom-Json } catch { return $null }
    if ($null -eq $results -or $null -ne $results.PSObject.Properties['error']) { return $null }
    Write-Verbose 'No engine is running: the addresses were tested on this host without one.'
    return @($results)
}

function Test-RetroflectPipeAnswers {
    <#
    Does anything accept a connection on $Pipe? Answered without raising an error (an exception caught here would
    still land in the calling cmdlet's -ErrorVariable): no socket file, or a connect that does not complete, is
    $false. A pipe value that cannot be resolved is $true, so the session reports it as usual.
    #>
    param([string]$Pipe)
    # A pipe value that cannot be resolved ends this frame (Stop-RetroflectSession), not a throw that would land in
    # -ErrorVariable: the session that follows reports it once.
    $frame = @{ Failure = $null; Connection = $null }
    $resolved = $null
    $script:SessionStack.Push($frame)
    try { :RetroflectSession do { $resolved = Resolve-RetroflectPipe -Pipe $Pipe } while ($false) }
    finally { $null = $script:SessionStack.Pop() }
    if ($null -eq $resolved) { return $true }
    if (Test-RetroflectPipeMissing $resolved) { return $false }
    $stream = New-Object System.IO.Pipes.NamedPipeClientStream('.', $resolved.ClientPipeName,
        [System.IO.Pipes.PipeDirection]::InOut, [System.IO.Pipes.PipeOptions]::Asynchronous)
    try {
        $connect = $stream.ConnectAsync($script:DefaultConnectTimeoutMs)
        $tasks = [System.Threading.Tasks.Task[]]@($connect)
        $null = [System.Threading.Tasks.Task]::WhenAny($tasks).GetAwaiter().GetResult()
        return ($connect.Status -eq [System.Threading.Tasks.TaskStatus]::RanToCompletion)
    }
    finally {
        $stream.Dispose()
    }
}
