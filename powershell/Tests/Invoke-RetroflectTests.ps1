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
$config.Run.Exit = $true
$config.Output.Verbosity = 'Detailed'
Invoke-Pester -Configuration $config
