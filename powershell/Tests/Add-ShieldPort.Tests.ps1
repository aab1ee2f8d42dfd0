BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $script:Config = New-TestPath 'config.json'
    $script:Pipe = Start-TestEngine -ConfigPath $script:Config
}
AfterAll { Stop-TestEngine $script:Pipe }

Describe 'Add-ShieldPort' {
    It 'outputs nothing without -PassThru' {
        Add-ShieldPort 8081 -Pipe $script:Pipe -Temporary -Confirm:$false | Should -BeNullOrEmpty
        (Get-ShieldPort -Port 8081 -Pipe $script:Pipe).Protocol | Should -Be @('tcp', 'udp')
    }
    It 'takes the same port forms as Start-Retroflect and Install-Retroflect (8080/tcp, 53/udp)' {
        $r = Add-ShieldPort '8082/tcp', '53/udp' -Pipe $script:Pipe -Temporary -Confirm:$false -PassThru
        ($r | ForEach-Object { '{0}/{1}' -f $_.Port, $_.Protocol }) | Should -Be @('8082/tcp', '53/udp')
        $r[0].PSTypeNames | Should -Contain 'Retroflect.ShieldPort'
    }
    It 'adds piped numbers in one change, idempotently, and reports Persisted from the engine' {
        $r = 8083, 8443 | Add-ShieldPort -Protocol tcp -Pipe $script:Pipe -Confirm:$false -PassThru
        ($r | Where-Object Added).Count | Should -Be 2
        $r.Persisted | Should -Not -Contain $false
        (Add-ShieldPort 8083 -Protocol tcp -Pipe $script:Pipe -Confirm:$false -PassThru).Added | Should -BeFalse
        (Add-ShieldPort 8084 -Protocol tcp -Pipe $script:Pipe -Temporary -Confirm:$false -PassThru).Persisted | Should -BeFalse
    }
    It 'refuses a bad port with Retroflect.InvalidPort, before anything is sent' {
        Add-ShieldPort '70000', '8085/sctp' -Pipe $script:Pipe -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable err
        @($err | Where-Object { $_.FullyQualifiedErrorId -like 'Retroflect.InvalidPort*' }).Count | Should -BeGreaterOrEqual 2
        Get-ShieldPort -Port 8085 -Pipe $script:Pipe -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
    }
    It '-WhatIf changes nothing' {
        8086 | Add-ShieldPort -Pipe $script:Pipe -WhatIf
        Get-ShieldPort -Port 8086 -Pipe $script:Pipe -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
    }
}
