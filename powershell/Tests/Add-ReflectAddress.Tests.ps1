BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $script:Config = New-TestPath 'config.json'
    $script:Pipe = Start-TestEngine -ConfigPath $script:Config
}
AfterAll { Stop-TestEngine $script:Pipe }

Describe 'Add-ReflectAddress' {
    It 'outputs nothing without -PassThru, as Start-Service does' {
        Add-ReflectAddress 192.0.2.50 -Pipe $script:Pipe -Temporary -Confirm:$false | Should -BeNullOrEmpty
        (Get-ReflectAddress -Pipe $script:Pipe).IPAddress.IPAddressToString | Should -Contain '192.0.2.50'
    }
    It 'adds piped strings in one change and is idempotent; -PassThru returns typed objects' {
        # Not 192.0.2.1: the engine's first run (a config file without addresses) picked that one itself.
        $r = '192.0.2.31', '192.0.2.32' | Add-ReflectAddress -Pipe $script:Pipe -Temporary -Confirm:$false -PassThru
        $r.Count | Should -Be 2
        $r | ForEach-Object { $_.Added | Should -BeTrue }
        $r[0].PSTypeNames | Should -Contain 'Retroflect.ReflectAddress'
        $r[0].IPAddress | Should -BeOfType [ipaddress]
        $r[0].AddressFamily | Should -Be 'IPv4'
        (Add-ReflectAddress 192.0.2.31 -Pipe $script:Pipe -Temporary -Confirm:$false -PassThru).Added | Should -BeFalse
    }
    It 'reports Persisted from the engine: saved without -Temporary, not saved with it' {
        (Add-ReflectAddress 192.0.2.60 -Pipe $script:Pipe -Confirm:$false -PassThru).Persisted | Should -BeTrue
        (Get-Content $script:Config -Raw | ConvertFrom-Json).reflectAddresses | Should -Contain '192.0.2.60'
        (Add-ReflectAddress 192.0.2.61 -Pipe $script:Pipe -Temporary -Confirm:$false -PassThru).Persisted | Should -BeFalse
    }
    It 'takes [ipaddress] objects and objects with an IPAddress property' {
        $r = [ipaddress]'2001:db8::7', [pscustomobject]@{ IPAddress = '192.0.2.70' } | Add-ReflectAddress -Pipe $script:Pipe -Temporary -Confirm:$false -PassThru
        $r.IPAddress.IPAddressToString | Should -Be @('2001:db8::7', '192.0.2.70')
        $r[0].AddressFamily | Should -Be 'IPv6'
    }
    It '-WhatIf changes nothing' {
        Add-ReflectAddress 192.0.2.3 -Pipe $script:Pipe -WhatIf
        (Get-ReflectAddress -Pipe $script:Pipe).IPAddress.IPAddressToString | Should -Not -Contain '192.0.2.3'
    }
    It 'refuses a local address with Retroflect.InvalidAddress and a hint, adding nothing of the change' {
        Add-ReflectAddress '127.0.0.1', '192.0.2.4' -Pipe $script:Pipe -Temporary -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable err
        $err[-1].FullyQualifiedErrorId | Should -BeLike 'Retroflect.InvalidAddress*'
        $err[-1].CategoryInfo.Category | Should -Be 'InvalidArgument'
        $err[-1].ErrorDetails.RecommendedAction | Should -Not -BeNullOrEmpty
        (Get-ReflectAddress -Pipe $script:Pipe).IPAddress.IPAddressToString | Should -Not -Contain '192.0.2.4'
        # The error names the address the engine refused, not the whole request.
        $err[-1].TargetObject | Should -Be '127.0.0.1'
        $err[-1].CategoryInfo.TargetName | Should -Be '127.0.0.1'
    }
    It 'gives one ErrorRecord for one refusal, its id ending in ,Add-ReflectAddress (issue 21)' {
        Add-ReflectAddress 127.0.0.1 -Pipe $script:Pipe -Temporary -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable err
        $err.Count | Should -Be 1
        $err[0].FullyQualifiedErrorId | Should -Be 'Retroflect.InvalidAddress,Add-ReflectAddress'
        $Error.Clear()
        try { Add-ReflectAddress 192.0.2.9 -Pipe (New-TestPath 'none.sock') -Confirm:$false -ErrorVariable err2 } catch { $caught = $_ }
        $caught.FullyQualifiedErrorId | Should -Be 'Retroflect.EngineNotRunning,Add-ReflectAddress'
        $err2.Count | Should -Be 1
        $Error.Count | Should -Be 1
    }
    It 'never suggests an address that is already configured (issue 21)' {
        $configured = @((Get-ReflectAddress -Pipe $script:Pipe).IPAddress.IPAddressToString)
        $configured | Should -Contain '192.0.2.1'   # the first run's own pick: the first suggestion candidate
        Add-ReflectAddress 127.0.0.1 -Pipe $script:Pipe -Temporary -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable err
        $suggestion = $err[0].Exception.Data['RetroflectDetails'].suggestion
        $suggestion | Should -Not -BeNullOrEmpty
        $configured | Should -Not -Contain $suggestion
        $err[0].ErrorDetails.RecommendedAction | Should -Match ([regex]::Escape($suggestion))
    }
    It 'a confirmation under pwsh -NonInteractive stops with Retroflect.ConfirmationRequired, $? false, nothing added (issue 21)' {
        $r = Invoke-TestScript @"
Import-Module `$env:RETROFLECT_TEST_MODULE
Add-ReflectAddress 192.0.2.77 -Pipe '$($script:Pipe)' -Temporary -Confirm -ErrorAction Continue
"ok=`$?"
"id=`$(`$Error[0].FullyQualifiedErrorId)"
"@
        $r.Output | Should -Match 'ok=False'
        $r.Output | Should -Match 'id=Retroflect.ConfirmationRequired,Add-ReflectAddress'
        (Get-ReflectAddress -Pipe $script:Pipe).IPAddress.IPAddressToString | Should -Not -Contain '192.0.2.77'
    }
    It 'writes the engine''s warnings as warnings' {
        # 203.0.113.0/24 is documentation, 8.8.8.8 a real public address: the engine warns that it becomes unreachable.
        Add-ReflectAddress 8.8.8.8 -Pipe $script:Pipe -Temporary -Confirm:$false -WarningVariable warn -WarningAction SilentlyContinue
        $warn | Should -Not -BeNullOrEmpty
        Remove-ReflectAddress 8.8.8.8 -Pipe $script:Pipe -Temporary -Confirm:$false
    }
    It 'stops with Retroflect.EngineNotRunning when no engine answers' {
        { Add-ReflectAddress 192.0.2.9 -Pipe (New-TestPath 'none.sock') -Confirm:$false } | Should -Throw -ErrorId 'Retroflect.EngineNotRunning*'
    }
}
