# Runs the Pester 5 tests of the Retroflect module and exits non-zero when any fails.
# test/powershell/module.test.ts runs this inside a network namespace it creates, with
#   RETROFLECT_TEST_ENGINE_EXE  the engine executable (dist/retroflect)
#   RETROFLECT_TEST_DIR         a private (0700) scratch folder for the socket, config and install root
$ErrorActionPreference = 'Stop'
Import-Module Pester -MinimumVersion 5.0 -ErrorAction Stop
$config = New-PesterConfiguration
$config.Run.Path = $PSScriptRoot
$config.Run.Exit = $true
$config.Output.Verbosity = 'Detailed'
Invoke-Pester -Configuration $config
