# The Intune Remediations pair (powershell/remediations/), run as Intune runs them (pwsh -NoProfile
# -NonInteractive -File, exit code and one line of output), against a real engine with a managed policy file. The
# wanted-state block is edited the way an admin edits it; the module is found on PSModulePath, as Install.ps1
# leaves it.
BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $script:Policy = New-TestPath 'remediations-policy.json'
    Set-Content -LiteralPath $script:Policy -Value '{"schemaVersion": 1, "reflectAddresses": ["203.0.113.77"], "shieldPorts": ["9100/tcp"]}'
    $env:RETROFLECT_POLICY = $script:Policy
    $script:Config = New-TestPath 'remediations-config.json'
    $script:Pipe = Start-TestEngine -Address '203.0.113.9' -ConfigPath $script:Config
    $modules = Split-Path -Parent (Split-Path -Parent $script:ModuleManifest)
    $env:PSModulePath = $modules + [System.IO.Path]::PathSeparator + $env:PSModulePath
    $script:Remediations = Join-Path $PSScriptRoot '..\remediations'
    function Invoke-Pair {
        # One script of the pair with the wanted-state block set to -Addresses / -Ports and this engine's pipe.
        param([string]$Name, [string[]]$Addresses, [string[]]$Ports)
        $text = Get-Content -Raw -LiteralPath (Join-Path $script:Remediations $Name)
        $list = { param($items) '@(' + ((@($items) | ForEach-Object { "'$_'" }) -join ', ') + ')' }
        $text = $text -replace '(?m)^\$WantedAddresses = .*$', ('$WantedAddresses = ' + (& $list $Addresses))
        $text = $text -replace '(?m)^\$WantedShieldPorts = .*$', ('$WantedShieldPorts = ' + (& $list $Ports))
        $text = $text -replace '(?m)^\$Pipe = .*$', ('$Pipe = ''' + $script:Pipe + '''')
        Invoke-TestScript -Text $text
    }
}
AfterAll {
    Stop-TestEngine $script:Pipe
    Remove-Item Env:\RETROFLECT_POLICY -ErrorAction SilentlyContinue
}

Describe 'Detect-RetroflectDrift.ps1 and Remediate-RetroflectDrift.ps1' {
    It 'are single self-contained scripts: nothing but the module is loaded, no file beside them is read' {
        foreach ($name in 'Detect-RetroflectDrift.ps1', 'Remediate-RetroflectDrift.ps1') {
            $text = Get-Content -Raw -LiteralPath (Join-Path $script:Remediations $name)
            $text | Should -Not -Match '\$PSScriptRoot|\. \.\\|Join-Path'
            $text | Should -Match 'Import-Module Retroflect'
        }
    }
    It 'detects drift (exit 1, one line), remediates it (exit 0), and then detects none (exit 0)' {
        $wanted = @('203.0.113.1', '203.0.113.2 80=8080/tcp')
        $ports = @('8080/tcp', '9100/tcp')
        $d = Invoke-Pair 'Detect-RetroflectDrift.ps1' $wanted $ports
        $d.ExitCode | Should -Be 1
        @($d.Output.Trim() -split "`n").Count | Should -Be 1
        $d.Output | Should -Match 'Retroflect drift: missing .*203\.0\.113\.1.*not wanted 203\.0\.113\.9'
        $d.Output | Should -Not -Match '203\.0\.113\.77'

        $r = Invoke-Pair 'Remediate-RetroflectDrift.ps1' $wanted $ports
        $r.ExitCode | Should -Be 0
        $r.Output | Should -Match 'Retroflect remediated: .*Added 203\.0\.113\.1'
        Get-ReflectAddress -Pipe $script:Pipe | Where-Object Source -ne 'Policy' | ForEach-Object { $_.IPAddress.ToString() } | Sort-Object | Should -Be @('203.0.113.1', '203.0.113.2')
        (Get-ReflectAddress '203.0.113.2' -Pipe $script:Pipe).PortMap.ToString() | Should -Be '80=8080/tcp'
        (Get-ReflectAddress '203.0.113.77' -Pipe $script:Pipe).Source | Should -Be 'Policy'

        $again = Invoke-Pair 'Detect-RetroflectDrift.ps1' $wanted $ports
        $again.ExitCode | Should -Be 0
        $again.Output | Should -Match 'Retroflect compliant'
        (Invoke-Pair 'Remediate-RetroflectDrift.ps1' $wanted $ports).Output | Should -Match 'nothing to change'
    }
    It 'detects a temporary entry, a missing map and an extra port as drift' {
        Add-ReflectAddress '203.0.113.3' -Temporary -Pipe $script:Pipe -Confirm:$false
        (Invoke-Pair 'Detect-RetroflectDrift.ps1' @('203.0.113.1', '203.0.113.2 80=8080/tcp') @('8080/tcp')).Output | Should -Match 'not wanted 203\.0\.113\.3'
        Remove-ReflectAddress '203.0.113.3' -Pipe $script:Pipe -Confirm:$false
        (Invoke-Pair 'Detect-RetroflectDrift.ps1' @('203.0.113.1', '203.0.113.2') @('8080/tcp')).Output | Should -Match 'not wanted 203\.0\.113\.2 80=8080/tcp'
        (Invoke-Pair 'Detect-RetroflectDrift.ps1' @('203.0.113.1', '203.0.113.2 80=8080/tcp') @()).ExitCode | Should -Be 1
    }
    It 'without an engine, detection says so in one line with exit 1' {
        $text = (Get-Content -Raw -LiteralPath (Join-Path $script:Remediations 'Detect-RetroflectDrift.ps1')) -replace '(?m)^\$Pipe = .*$', ('$Pipe = ''' + (New-TestPath 'none.sock') + '''')
        $r = Invoke-TestScript -Text $text
        $r.ExitCode | Should -Be 1
        $r.Output | Should -Match 'Retroflect drift: cannot read the configuration'
    }
}
