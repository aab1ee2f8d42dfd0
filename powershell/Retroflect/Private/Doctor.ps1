# Test-Retroflect's half of the doctor: runs 'retroflect doctor --json' (the checks live in the engine executable, so
# the CLI, PowerShell and scripts get the same answers) and turns its report into Retroflect.Check objects.

# `retroflect doctor` exit codes (src/errors.ts ExitCode): 0 no check failed, 12 at least one failed.
$script:DoctorExitCodes = @(0, 12)

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
    if ($null -eq $report -or $script:DoctorExitCodes -notcontains $code -or $null -eq $report.PSObject.Properties['checks']) {
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
        try { $Executable = Resolve-RetroflectExecutable } catch { Write-Verbose "No engine executable: the WinDivert driver service is left as it is."; return }
    }
    if (-not $Cmdlet.ShouldProcess('WinDivert driver service', 'Remove if no program uses WinDivert and the entry is ours')) { return }
    $lines = & $Executable driver release --json 2>$null
    $result = $null
    try { $result = (($lines | Out-String).Trim()) | ConvertFrom-Json } catch { $result = $null }
    if ($null -eq $result -or $null -eq $result.PSObject.Properties['outcome']) {
        Write-Warning ("Could not ask '{0} driver release' about the WinDivert driver service (exit {1}); it was left as it is." -f $Executable, $LASTEXITCODE)
        return
    }
    if ($result.outcome -eq 'unchecked') { Write-Warning $result.detail } else { Write-Verbose $result.detail }
}
