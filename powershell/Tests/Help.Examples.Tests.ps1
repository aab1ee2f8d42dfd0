# Every .EXAMPLE of every public cmdlet, run as written against a real engine (or skipped when its text says it is
# for Windows only). The pipe comes from $env:RETROFLECT_PIPE (as users set a default) and -Root from
# $PSDefaultParameterValues, so the examples stay as users read them while they reach this test's engine and
# install into a scratch root.
BeforeDiscovery {
    Import-Module (Join-Path $PSScriptRoot '..\Retroflect\Retroflect.psd1') -Force
    # Watch-ReflectTraffic and Save-ReflectCapture stream until stopped (Ctrl+C, -Duration of minutes): their examples
    # are not run here; their own Pester files test them.
    $streaming = @('Watch-ReflectTraffic', 'Save-ReflectCapture')
    $script:Examples = foreach ($command in (Get-Command -Module Retroflect | Where-Object { $streaming -notcontains $_.Name } | Sort-Object Name)) {
        $n = 0
        foreach ($example in (Get-Help $command.Name -Full).examples.example) {
            $n++
            $remarks = ($example.remarks | ForEach-Object { $_.Text }) -join ' '
            @{ Command = $command.Name; Number = $n; Code = [string]$example.code; WindowsOnly = ($remarks -match 'Windows only') }
        }
    }
}

BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $script:Config = New-TestPath 'examples.json'
    $script:Pipe = Start-TestEngine -ConfigPath $script:Config
    $script:Work = New-TestPath 'examples'
    $null = New-Item -ItemType Directory -Path $script:Work
    Push-Location $script:Work
    $script:SavedDefaults = $global:PSDefaultParameterValues.Clone()
    $script:SavedPipe = $env:RETROFLECT_PIPE
    $env:RETROFLECT_PIPE = $script:Pipe
    $global:PSDefaultParameterValues['Install-Retroflect:Root'] = Join-Path $script:Work 'root'
    $global:PSDefaultParameterValues['Uninstall-Retroflect:Root'] = Join-Path $script:Work 'root'
}
AfterAll {
    $global:PSDefaultParameterValues = $script:SavedDefaults
    $env:RETROFLECT_PIPE = $script:SavedPipe
    Pop-Location
    Stop-TestEngine $script:Pipe
}

Describe 'Help example <Command> #<Number>' -ForEach $Examples {
    BeforeEach {
        # A known state for every example: the engine runs, with 192.0.2.1 and port 8080 (an example may have
        # stopped it or removed everything).
        if (-not (Get-Retroflect -Pipe $script:Pipe -ErrorAction SilentlyContinue)) {
            Start-Retroflect -Path $script:Exe -ConfigPath $script:Config -Pipe $script:Pipe -TimeoutSeconds 60 -Confirm:$false
        }
        Add-ReflectAddress 192.0.2.1 -Pipe $script:Pipe -Temporary -Confirm:$false
        Add-ShieldPort 8080 -Pipe $script:Pipe -Temporary -Confirm:$false
    }
    It 'runs as written: <Code>' -Skip:$WindowsOnly {
        $block = [scriptblock]::Create("`$ErrorActionPreference = 'Stop'; `$WarningPreference = 'SilentlyContinue'`n" + $Code)
        { & $block | Out-String } | Should -Not -Throw
    }
}
