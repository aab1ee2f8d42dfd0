# Scripts as admins write them, run as a scheduled task or Intune runs them: pwsh -NonInteractive -File.
BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $script:Pipe = Start-TestEngine -Address '192.0.2.81', '192.0.2.82'
}
AfterAll { Stop-TestEngine $script:Pipe }

Describe 'User scripts (pwsh -NonInteractive -File)' {
    It 'exits non-zero when the engine is down and $ErrorActionPreference is Stop (Get-ReflectStats | Export-Csv)' {
        $r = Invoke-TestScript -Text (@'
$ErrorActionPreference = 'Stop'
Import-Module $env:RETROFLECT_TEST_MODULE
Get-ReflectStats -Pipe '{0}' | Export-Csv -LiteralPath '{1}'
'not reached'
'@ -f (New-TestPath 'down.sock'), (New-TestPath 'stats.csv'))
        $r.ExitCode | Should -Not -Be 0
        $r.Output | Should -Not -Match 'not reached'
        $r.Output | Should -Match 'No retroflect engine'
    }
    It '(Get-ReflectAddress).IPAddress, Get-ReflectStats | ConvertTo-Json and Get-ReflectAddress | Remove-ReflectAddress work as written' {
        $r = Invoke-TestScript -Text (@'
$ErrorActionPreference = 'Stop'
Import-Module $env:RETROFLECT_TEST_MODULE
$env:RETROFLECT_PIPE = '{0}'
'ips=' + ((Get-ReflectAddress).IPAddress -join ',')
'json=' + (Get-ReflectStats | ConvertTo-Json -Compress -WarningAction SilentlyContinue)
Get-ReflectAddress | Remove-ReflectAddress -Confirm:$false
'left=' + @(Get-ReflectAddress).Count
'@ -f $script:Pipe)
        $r.ExitCode | Should -Be 0 -Because $r.Output
        $r.Output | Should -Match 'ips=192\.0\.2\.81,192\.0\.2\.82'
        $json = ($r.Output -split "`n" | Where-Object { $_ -like 'json=*' }).Substring(5) | ConvertFrom-Json
        $json.ByAddress.IPAddress | Should -Be @('192.0.2.81', '192.0.2.82')
        $json.UptimeSeconds | Should -BeGreaterThan 0
        $r.Output | Should -Match 'left=0'
    }
}
