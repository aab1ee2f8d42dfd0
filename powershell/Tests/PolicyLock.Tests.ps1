BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    # A managed policy file (as /etc/retroflect/policy.json would be) that locks the configuration; the engine is
    # started with entries of its own (from its command line, not through the pipe), so there is something to change.
    $script:Policy = New-TestPath 'lock-policy.json'
    Set-Content -LiteralPath $script:Policy -Value ('{"schemaVersion": 2, "lockChanges": true, ' +
        '"reflectAddresses": ["203.0.113.90"], "shieldPorts": ["9300/tcp"]}')
    $env:RETROFLECT_POLICY = $script:Policy
    $script:Config = New-TestPath 'lock-config.json'
    $script:Pipe = Start-TestEngine -Address '203.0.113.91' -ShieldPort '9301/tcp' -ConfigPath $script:Config
    function Get-Entries {
        # Addresses and shield ports of the running engine as one sorted text list, to show nothing changed.
        @(Get-ReflectAddress -Pipe $script:Pipe | ForEach-Object { '{0} {1}' -f $_.IPAddress, $_.Source }) +
        @(Get-ShieldPort -Pipe $script:Pipe | ForEach-Object { '{0}/{1} {2}' -f $_.Port, $_.Protocol, $_.Source }) |
            Sort-Object
    }
    function Assert-LockedRefusal {
        # $Caught: what the change threw; $Collected: its -ErrorVariable; $Error was cleared before it. One
        # ErrorRecord, Retroflect.ManagedByPolicy,<Cmdlet>, saying the configuration is locked by policy and what to
        # do; the engine's details say locked; nothing changed.
        param($Caught, $Collected, [string]$Cmdlet, [string[]]$Before)
        $Caught | Should -Not -BeNullOrEmpty
        @($Collected).Count | Should -Be 1
        $Error.Count | Should -Be 1
        $Caught.FullyQualifiedErrorId | Should -Be "Retroflect.ManagedByPolicy,$Cmdlet"
        # A terminating error reaches -ErrorVariable as the exception that carries it (PowerShell's own behaviour).
        $record = @($Collected)[0]
        if ($record -isnot [System.Management.Automation.ErrorRecord]) { $record = $record.ErrorRecord }
        $record.FullyQualifiedErrorId | Should -Be "Retroflect.ManagedByPolicy,$Cmdlet"
        $Caught.CategoryInfo.Category | Should -Be 'PermissionDenied'
        $Caught.Exception.Data['RetroflectCode'] | Should -Be 'E_MANAGED_BY_POLICY'
        $Caught.Exception.Data['RetroflectDetails'].locked | Should -BeTrue
        $Caught.Exception.Message | Should -Match 'configuration is locked by managed policy'
        $Caught.Exception.Message | Should -Match ([regex]::Escape($script:Policy))
        $Caught.Exception.Message | Should -Match 'nothing was changed'
        $Caught.ErrorDetails.RecommendedAction | Should -Match 'administrator'
        $Caught.ErrorDetails.RecommendedAction | Should -Match 'lift the lock'
        Get-Entries | Should -Be $Before
    }
}
AfterAll {
    Stop-TestEngine $script:Pipe
    Remove-Item Env:\RETROFLECT_POLICY -ErrorAction SilentlyContinue
}

Describe 'A policy that locks the configuration (lockChanges)' {
    It 'Get-Retroflect shows LockedByPolicy, also in its list view' {
        $status = Get-Retroflect -Pipe $script:Pipe
        $status.LockedByPolicy | Should -BeTrue
        $status.LockedByPolicy | Should -BeOfType [bool]
        ($status | Format-List | Out-String) | Should -Match 'LockedByPolicy\s*:\s*True'
        Get-Entries |
            Should -Be @('203.0.113.90 Policy', '203.0.113.91 Temporary', '9300/tcp Policy', '9301/tcp Temporary')
    }
    # One refusal per kind of change: each cmdlet must fail as one ManagedByPolicy error naming itself and change
    # nothing. The call is dot-sourced so that its -ErrorVariable lands in this scope.
    It '<Cmdlet> is one Retroflect.ManagedByPolicy,<Cmdlet> error and <Outcome>' -ForEach @(
        @{ Cmdlet = 'Add-ReflectAddress'; Outcome = 'adds nothing'; Message = 'adding reflect addresses'
            Call = { Add-ReflectAddress '203.0.113.92' -Pipe $script:Pipe -Confirm:$false -ErrorVariable ev } }
        @{ Cmdlet = 'Remove-ShieldPort'; Outcome = 'removes nothing'; Message = 'removing shield ports'
            Call = { Remove-ShieldPort 9301 -Protocol tcp -Pipe $script:Pipe -Confirm:$false -ErrorVariable ev } }
        @{ Cmdlet = 'Set-ReflectAddress'; Outcome = 'sets nothing'; Message = 'setting the reflect addresses'
            Call = { Set-ReflectAddress '203.0.113.93' -Pipe $script:Pipe -Confirm:$false -ErrorVariable ev } }
    ) {
        $before = Get-Entries
        $Error.Clear()
        $caught = $null
        $ev = $null
        try { . $Call }
        catch { $caught = $_ }
        Assert-LockedRefusal $caught $ev $Cmdlet $before
        $caught.Exception.Message | Should -Match $Message
    }
    It 'lifting the lock in the policy file unlocks the engine live' {
        Set-Content -LiteralPath $script:Policy -Value ('{"schemaVersion": 2, ' +
            '"reflectAddresses": ["203.0.113.90"], "shieldPorts": ["9300/tcp"]}')
        $deadline = [datetime]::UtcNow.AddSeconds(10)
        while ((Get-Retroflect -Pipe $script:Pipe).LockedByPolicy -and [datetime]::UtcNow -lt $deadline) {
            Start-Sleep -Milliseconds 200
        }
        (Get-Retroflect -Pipe $script:Pipe).LockedByPolicy | Should -BeFalse
        Add-ReflectAddress '203.0.113.92' -Temporary -Pipe $script:Pipe -Confirm:$false
        (Get-ReflectAddress '203.0.113.92' -Pipe $script:Pipe).Source | Should -Be 'Temporary'
    }
}
