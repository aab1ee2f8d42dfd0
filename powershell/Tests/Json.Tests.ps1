# Pester 5 tests of how the module's objects serialize (issue 14 item 9): every object type that carries an address
# gives ConvertTo-Json the address as text ("192.0.2.1", IPv6 too) at any -Depth, while the property stays an
# [ipaddress] in the pipeline; durations are seconds. One engine with IPv4 and IPv6 addresses, a port map and a
# shield port; traffic for Get-ReflectFlow and Watch-ReflectTraffic.

BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $script:V4 = '203.0.113.30'
    $script:V6 = '2001:db8::30'
    $script:Pipe = Start-TestEngine -Address $script:V4, $script:V6 -ShieldPort '18099/tcp'
    Add-ReflectAddress -Address '203.0.113.31' -PortMap '18098=18097/tcp' -Temporary -Pipe $script:Pipe -Confirm:$false

    function Get-TestJson {
        # The object as ConvertTo-Json writes it (deep enough for every nested object) and read back.
        param([Parameter(Mandatory)][object]$InputObject)
        $text = ConvertTo-Json -InputObject $InputObject -Depth 10 -Compress
        # No [ipaddress] or [timespan] internals anywhere.
        $text | Should -Not -Match '"(ScopeId|IsIPv6Multicast|IsIPv4MappedToIPv6|Ticks|TotalSeconds)":'
        return (ConvertFrom-Json -InputObject $text)
    }
}
AfterAll { Stop-TestEngine $script:Pipe }

Describe 'ConvertTo-Json of the module''s objects' {
    It 'through remoting (the CliXml serializer, as Export-/Import-Clixml): IPAddress stays an [ipaddress], the JSON form is lost, as about_Retroflect says (issue 21)' {
        $file = New-TestPath 'addresses.xml'
        Get-ReflectAddress -Address $script:V4 -Pipe $script:Pipe | Export-Clixml -LiteralPath $file
        $back = Import-Clixml -LiteralPath $file
        $back.PSTypeNames | Should -Contain 'Deserialized.Retroflect.ReflectAddress'
        $back.IPAddress -is [ipaddress] | Should -BeTrue
        ConvertTo-Json -InputObject $back -Compress | Should -Match '"IPAddress":\{'
        # The documented way: ConvertTo-Json where the cmdlet ran.
        (Get-ReflectAddress -Address $script:V4 -Pipe $script:Pipe | ConvertTo-Json -Compress) | Should -Match ('"IPAddress":"' + [regex]::Escape($script:V4) + '"')
    }
    It 'Retroflect.ReflectAddress (Get-ReflectAddress): IPAddress as text, IPv4 and IPv6; still an [ipaddress]' {
        $list = @(Get-ReflectAddress -Pipe $script:Pipe)
        $list.Count | Should -Be 3
        foreach ($a in $list) {
            $a.IPAddress -is [ipaddress] | Should -BeTrue
            $json = Get-TestJson $a
            $json.IPAddress | Should -BeOfType [string]
            $json.IPAddress | Should -Be $a.IPAddress.ToString()
            $json.AddressFamily | Should -Be $a.AddressFamily
            $json.Packets | Should -Be $a.Packets
            $json.PortMap.Port | Should -Be $a.PortMap.Port
        }
        # The whole list, piped, as the issue writes it.
        $all = Get-ReflectAddress -Pipe $script:Pipe | ConvertTo-Json | ConvertFrom-Json
        $all.IPAddress | Should -Be @($script:V4, $script:V6, '203.0.113.31')
    }
    It 'Retroflect.ReflectAddress from Add-ReflectAddress -PassThru and Remove-ReflectAddress -PassThru' {
        $added = Add-ReflectAddress -Address '2001:db8::31' -Temporary -PassThru -Pipe $script:Pipe -Confirm:$false
        $added.IPAddress -is [ipaddress] | Should -BeTrue
        $json = Get-TestJson $added
        $json.IPAddress | Should -Be '2001:db8::31'
        $json.Added | Should -BeTrue
        $removed = Remove-ReflectAddress -Address '2001:db8::31' -PassThru -Pipe $script:Pipe -Confirm:$false
        $removed.IPAddress -is [ipaddress] | Should -BeTrue
        (Get-TestJson $removed).IPAddress | Should -Be '2001:db8::31'
    }
    It 'Retroflect.Status (Get-Retroflect): ReflectAddresses as text, UptimeSeconds a number, StartedAt a date' {
        $status = Get-Retroflect -Pipe $script:Pipe
        $status.ReflectAddresses | ForEach-Object { $_ -is [ipaddress] | Should -BeTrue }
        $json = Get-TestJson $status
        @($json.ReflectAddresses) | Should -Be @($script:V4, $script:V6, '203.0.113.31')
        $json.UptimeSeconds | Should -BeOfType [double]
        $json.StartedAt | Should -BeOfType [datetime]
        $json.ShieldPorts.Port | Should -Be 18099
        # At the default depth too (the array of addresses is one level down).
        (Get-Retroflect -Pipe $script:Pipe | ConvertTo-Json -WarningAction SilentlyContinue | ConvertFrom-Json).ReflectAddresses |
            Should -Be @($script:V4, $script:V6, '203.0.113.31')
    }
    It 'Retroflect.Stats (Get-ReflectStats): the addresses in ByAddress as text at any depth' {
        $stats = Get-ReflectStats -Pipe $script:Pipe
        $stats.ByAddress.IPAddress | ForEach-Object { $_ -is [ipaddress] | Should -BeTrue }
        $json = Get-TestJson $stats
        $json.ByAddress.IPAddress | Should -Be @($script:V4, $script:V6, '203.0.113.31')
        $json.UptimeSeconds | Should -BeOfType [double]
        $json.ByShieldPort.Port | Should -Be 18099
        # As the help's example writes it.
        (Get-ReflectStats -Pipe $script:Pipe | ConvertTo-Json -Depth 4 | ConvertFrom-Json).ByAddress.IPAddress |
            Should -Be @($script:V4, $script:V6, '203.0.113.31')
    }
    It 'Retroflect.AddressTest (Test-ReflectAddress): IPAddress and Suggestion as text' {
        $t = Test-ReflectAddress 127.0.0.1 -Pipe $script:Pipe
        $t.IPAddress -is [ipaddress] | Should -BeTrue
        $t.Suggestion -is [ipaddress] | Should -BeTrue
        $json = Get-TestJson $t
        $json.IPAddress | Should -Be '127.0.0.1'
        $json.Suggestion | Should -Be $t.Suggestion.ToString()
        $json.Reasons.Code | Should -Not -BeNullOrEmpty
        (Get-TestJson (Test-ReflectAddress $script:V6 -Pipe $script:Pipe)).IPAddress | Should -Be $script:V6
    }
    It 'Retroflect.ShieldPort (Get-ShieldPort, Add-ShieldPort -PassThru): plain numbers and text' {
        $json = Get-TestJson (Get-ShieldPort -Pipe $script:Pipe)
        $json.Port | Should -Be 18099
        $json.Protocol | Should -Be 'tcp'
        $json = Get-TestJson (Add-ShieldPort -Port 18096 -Protocol udp -Temporary -PassThru -Pipe $script:Pipe -Confirm:$false)
        $json.Port | Should -Be 18096
    }
    It 'Retroflect.Flow (Get-ReflectFlow): ReflectAddress and LocalAddress as text' {
        $listener = [System.Net.Sockets.TcpListener]::new([ipaddress]::Any, 18095)
        $listener.Start()
        try {
            $client = [System.Net.Sockets.TcpClient]::new()
            $client.Connect($script:V4, 18095)
            $server = $listener.AcceptTcpClient()
            $client.Close(); $server.Close()
        }
        finally { $listener.Stop() }
        $flow = Get-ReflectFlow -Pipe $script:Pipe -Protocol tcp -ServerPort 18095 | Select-Object -First 1
        $flow.ReflectAddress -is [ipaddress] | Should -BeTrue
        $flow.LocalAddress -is [ipaddress] | Should -BeTrue
        $json = Get-TestJson $flow
        $json.ReflectAddress | Should -Be $script:V4
        $json.LocalAddress | Should -Be $flow.LocalAddress.ToString()
        $json.Bytes | Should -Be $flow.Bytes
        $json.LastSeen | Should -BeOfType [datetime]
    }
    It 'Retroflect.Packet (Watch-ReflectTraffic): Source, Destination and the reflected ones as text' {
        $packets = @(Invoke-WithTestTraffic $script:V4 { Watch-ReflectTraffic -Pipe $script:Pipe -Address $script:V4 -Count 2 -Duration '00:01:00' })
        $packets.Count | Should -Be 2
        foreach ($p in $packets) {
            $p.Source -is [ipaddress] | Should -BeTrue
            $p.ReflectedSource -is [ipaddress] | Should -BeTrue
            $json = Get-TestJson $p
            $json.Source | Should -Be $p.Source.ToString()
            $json.Destination | Should -Be $p.Destination.ToString()
            $json.ReflectedSource | Should -Be $p.Destination.ToString()
            $json.ReflectedDestination | Should -Be $p.Source.ToString()
            $json.DestinationPort, $json.SourcePort | Should -Contain 9
            $json.Time | Should -BeOfType [datetime]
        }
    }
    It 'the objects stay typed for the rest of the pipeline: views, sorting, Export-Csv' {
        $list = Get-ReflectAddress -Pipe $script:Pipe | Sort-Object IPAddress -Descending
        $list[0].IPAddress -is [ipaddress] | Should -BeTrue
        ($list | Format-Table | Out-String) | Should -Match ([regex]::Escape($script:V6))
        ($list | Format-List | Out-String) | Should -Match 'AddressFamily\s*:\s*IPv6'
        ($list | Get-Member -Name IPAddress).Definition | Should -Match '^(System\.Net\.)?ipaddress IPAddress'
        $csv = @($list | ConvertTo-Csv -NoTypeInformation | ConvertFrom-Csv)
        $csv.IPAddress | Should -Contain $script:V6
        $csv[0].PSObject.Properties.Name | Select-Object -First 2 | Should -Be @('IPAddress', 'AddressFamily')
        # Get-ReflectAddress | Remove-ReflectAddress binds the [ipaddress] by property name.
        Get-ReflectAddress '203.0.113.31' -Pipe $script:Pipe | Remove-ReflectAddress -Pipe $script:Pipe -Confirm:$false
        (Get-ReflectAddress -Pipe $script:Pipe).IPAddress.IPAddressToString | Should -Not -Contain '203.0.113.31'
    }
}
