BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $script:Pipe = Start-TestEngine
    $script:EnginePid = (Get-Retroflect -Pipe $script:Pipe).ProcessId
}
AfterAll { Stop-TestEngine $script:Pipe }

Describe 'Stop-Retroflect' {
    It '-WhatIf stops nothing' {
        Stop-Retroflect -Pipe $script:Pipe -WhatIf
        (Get-Retroflect -Pipe $script:Pipe).State | Should -Be 'running'
    }
    It 'stops the engine, waits for its exit, and is idempotent' {
        Stop-Retroflect -Pipe $script:Pipe -Confirm:$false | Should -BeNullOrEmpty
        Get-Process -Id $script:EnginePid -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        { Stop-Retroflect -Pipe $script:Pipe -Confirm:$false } | Should -Not -Throw
    }
    It '-PassThru returns the last status with State stopped' {
        $pipe = Start-TestEngine
        $s = Stop-Retroflect -Pipe $pipe -Confirm:$false -PassThru
        $s.State | Should -Be 'stopped'
    }
}
