BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $script:Config = New-TestPath 'remove-address-config.json'
    $script:Pipe = Start-TestEngine -Address '192.0.2.11', '192.0.2.12', '2001:db8::12' -ConfigPath $script:Config
}
AfterAll { Stop-TestEngine $script:Pipe }

Describe 'Remove-ReflectAddress' {
    It 'removes a missing address as a non-terminating Retroflect.AddressNotFound and still removes the others' {
        Remove-ReflectAddress '192.0.2.99', '192.0.2.11' -Pipe $script:Pipe -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable err
        $err[-1].FullyQualifiedErrorId | Should -BeLike 'Retroflect.AddressNotFound*'
        $err[-1].CategoryInfo.Category | Should -Be 'ObjectNotFound'
        (Get-ReflectAddress -Pipe $script:Pipe).IPAddress.IPAddressToString | Should -Not -Contain '192.0.2.11'
    }
    It '-ErrorAction Ignore makes "make sure it is gone" idempotent' {
        { Remove-ReflectAddress 192.0.2.99 -Pipe $script:Pipe -Confirm:$false -ErrorAction Ignore } | Should -Not -Throw
    }
    It 'removes an address that is only in the config file (taken off the running engine with -Temporary), as the engine does' {
        Add-ReflectAddress 192.0.2.15 -Pipe $script:Pipe -Confirm:$false
        Remove-ReflectAddress 192.0.2.15 -Temporary -Pipe $script:Pipe -Confirm:$false
        (Get-ReflectAddress -Pipe $script:Pipe).IPAddress.IPAddressToString | Should -Not -Contain '192.0.2.15'
        (Get-Content -Raw -LiteralPath $script:Config | ConvertFrom-Json).reflectAddresses | Should -Contain '192.0.2.15'
        $gone = Remove-ReflectAddress 192.0.2.15 -Pipe $script:Pipe -Confirm:$false -PassThru -ErrorVariable err
        $err | Should -BeNullOrEmpty
        $gone.IPAddress.IPAddressToString | Should -Be '192.0.2.15'
        (Get-Content -Raw -LiteralPath $script:Config | ConvertFrom-Json).reflectAddresses | Should -Not -Contain '192.0.2.15'
    }
    It '-Temporary: an address only in the config file is not running, so Retroflect.AddressNotFound; the file keeps it' {
        Add-ReflectAddress 192.0.2.16 -Pipe $script:Pipe -Confirm:$false
        Remove-ReflectAddress 192.0.2.16 -Temporary -Pipe $script:Pipe -Confirm:$false
        Remove-ReflectAddress '192.0.2.16', 'nonsense' -Temporary -Pipe $script:Pipe -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable err
        @($err).Count | Should -Be 2
        @($err | Where-Object { $_.FullyQualifiedErrorId -like 'Retroflect.InvalidAddress*' }).Count | Should -Be 1
        $notFound = @($err | Where-Object { $_.FullyQualifiedErrorId -like 'Retroflect.AddressNotFound*' })
        $notFound.Count | Should -Be 1
        $notFound[0].TargetObject | Should -Be '192.0.2.16'
        $notFound[0].Exception.Message | Should -BeLike '*not a running reflect address*'
        (Get-Content -Raw -LiteralPath $script:Config | ConvertFrom-Json).reflectAddresses | Should -Contain '192.0.2.16'
        Remove-ReflectAddress 192.0.2.16 -Pipe $script:Pipe -Confirm:$false
    }
    It '-WhatIf removes nothing; -PassThru returns what was removed' {
        Remove-ReflectAddress 192.0.2.12 -Pipe $script:Pipe -WhatIf
        (Get-ReflectAddress -Pipe $script:Pipe).IPAddress.IPAddressToString | Should -Contain '192.0.2.12'
        (Remove-ReflectAddress 192.0.2.12 -Pipe $script:Pipe -Confirm:$false -PassThru).IPAddress.IPAddressToString | Should -Be '192.0.2.12'
    }
    It 'Get-ReflectAddress | Remove-ReflectAddress -Confirm:$false removes all (IPAddress binds by property name)' {
        Add-ReflectAddress 192.0.2.13 -Pipe $script:Pipe -Confirm:$false
        Get-ReflectAddress -Pipe $script:Pipe | Remove-ReflectAddress -Confirm:$false
        Get-ReflectAddress -Pipe $script:Pipe | Should -BeNullOrEmpty
    }
    It 'completes -Address with the running engine''s addresses' {
        Add-ReflectAddress 192.0.2.14 -Pipe $script:Pipe -Confirm:$false
        $line = "Remove-ReflectAddress -Pipe '$($script:Pipe)' -Address 192.0.2.1"
        (TabExpansion2 -inputScript $line -cursorColumn $line.Length).CompletionMatches.CompletionText | Should -Contain '192.0.2.14'
    }
}
