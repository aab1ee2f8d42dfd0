# The class-based DSC resources RetroflectReflectAddress and RetroflectShieldPort (Retroflect.psm1): Get, Test and
# Set called directly, as the DSC engine calls them (it is not available here), against a real engine with a managed
# policy file. Set reaches the wanted state and saves it in the config file, Test then says so and a second Set
# changes nothing; Get reports Ensure and Source; wanting a policy entry absent fails with
# Retroflect.ManagedByPolicy and leaves it.
BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $script:Policy = New-TestPath 'dsc-policy.json'
    Set-Content -LiteralPath $script:Policy -Value ('{"schemaVersion": 2, "reflectAddresses": ["203.0.113.70"], ' +
        '"shieldPorts": [{"port": 9200, "protocol": "tcp"}]}')
    $env:RETROFLECT_POLICY = $script:Policy
    $script:Config = New-TestPath 'dsc-config.json'
    $script:Pipe = Start-TestEngine -Address '203.0.113.9' -ShieldPort '7000/udp' -ConfigPath $script:Config
    function New-Resource {
        # A resource object as DSC makes one from a configuration block.
        param([string]$Type, [hashtable]$Property)
        $r = InModuleScope Retroflect -Parameters @{ T = $Type } { param($T) New-Object -TypeName $T }
        foreach ($k in $Property.Keys) { $r.$k = $Property[$k] }
        $r.Pipe = $script:Pipe
        return $r
    }
    function Get-SavedConfig { Get-Content -Raw -LiteralPath $script:Config | ConvertFrom-Json }
}
AfterAll {
    Stop-TestEngine $script:Pipe
    Remove-Item Env:\RETROFLECT_POLICY -ErrorAction SilentlyContinue
}

Describe 'The module exports the DSC resources' {
    It 'names them in the manifest and finds them as DSC resources of the module' {
        $module = Get-Module Retroflect
        @($module.ExportedDscResources) | Sort-Object | Should -Be @('RetroflectReflectAddress', 'RetroflectShieldPort')
    }
}

Describe 'RetroflectReflectAddress' {
    It 'Present with port maps: Test is false, Set adds the address with exactly those maps and saves it' {
        $r = New-Resource RetroflectReflectAddress @{ Address = '203.0.113.61'; PortMap = @('80=8080') }
        $r.Get().Ensure | Should -Be 'Absent'
        $r.Test() | Should -BeFalse
        $r.Set()
        $r.Test() | Should -BeTrue
        $now = $r.Get()
        $now.Ensure | Should -Be 'Present'
        $now.Source | Should -Be 'Config'
        $now.PortMap | Should -Be @('80=8080/tcp', '80=8080/udp')
        @((Get-SavedConfig).reflectAddresses | ForEach-Object { if ($_ -is [string]) { $_ } else { $_.address } }) |
            Should -Contain '203.0.113.61'
        # The other entries are untouched: the engine's own address and the policy's.
        @(Get-ReflectAddress -Pipe $script:Pipe | ForEach-Object { $_.IPAddress.ToString() }) | Sort-Object |
            Should -Be @('203.0.113.61', '203.0.113.70', '203.0.113.9')
    }
    It 'other maps wanted: Test is false, Set makes the maps exactly these; a second Set changes nothing' {
        $r = New-Resource RetroflectReflectAddress @{ Address = '203.0.113.61'; PortMap = @('443=8443/tcp') }
        $r.Test() | Should -BeFalse
        $r.Set()
        $r.Get().PortMap | Should -Be @('443=8443/tcp')
        $r.Test() | Should -BeTrue
        $before = Get-Content -Raw -LiteralPath $script:Config
        $r.Set()
        Get-Content -Raw -LiteralPath $script:Config | Should -Be $before
    }
    It 'without PortMap, Present only asks for the address (its maps stay)' {
        $r = New-Resource RetroflectReflectAddress @{ Address = '203.0.113.61' }
        $r.Test() | Should -BeTrue
    }
    It 'Absent: Set removes the address and nothing else' {
        $r = New-Resource RetroflectReflectAddress @{ Address = '203.0.113.61'; Ensure = 'Absent' }
        $r.Test() | Should -BeFalse
        $r.Set()
        $r.Test() | Should -BeTrue
        $r.Get().Ensure | Should -Be 'Absent'
        @(Get-ReflectAddress -Pipe $script:Pipe | ForEach-Object { $_.IPAddress.ToString() }) | Sort-Object |
            Should -Be @('203.0.113.70', '203.0.113.9')
    }
    It 'a policy address: Get shows Source Policy; Absent fails with Retroflect.ManagedByPolicy and it stays' {
        $r = New-Resource RetroflectReflectAddress @{ Address = '203.0.113.70'; Ensure = 'Absent' }
        $r.Get().Source | Should -Be 'Policy'
        $r.Test() | Should -BeFalse
        $err = $null
        try { $r.Set() } catch { $err = $_ }
        $err.Exception.InnerException.ErrorRecord.FullyQualifiedErrorId, $err.FullyQualifiedErrorId |
            Where-Object { $_ -like 'Retroflect.ManagedByPolicy*' } | Should -Not -BeNullOrEmpty
        (Get-ReflectAddress 203.0.113.70 -Pipe $script:Pipe).Source | Should -Be 'Policy'
    }
    It 'a bad address is Retroflect.InvalidAddress from Test' {
        $r = New-Resource RetroflectReflectAddress @{ Address = 'not-an-address' }
        { $r.Test() } | Should -Throw -ExpectedMessage "*'not-an-address' is not an IP address*"
    }
}

Describe 'RetroflectShieldPort' {
    It 'Present, both protocols: Set shields TCP and UDP and saves them; the others stay' {
        $r = New-Resource RetroflectShieldPort @{ Port = 8080; Protocol = 'both' }
        $r.Test() | Should -BeFalse
        $r.Set()
        $r.Test() | Should -BeTrue
        $r.Get().Ensure | Should -Be 'Present'
        $r.Get().Source | Should -Be 'Config'
        @(Get-ShieldPort -Pipe $script:Pipe | ForEach-Object { '{0}/{1}' -f $_.Port, $_.Protocol }) | Sort-Object |
            Should -Be @('7000/udp', '8080/tcp', '8080/udp', '9200/tcp')
        @((Get-SavedConfig).shieldPorts | ForEach-Object { '{0}/{1}' -f $_.port, $_.protocol }) |
            Should -Contain '8080/udp'
    }
    It 'Absent for UDP only: Set unshields 8080/udp and keeps 8080/tcp' {
        $r = New-Resource RetroflectShieldPort @{ Port = 8080; Protocol = 'udp'; Ensure = 'Absent' }
        $r.Test() | Should -BeFalse
        $r.Set()
        $r.Test() | Should -BeTrue
        (New-Resource RetroflectShieldPort @{ Port = 8080; Protocol = 'tcp' }).Test() | Should -BeTrue
        (New-Resource RetroflectShieldPort @{ Port = 8080; Protocol = 'both' }).Test() | Should -BeFalse
    }
    It 'a policy port: Absent fails with Retroflect.ManagedByPolicy and it stays' {
        $r = New-Resource RetroflectShieldPort @{ Port = 9200; Protocol = 'tcp'; Ensure = 'Absent' }
        $r.Get().Source | Should -Be 'Policy'
        $err = $null
        try { $r.Set() } catch { $err = $_ }
        $err | Should -Not -BeNullOrEmpty
        ($err | Out-String) | Should -Match 'set by managed policy'
        (Get-ShieldPort -Port 9200 -Pipe $script:Pipe).Source | Should -Be 'Policy'
    }
}
