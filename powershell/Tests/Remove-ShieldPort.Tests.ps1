BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $script:Pipe = Start-TestEngine -ShieldPort '8080/tcp', '9000', '7000/udp'
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
