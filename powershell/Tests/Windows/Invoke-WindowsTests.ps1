# Runs the Pester 5 tests of the module's Windows branches (this folder) in the Windows pwsh under Wine, writes the
# results as JSON to $env:RETROFLECT_TEST_RESULTS and exits 1 when anything failed. test/wine/powershell.test.ts
# runs it with a pty on stdin and sets
#   RETROFLECT_TEST_ENGINE_EXE    dist\retroflect.exe (Windows path)
#   RETROFLECT_TEST_WINDIVERT_DIR a folder with the WinDivert TEST DOUBLE as WinDivert.dll (and a placeholder .sys)
#   RETROFLECT_TEST_DIR           a scratch folder (Windows path)
#   RETROFLECT_TEST_RESULTS       where to write the results
#   RETROFLECT_TEST_FILTER        optional: run only the files whose names contain one of its comma-separated parts
# Pester's own XML report crashes this process under Wine after the run, so it is off and the results are written
# here; [Environment]::Exit ends the process without the console host's shutdown path.
$ErrorActionPreference = 'Stop'
$exitCode = 1
try {
    Import-Module Pester -RequiredVersion 5.7.1 -ErrorAction Stop
    $config = New-PesterConfiguration
    $config.Run.Path = $PSScriptRoot
    $all = @(Get-ChildItem -LiteralPath $PSScriptRoot -Filter '*.Tests.ps1')
    $names = { param($list) @($list -split ',' | Where-Object { $_ } | ForEach-Object { $_.Trim() + '.Tests.ps1' }) }
    if ($env:RETROFLECT_TEST_FILTER) {
        # Only the files whose names contain one of its comma-separated parts (test/doctor/doctor-windows-pester.test.ts).
        $parts = $env:RETROFLECT_TEST_FILTER -split ','
        $config.Run.Path = @($all | Where-Object { $name = $_.Name; @($parts | Where-Object { $name -like "*$_*" }).Count -gt 0 } |
            ForEach-Object { $_.FullName })
    }
    elseif ($env:RETROFLECT_TEST_ONLY) {
        # Only these files (test/wine/service-powershell.test.ts: RETROFLECT_TEST_ONLY=Installation,Release,Detached).
        $only = & $names $env:RETROFLECT_TEST_ONLY
        $config.Run.Path = @($all | Where-Object { $only -contains $_.Name } | ForEach-Object { $_.FullName })
    }
    elseif ($env:RETROFLECT_TEST_SKIP) {
        # All but these (test/wine/powershell.test.ts skips the service's files).
        $skip = & $names $env:RETROFLECT_TEST_SKIP
        $config.Run.Path = @($all | Where-Object { $skip -notcontains $_.Name } | ForEach-Object { $_.FullName })
    }
    $config.Run.PassThru = $true
    $config.Output.Verbosity = 'Detailed'
    $config.TestResult.Enabled = $false
    $run = Invoke-Pester -Configuration $config
    $tests = foreach ($t in $run.Tests) {
        [ordered]@{
            name   = $t.ExpandedPath
            result = [string]$t.Result
            error  = (@($t.ErrorRecord | ForEach-Object { $_.ToString() + ' ' + $_.ScriptStackTrace }) -join "`n")
        }
    }
    $containers = foreach ($c in $run.Containers) {
        [ordered]@{
            name   = [string]$c.Item
            result = [string]$c.Result
            error  = (@($c.ErrorRecord | ForEach-Object { $_.ToString() + ' ' + $_.ScriptStackTrace }) -join "`n")
        }
    }
    $summary = [ordered]@{
        passed     = $run.PassedCount
        failed     = $run.FailedCount
        skipped    = $run.SkippedCount
        notRun     = $run.NotRunCount
        failedBlocks     = $run.FailedBlocksCount
        failedContainers = $run.FailedContainersCount
        tests      = @($tests)
        containers = @($containers)
    }
    [System.IO.File]::WriteAllText($env:RETROFLECT_TEST_RESULTS, (ConvertTo-Json -InputObject $summary -Depth 5), (New-Object System.Text.UTF8Encoding($false)))
    if ($run.FailedCount -eq 0 -and $run.FailedBlocksCount -eq 0 -and $run.FailedContainersCount -eq 0) { $exitCode = 0 }
}
catch {
    [Console]::Error.WriteLine("Invoke-WindowsTests: $($_.Exception.Message) $($_.ScriptStackTrace)")
    $exitCode = 2
}
[Environment]::Exit($exitCode)
