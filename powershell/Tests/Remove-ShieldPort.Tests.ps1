BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $script:Config = New-TestPath 'remove-shield-config.json'
    $script:Pipe = Start-TestEngine -ShieldPort '8080/tcp', '9000', '7000/udp' -ConfigPath $script:Config
}
AfterAll { Stop-TestEngine $script:Pipe }

Describe 'Remove-ShieldPort' {
    It 'Remove-ShieldPort 8080 after a TCP-only add removes TCP without an error about UDP' {
        Remove-ShieldPort 8080 -Pipe $script:Pipe -Confirm:$false -ErrorVariable err
        $err | Should -BeNullOrEmpty
        Get-ShieldPort -Port 8080 -Pipe $script:Pipe -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
    }
    It 'a port shielded for neither protocol is one Retroflect.PortNotFound' {
        Remove-ShieldPort 7 -Pipe $script:Pipe -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable err
        @($err | Where-Object { $_.FullyQualifiedErrorId -eq 'Retroflect.PortNotFound,Remove-ShieldPort' }).Count | Should -Be 1
        Remove-ShieldPort 7000 -Protocol tcp -Pipe $script:Pipe -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable err2
        $err2[-1].FullyQualifiedErrorId | Should -BeLike 'Retroflect.PortNotFound*'
        $err2[-1].CategoryInfo.Category | Should -Be 'ObjectNotFound'
    }
    It 'removes a port that is only in the config file (taken off the running engine with -Temporary), as the engine does' {
        Add-ShieldPort 6000 -Protocol tcp -Pipe $script:Pipe -Confirm:$false
        Remove-ShieldPort 6000 -Protocol tcp -Temporary -Pipe $script:Pipe -Confirm:$false
        Get-ShieldPort -Port 6000 -Pipe $script:Pipe -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        $saved = { (Get-Content -Raw -LiteralPath $script:Config | ConvertFrom-Json).shieldPorts | ForEach-Object { '{0}/{1}' -f $_.port, $_.protocol } }
        & $saved | Should -Contain '6000/tcp'
        # 6000 for both protocols: TCP is only in the file, UDP nowhere; one of the two there is no error.
        $gone = Remove-ShieldPort 6000 -Pipe $script:Pipe -Confirm:$false -PassThru -ErrorVariable err
        $err | Should -BeNullOrEmpty
        ($gone | ForEach-Object { '{0}/{1}' -f $_.Port, $_.Protocol }) | Should -Be '6000/tcp'
        & $saved | Should -Not -Contain '6000/tcp'
    }
    It '-Temporary: a port only in the config file is not running, so Retroflect.PortNotFound; the file keeps it' {
        Add-ShieldPort 6001 -Protocol tcp -Pipe $script:Pipe -Confirm:$false
        Remove-ShieldPort 6001 -Protocol tcp -Temporary -Pipe $script:Pipe -Confirm:$false
        Remove-ShieldPort 6001 -Protocol tcp -Temporary -Pipe $script:Pipe -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable err
        @($err).Count | Should -Be 1
        $err[0].FullyQualifiedErrorId | Should -BeLike 'Retroflect.PortNotFound*'
        $err[0].TargetObject | Should -Be '6001/tcp'
        ((Get-Content -Raw -LiteralPath $script:Config | ConvertFrom-Json).shieldPorts | ForEach-Object { '{0}/{1}' -f $_.port, $_.protocol }) | Should -Contain '6001/tcp'
        Remove-ShieldPort 6001 -Protocol tcp -Pipe $script:Pipe -Confirm:$false
    }
    It 'Get-ShieldPort | Remove-ShieldPort binds Port and Protocol by property name; -PassThru returns them' {
        $r = Get-ShieldPort -Pipe $script:Pipe -Port 9000 | Remove-ShieldPort -Confirm:$false -PassThru
        ($r | ForEach-Object { '{0}/{1}' -f $_.Port, $_.Protocol }) | Should -Be @('9000/tcp', '9000/udp')
        (Get-ShieldPort -Pipe $script:Pipe).Port | Should -Be @(7000)
    }
    It 'completes -Port with the running engine''s ports' {
        $line = "Remove-ShieldPort -Pipe '$($script:Pipe)' -Port 70"
        (TabExpansion2 -inputScript $line -cursorColumn $line.Length).CompletionMatches.CompletionText | Should -Contain '7000'
    }
    It 'takes 7000/udp as Add-ShieldPort does' {
        Remove-ShieldPort '7000/udp' -Pipe $script:Pipe -Confirm:$false
        Get-ShieldPort -Pipe $script:Pipe | Should -BeNullOrEmpty
    }
}
