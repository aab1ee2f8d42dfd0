# Runs the Pester 5 tests of the Retroflect module (one file per public cmdlet, plus the help examples) and exits
# non-zero when any fails. test/powershell/module.test.ts runs this inside a network namespace it creates; see
# TestHelpers.ps1 for the environment. $env:RETROFLECT_TEST_FILTER (e.g. 'Start-Retroflect,Help') runs only the
# files whose names contain one of its parts.
$ErrorActionPreference = 'Stop'
Import-Module Pester -MinimumVersion 5.0 -ErrorAction Stop
$files = Get-ChildItem -LiteralPath $PSScriptRoot -Filter '*.Tests.ps1' | Sort-Object Name
if ($env:RETROFLECT_TEST_FILTER) {
    $parts = $env:RETROFLECT_TEST_FILTER -split ','
    $files = $files | Where-Object { $name = $_.Name; @($parts | Where-Object { $name -like "*$_*" }).Count -gt 0 }
}
$config = New-PesterConfiguration
$config.Run.Path = @($files | ForEach-Object { $_.FullName })
$config.Run.PassThru = $true
$config.Output.Verbosity = 'Detailed'
# Every test path (sockets, so the engines' log files) starts with this run's prefix: afterwards the logs the
# engines left in the shared data folder are removed, and nothing else there is touched.
$env:RETROFLECT_TEST_RUN = 'pester' + [guid]::NewGuid().ToString('N').Substring(0, 6)
$result = Invoke-Pester -Configuration $config
Get-ChildItem -LiteralPath '/var/lib/retroflect/logs' -Filter ($env:RETROFLECT_TEST_RUN + '-*') -ErrorAction SilentlyContinue |
    Remove-Item -Force
if ($result.Result -ne 'Passed') { exit 1 }
exit 0
