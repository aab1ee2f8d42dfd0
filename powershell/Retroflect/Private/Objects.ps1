# Builders that turn the engine's JSON (src/engine/types.ts, docs/protocol.md) into typed PowerShell objects.
# Each object carries a PSTypeName that Retroflect.Format.ps1xml has views for. Properties get real types:
# [ipaddress] for addresses (named IPAddress with an AddressFamily, as NetTCPIP does: 'Address' would collide with
# the Address() method PowerShell gives every array), [datetime] for times, [long] for counters. Durations are
# [double] seconds (UptimeSeconds); the format views show them as a [timespan].
#
# Objects that carry an address are built by New-RetroflectObject on an instance of one of the classes below, which
# holds the JSON form of each property (address text, seconds), with every property also a note property holding
# the typed value: ConvertTo-Json writes the base object's own properties, PowerShell finds the note properties
# first. Why, and what was measured: powershell/README.md, "Objects and ConvertTo-Json". A class lists the property
# names of its type in the builder's order; they are [object] so that $null stays null.

# Each class also gives its objects a ToString() (what "$o", Group-Object's Group column, Out-String of a nested
# object and ConvertTo-Json below -Depth show), so they read as an address or a connection, not as the class name.
# A property holding a collection (PortMap, ReflectAddresses, BackendInfo ...) is a note property whose value has a
# ToString() of one line, so Export-Csv and ConvertTo-Csv write '80=8080;443=8443/tcp', not 'System.Object[]':
# Add-RetroflectNoteProperty below.
class RetroflectText {
    # 'address:port' as URLs write it: an IPv6 address in brackets ([2001:db8::1]:443); the address alone without a port.
    static [string] Endpoint([object]$Address, [object]$Port) {
        $text = [string]$Address
        if ($null -eq $Port -or '' -eq [string]$Port) { return $text }
        if ($text.Contains(':')) { $text = '[' + $text + ']' }
        return $text + ':' + [string]$Port
    }
}
class RetroflectReflectAddressJson {
    [object]$IPAddress; [object]$AddressFamily; [object]$Source; [object]$Persisted; [object]$Packets; [object]$Bytes; [object]$PortMap
    [object]$AllowedPort; [object]$AllowedUser; [object]$AllowedGroup; [object]$AllowedCGroup; [object]$AllowedApp; [object]$NotAllowed; [object]$Pipe
    [string] ToString() { return [string]$this.IPAddress }
}
class RetroflectStatusJson {
    [object]$State; [object]$Version; [object]$Backend; [object]$ProcessId; [object]$StartedAt; [object]$UptimeSeconds
    [object]$ReflectAddresses; [object]$ShieldPorts; [object]$ConfigPath; [object]$PipeName; [object]$Pipe; [object]$BackendInfo
    [string]$RunsAs; [bool]$LockedByPolicy
    [string] ToString() { return [string]$this.State }
}
class RetroflectFlowJson {
    [object]$Protocol; [object]$ReflectAddress; [object]$LocalAddress; [object]$ClientPort; [object]$ServerPort; [object]$MappedFromPort
    [object]$Packets; [object]$Bytes; [object]$FirstSeen; [object]$LastSeen; [object]$State
    [object]$ProcessId; [object]$ProcessName; [object]$UserId; [object]$User; [object]$PackageFamilyName; [object]$Pipe
    [string] ToString() {
        # The connection as the client made it: local address and port -> reflect address and the port it dialled.
        $dialled = $this.ServerPort
        if ($null -ne $this.MappedFromPort) { $dialled = $this.MappedFromPort }
        return ('{0} {1} -> {2}' -f $this.Protocol, [RetroflectText]::Endpoint($this.LocalAddress, $this.ClientPort),
            [RetroflectText]::Endpoint($this.ReflectAddress, $dialled))
    }
}
class RetroflectAddressTestJson {
    [object]$Input; [object]$IPAddress; [object]$Usable; [object]$Configured; [object]$Reason; [object]$Reasons; [object]$Warnings
    [object]$Suggestion; [object]$SuggestionMessage; [object]$Pipe
    [string] ToString() { return [string]$this.Input }
}
class RetroflectPacketJson {
    [object]$Time; [object]$Direction; [object]$Interface; [object]$Verdict; [object]$MalformedReason; [object]$Protocol; [object]$Source; [object]$SourcePort
    [object]$Destination; [object]$DestinationPort; [object]$ReflectedSource; [object]$ReflectedDestination; [object]$Length
    [object]$CapturedLength; [object]$TcpFlags; [object]$IcmpType; [object]$Pipe
    [string] ToString() {
        return ('{0} {1} {2} -> {3}' -f $this.Verdict, $this.Protocol, [RetroflectText]::Endpoint($this.Source, $this.SourcePort),
            [RetroflectText]::Endpoint($this.Destination, $this.DestinationPort))
    }
}
# Resolved here, in the file that defines the classes (Windows PowerShell 5.1 finds a script's classes by name only
# within that script).
$script:RetroflectJsonForm = @{
    'Retroflect.ReflectAddress' = [RetroflectReflectAddressJson]
    'Retroflect.Status'         = [RetroflectStatusJson]
    'Retroflect.Flow'           = [RetroflectFlowJson]
    'Retroflect.AddressTest'    = [RetroflectAddressTestJson]
    'Retroflect.Packet'         = [RetroflectPacketJson]
}

function ConvertTo-RetroflectJsonValue {
    # The JSON form of one property value: an address as its text, a time span as seconds, an array element-wise;
    # anything else as it is (ConvertTo-Json writes numbers, strings, dates and the module's objects well).
    param([object]$Value)
    if ($null -eq $Value) { return $null }
    if ($Value -is [System.Net.IPAddress]) { return $Value.ToString() }
    if ($Value -is [timespan]) { return $Value.TotalSeconds }
    if ($Value -is [array]) { return , [object[]]@(foreach ($v in $Value) { ConvertTo-RetroflectJsonValue $v }) }
    return $Value
}

function ConvertTo-RetroflectListText {
    # One line for a collection: the elements' text joined with ';' (a dictionary as key=value pairs). What
    # Export-Csv writes for a collection property; elements give their own ToString() ('80=8080/tcp', '8081/tcp').
    param([object]$Value)
    if ($Value -is [System.Collections.IDictionary]) {
        return (@(foreach ($key in $Value.Keys) { '{0}={1}' -f $key, $Value[$key] }) -join ';')
    }
    return (@(foreach ($v in $Value) { [string]$v }) -join ';')
}

function ConvertTo-RetroflectPortMapText {
    # The port maps of one address in -PortMap syntax: '80=8080;443=8443/tcp' (a map for TCP and UDP without suffix).
    param([object]$Value)
    $protocols = [ordered]@{}
    foreach ($m in $Value) {
        $key = '{0}={1}' -f $m.Port, $m.Target
        if (-not $protocols.Contains($key)) { $protocols[$key] = New-Object 'System.Collections.Generic.List[string]' }
        $protocols[$key].Add([string]$m.Protocol)
    }
    $parts = foreach ($key in $protocols.Keys) {
        $p = $protocols[$key]
        if ($p.Contains('tcp') -and $p.Contains('udp')) { $key } else { $key + '/' + ($p -join ',') }
    }
    return (@($parts) -join ';')
}

function Add-RetroflectNoteProperty {
    <#
    Adds note property $Name = $Value to $Object. An array or a dictionary stays what it is for scripts ($o.PortMap[0].Port,
    $o.BackendInfo['device'], -is [array]), wrapped with a ToString() giving one line ($Text, default
    ConvertTo-RetroflectListText), which is what Export-Csv, ConvertTo-Csv and -join write instead of 'System.Object[]'.
    Add-Member keeps the wrapper (a PSNoteProperty built directly would unwrap it); -Force lets the note property
    stand over the class property of the same name, as PSObject.Properties.Add does. Anything else is added as it is.
    #>
    param([System.Management.Automation.PSObject]$Object, [string]$Name, [object]$Value, [scriptblock]$Text)
    if ($null -ne $Value -and ($Value -is [array] -or $Value -is [System.Collections.IDictionary])) {
        if ($null -eq $Text) { $Text = { ConvertTo-RetroflectListText $this } }
        $wrapped = [System.Management.Automation.PSObject]::AsPSObject($Value)
        $wrapped.PSObject.Methods.Add([System.Management.Automation.PSScriptMethod]::new('ToString', $Text))
        Add-Member -InputObject $Object -MemberType NoteProperty -Name $Name -Value $wrapped -Force
        return
    }
    $Object.PSObject.Properties.Add([System.Management.Automation.PSNoteProperty]::new($Name, $Value))
}

function New-RetroflectObject {
    <#
    The object for [ordered]@{ PSTypeName = <type name>; Name = value; ... } of a type in
    $script:RetroflectJsonForm: the note properties [pscustomobject] would give it (typed, in the same order), on an
    instance of the type's class that holds the JSON form of each value, so ConvertTo-Json writes addresses as text
    at any -Depth while $o.IPAddress stays an [ipaddress] (see the top of this file). $Text: a ToString() per
    collection property name, for Add-RetroflectNoteProperty. A type without a class (no address) gets a
    [pscustomobject] with the same note properties.
    #>
    param([Parameter(Mandatory)][System.Collections.Specialized.OrderedDictionary]$Property, [hashtable]$Text = @{})
    $typeName = [string]$Property['PSTypeName']
    $form = $script:RetroflectJsonForm[$typeName]
    $json = $null
    if ($null -ne $form) {
        $json = $form::new()
        $o = New-Object System.Management.Automation.PSObject -ArgumentList $json
    }
    else {
        $o = [pscustomobject]@{}
    }
    $o.PSObject.TypeNames.Insert(0, $typeName)
    $properties = $o.PSObject.Properties
    foreach ($entry in $Property.GetEnumerator()) {
        $name = $entry.Key
        if ($name -eq 'PSTypeName') { continue }
        $value = $entry.Value
        if ($null -ne $json) {
            # Scalars inline: Watch-ReflectTraffic builds one object per packet.
            if ($value -is [System.Net.IPAddress]) { $json.$name = $value.ToString() }
            elseif ($value -is [array] -or $value -is [timespan]) { $json.$name = ConvertTo-RetroflectJsonValue $value }
            else { $json.$name = $value }
        }
        if ($value -is [array] -or $value -is [System.Collections.IDictionary]) {
            Add-RetroflectNoteProperty $o $name $value $Text[$name]
        }
        else {
            $properties.Add([System.Management.Automation.PSNoteProperty]::new($name, $value))
        }
    }
    return $o
}

function ConvertTo-RetroflectDateTime {
    # The engine sends ISO 8601 UTC strings. PowerShell 7's ConvertFrom-Json already turns them into [datetime];
    # Windows PowerShell 5.1 leaves them as strings. Both end up as local [datetime].
    param([object]$Value)
    if ($null -eq $Value -or '' -eq $Value) { return $null }
    if ($Value -is [datetime]) { return $Value.ToLocalTime() }
    $styles = [System.Globalization.DateTimeStyles]::RoundtripKind
    return ([datetime]::Parse([string]$Value, [System.Globalization.CultureInfo]::InvariantCulture, $styles)).ToLocalTime()
}

function ConvertTo-RetroflectIPAddress {
    param([object]$Value)
    if ($null -eq $Value -or '' -eq $Value) { return $null }
    return [System.Net.IPAddress]::Parse([string]$Value)
}

function Get-RetroflectAddressFamily {
    param([System.Net.IPAddress]$Address)
    if ($Address.AddressFamily -eq [System.Net.Sockets.AddressFamily]::InterNetworkV6) { return 'IPv6' }
    return 'IPv4'
}

function ConvertTo-RetroflectSource {
    # The engine's entry source ('Policy', 'Config', 'Temporary'); empty (not told) is $null.
    param([string]$Source)
    if ([string]::IsNullOrEmpty($Source)) { return $null }
    return $Source
}

function New-RetroflectReflectAddress {
    # One reflect address; counters are filled from `stats` when the caller has them, else 0.
    param(
        [Parameter(Mandatory)][string]$Address,
        [bool]$Persisted = $false,
        # Policy, Config or Temporary (the engine's `source`); $null where the answer does not say.
        [string]$Source,
        [long]$Packets = 0,
        [long]$Bytes = 0,
        [object[]]$PortMap = @(),
        # The address's allow lists as the engine gives them ({ports, users, groups, cgroups, apps}); absent = all.
        [object]$Allow,
        [long]$NotAllowed = 0,
        [string]$Pipe
    )
    $ip = ConvertTo-RetroflectIPAddress $Address
    # A list the address does not have is $null (everything of that kind is allowed), never an empty array.
    $list = { param($name) if ($null -ne $Allow -and $null -ne $Allow.$name) { , [object[]]@($Allow.$name) } else { $null } }
    $ports = $null
    if ($null -ne $Allow -and $null -ne $Allow.ports) { $ports = [string[]]@(foreach ($p in $Allow.ports) { '{0}/{1}' -f $p.port, $p.protocol }) }
    $maps = New-Object 'System.Collections.Generic.List[object]'
    foreach ($m in $PortMap) { if ($null -ne $m) { $maps.Add((ConvertTo-RetroflectPortMap $m)) } }
    return New-RetroflectObject ([ordered]@{
        PSTypeName    = 'Retroflect.ReflectAddress'
        IPAddress     = $ip
        AddressFamily = Get-RetroflectAddressFamily $ip
        Source        = ConvertTo-RetroflectSource $Source
        Persisted     = $Persisted
        Packets       = $Packets
        Bytes         = $Bytes
        PortMap       = [object[]]$maps.ToArray()
        AllowedPort   = $ports
        AllowedUser   = & $list 'users'
        AllowedGroup  = & $list 'groups'
        AllowedCGroup = & $list 'cgroups'
        AllowedApp    = & $list 'apps'
        NotAllowed    = $NotAllowed
        Pipe          = $Pipe
    }) -Text @{ PortMap = { ConvertTo-RetroflectPortMapText $this } }
}

function ConvertTo-RetroflectPortMap {
    # One port map of the protocol ({protocol, port, target}) as a typed object: clients of Address:Port reach Target.
    param([Parameter(Mandatory)][object]$Map)
    $o = [pscustomobject]@{
        PSTypeName = 'Retroflect.PortMap'
        Port       = [int]$Map.port
        Target     = [int]$Map.target
        Protocol   = [string]$Map.protocol
    }
    Add-Member -InputObject $o -MemberType ScriptMethod -Name ToString -Force -Value { '{0}={1}/{2}' -f $this.Port, $this.Target, $this.Protocol }
    return $o
}

function New-RetroflectShieldPort {
    param(
        [Parameter(Mandatory)][int]$Port,
        [Parameter(Mandatory)][string]$Protocol,
        [bool]$Persisted = $false,
        [string]$Source,
        [long]$Packets = 0,
        [long]$Bytes = 0,
        [string]$Pipe
    )
    $o = [pscustomobject]@{
        PSTypeName = 'Retroflect.ShieldPort'
        Port       = $Port
        Protocol   = $Protocol.ToLowerInvariant()
        Source     = ConvertTo-RetroflectSource $Source
        Persisted  = $Persisted
        Packets    = $Packets
        Bytes      = $Bytes
        Pipe       = $Pipe
    }
    # '8081/tcp', as -ShieldPort takes it (what a Status's ShieldPorts column shows in Export-Csv).
    Add-Member -InputObject $o -MemberType ScriptMethod -Name ToString -Force -Value { '{0}/{1}' -f $this.Port, $this.Protocol }
    return $o
}

function Get-RetroflectPersistedSet {
    <#
    Which entries are saved in the config file, from address.list and shield.list on an open connection: a set
    of address texts and 'port/protocol' keys. `status` and `stats` do not say; a -NoConfig engine saves nothing.
    #>
    param([object]$Connection)   # plain (no [Parameter()]): on the session path, see Stop-RetroflectSession
    $set = @{}
    foreach ($a in (Invoke-RetroflectMethod -Connection $Connection -Method 'address.list').addresses) {
        if ($a.persisted) { $set[[string]$a.address] = $true }
    }
    foreach ($p in (Invoke-RetroflectMethod -Connection $Connection -Method 'shield.list').ports) {
        if ($p.persisted) { $set['{0}/{1}' -f $p.port, $p.protocol] = $true }
    }
    return $set
}

function ConvertTo-RetroflectStatus {
    param([Parameter(Mandatory)][object]$Status, [string]$Pipe, [hashtable]$Persisted = @{})
    $addresses = New-Object 'System.Collections.Generic.List[System.Net.IPAddress]'
    foreach ($a in $Status.reflectAddresses) { $addresses.Add((ConvertTo-RetroflectIPAddress $a)) }
    $ports = New-Object 'System.Collections.Generic.List[object]'
    foreach ($p in $Status.shieldPorts) {
        $ports.Add((New-RetroflectShieldPort -Port $p.port -Protocol $p.protocol -Persisted $Persisted.ContainsKey(('{0}/{1}' -f $p.port, $p.protocol)) -Pipe $Pipe))
    }
    $backendInfo = [ordered]@{}
    if ($null -ne $Status.backendInfo) {
        foreach ($prop in $Status.backendInfo.PSObject.Properties) { $backendInfo[$prop.Name] = $prop.Value }
    }
    return New-RetroflectObject ([ordered]@{
        PSTypeName       = 'Retroflect.Status'
        State            = [string]$Status.state
        Version          = [string]$Status.version
        Backend          = [string]$Status.backend
        ProcessId        = [int]$Status.pid
        StartedAt        = ConvertTo-RetroflectDateTime $Status.startedAt
        UptimeSeconds    = [double]$Status.uptimeSeconds
        ReflectAddresses = $addresses.ToArray()
        ShieldPorts      = $ports.ToArray()
        ConfigPath       = $Status.configPath
        PipeName         = $Status.pipeName
        Pipe             = $Pipe
        BackendInfo      = $backendInfo
        # How the engine runs: Service (Windows), Unit (systemd) or Console (a script, a task, a terminal).
        RunsAs           = ConvertTo-RetroflectRunsAs $Status.runsAs
        # Managed policy locks the configuration (status.policy.lockChanges): every change through the pipe fails
        # with Retroflect.ManagedByPolicy. An engine too old to say is not locked.
        LockedByPolicy   = ($null -ne $Status.policy -and $Status.policy.lockChanges -eq $true)
    })
}

function ConvertTo-RetroflectRunsAs {
    # The engine's runsAs (src/engine/types.ts) as Get-Retroflect shows it; an engine too old to say is 'Console'.
    param([object]$Value)
    $name = $script:RunsAsNames[[string]$Value]
    if (-not $name) { return 'Console' }
    return $name
}

function ConvertTo-RetroflectCount {
    # {packets, bytes} -> two [long]s, tolerant of a missing part.
    param([object]$Count)
    if ($null -eq $Count) { return @{ Packets = [long]0; Bytes = [long]0 } }
    return @{ Packets = [long]$Count.packets; Bytes = [long]$Count.bytes }
}

function ConvertTo-RetroflectStats {
    param([Parameter(Mandatory)][object]$Stats, [string]$Pipe, [hashtable]$Persisted = @{})
    $reflected = ConvertTo-RetroflectCount $Stats.reflected
    $dropped = ConvertTo-RetroflectCount $Stats.shieldDropped
    $forged = ConvertTo-RetroflectCount $Stats.forgedSourceDropped
    $forwarded = ConvertTo-RetroflectCount $Stats.forwardedDropped
    $passed = ConvertTo-RetroflectCount $Stats.passed

    $byProtocol = [ordered]@{}
    foreach ($name in @('tcp', 'udp', 'icmp', 'other')) {
        $c = $null
        if ($null -ne $Stats.byProtocol) { $c = $Stats.byProtocol.$name }
        $pc = ConvertTo-RetroflectCount $c
        $count = [pscustomobject]@{ Protocol = $name; Packets = $pc.Packets; Bytes = $pc.Bytes }
        # ByProtocol in Export-Csv and Format-List: 'tcp=24 packets/1360 bytes;udp=...'.
        Add-Member -InputObject $count -MemberType ScriptMethod -Name ToString -Force -Value { '{0} packets/{1} bytes' -f $this.Packets, $this.Bytes }
        $byProtocol[$name] = $count
    }
    $byAddress = New-Object 'System.Collections.Generic.List[object]'
    foreach ($a in $Stats.byAddress) {
        $byAddress.Add((New-RetroflectReflectAddress -Address $a.address -Persisted $Persisted.ContainsKey([string]$a.address) -Packets $a.packets -Bytes $a.bytes -Pipe $Pipe))
    }
    $byPort = New-Object 'System.Collections.Generic.List[object]'
    foreach ($p in $Stats.byShieldPort) {
        $byPort.Add((New-RetroflectShieldPort -Port $p.port -Protocol $p.protocol -Persisted $Persisted.ContainsKey(('{0}/{1}' -f $p.port, $p.protocol)) -Packets $p.packets -Bytes $p.bytes -Pipe $Pipe))
    }
    $malformed = [ordered]@{}
    $malformedTotal = [long]0
    if ($null -ne $Stats.malformed) {
        $malformedTotal = [long]$Stats.malformed.total
        if ($null -ne $Stats.malformed.byReason) {
            foreach ($prop in $Stats.malformed.byReason.PSObject.Properties) { $malformed[$prop.Name] = [long]$prop.Value }
        }
    }
    # Re-injections the driver documents as failing harmlessly (WinDivert): counted, not alarms. 0 on Linux.
    $expected = [pscustomobject]@{ HostUnreachable = [long]0; IcmpRefused = [long]0 }
    if ($null -ne $Stats.errors -and $Stats.errors.PSObject.Properties['sendExpected']) {
        $expected.HostUnreachable = [long]$Stats.errors.sendExpected.hostUnreachable
        $expected.IcmpRefused = [long]$Stats.errors.sendExpected.icmpRefused
    }
    $rates = $Stats.rates
    return New-RetroflectObject ([ordered]@{
        PSTypeName                    = 'Retroflect.Stats'
        SampledAt                     = ConvertTo-RetroflectDateTime $Stats.sampledAt
        UptimeSeconds                 = [double]$Stats.uptimeSeconds
        ReflectedPackets              = $reflected.Packets
        ReflectedBytes                = $reflected.Bytes
        ShieldDroppedPackets          = $dropped.Packets
        ShieldDroppedBytes            = $dropped.Bytes
        ForgedSourceDroppedPackets    = $forged.Packets
        ForgedSourceDroppedBytes      = $forged.Bytes
        ForwardedDroppedPackets       = $forwarded.Packets
        ForwardedDroppedBytes         = $forwarded.Bytes
        PassedPackets                 = $passed.Packets
        PassedBytes                   = $passed.Bytes
        MalformedPackets              = $malformedTotal
        MalformedByReason             = $malformed
        ReceiveErrors                 = [long]$Stats.errors.receive
        SendErrors                    = [long]$Stats.errors.send
        ExpectedSendFailures          = $expected
        ReflectedPacketsPerSecond     = [double]$rates.reflectedPackets
        ReflectedBytesPerSecond       = [double]$rates.reflectedBytes
        ShieldDroppedPacketsPerSecond = [double]$rates.shieldDroppedPackets
        ByProtocol                    = $byProtocol
        ByAddress                     = $byAddress.ToArray()
        ByShieldPort                  = $byPort.ToArray()
        Pipe                          = $Pipe
    })
}

function ConvertTo-RetroflectFlow {
    param([Parameter(Mandatory)][object]$Flow, [string]$Pipe)
    return New-RetroflectObject ([ordered]@{
        PSTypeName     = 'Retroflect.Flow'
        Protocol       = [string]$Flow.protocol
        ReflectAddress = ConvertTo-RetroflectIPAddress $Flow.reflectAddress
        LocalAddress   = ConvertTo-RetroflectIPAddress $Flow.localAddress
        ClientPort     = [int]$Flow.clientPort
        ServerPort     = [int]$Flow.serverPort
        # The reflect-address port the client used when the flow came through a port map (ServerPort is then the
        # map's target); $null otherwise.
        MappedFromPort = $(if ($null -ne $Flow.mappedFromPort) { [int]$Flow.mappedFromPort } else { $null })
        Packets        = [long]$Flow.packets
        Bytes          = [long]$Flow.bytes
        FirstSeen      = ConvertTo-RetroflectDateTime $Flow.firstSeen
        LastSeen       = ConvertTo-RetroflectDateTime $Flow.lastSeen
        State          = [string]$Flow.state
        # Who made the flow, where the engine can tell ($null otherwise: another platform, or the socket is gone).
        ProcessId         = $(if ($null -ne $Flow.pid) { [int]$Flow.pid } else { $null })
        ProcessName       = $(if ($null -ne $Flow.processName) { [string]$Flow.processName } else { $null })
        UserId            = $(if ($null -ne $Flow.uid) { [long]$Flow.uid } else { $null })
        User              = $(if ($null -ne $Flow.user) { [string]$Flow.user } else { $null })
        PackageFamilyName = $(if ($null -ne $Flow.packageFamilyName) { [string]$Flow.packageFamilyName } else { $null })
        Pipe           = $Pipe
    })
}

function ConvertTo-RetroflectAddressTest {
    param([Parameter(Mandatory)][object]$Test, [string]$Pipe)
    $reasons = New-Object 'System.Collections.Generic.List[object]'
    foreach ($r in $Test.reasons) {
        $reason = [pscustomobject]@{ Code = [string]$r.code; Rule = $r.rule; Message = [string]$r.message; Hint = $r.hint }
        # The rule's name ('local-address', 'multicast') where the engine gives one, as Export-Csv writes Reasons.
        Add-Member -InputObject $reason -MemberType ScriptMethod -Name ToString -Force -Value { if ($this.Rule) { [string]$this.Rule } else { $this.Code } }
        $reasons.Add($reason)
    }
    $warnings = New-Object 'System.Collections.Generic.List[string]'
    foreach ($w in $Test.warnings) { $warnings.Add([string]$w) }
    $suggestion = $null
    $suggestionMessage = $null
    if ($null -ne $Test.suggestion) {
        $suggestion = ConvertTo-RetroflectIPAddress $Test.suggestion.address
        $suggestionMessage = [string]$Test.suggestion.message
    }
    $reasonText = ($reasons | ForEach-Object { $_.Message }) -join ' '
    return New-RetroflectObject ([ordered]@{
        PSTypeName        = 'Retroflect.AddressTest'
        Input             = [string]$Test.input
        IPAddress         = ConvertTo-RetroflectIPAddress $Test.address
        Usable            = [bool]$Test.valid
        Configured        = [bool]$Test.configured
        Reason            = $reasonText
        Reasons           = $reasons.ToArray()
        Warnings          = $warnings.ToArray()
        Suggestion        = $suggestion
        SuggestionMessage = $suggestionMessage
        Pipe              = $Pipe
    })
}

# The doctor's check statuses (docs/doctor.md) -> the Status values of Retroflect.Check.
$script:CheckStatus = @{ pass = 'Pass'; warning = 'Warning'; fail = 'Fail'; skipped = 'Skipped' }

function ConvertTo-RetroflectCheck {
    param([Parameter(Mandatory)][object]$Check)
    $status = $script:CheckStatus[[string]$Check.status]
    if (-not $status) { $status = [string]$Check.status }
    $o = [pscustomobject][ordered]@{
        PSTypeName = 'Retroflect.Check'
        Name       = [string]$Check.name
        Status     = $status
        Detail     = [string]$Check.detail
        Fix        = $Check.fix
        Evidence   = $Check.evidence
    }
    # "$check" reads as "Fail: port.8080/tcp", as a log line would.
    $text = { '{0}: {1}' -f $this.Status, $this.Name }
    Add-Member -InputObject $o -MemberType ScriptMethod -Name ToString -Force -Value $text
    return $o
}

function ConvertTo-RetroflectPacket {
    # One PacketSummary from the engine as a Retroflect.Packet.
    param([Parameter(Mandatory)][object]$Summary, [string]$Pipe)
    $port = { param($v) if ($null -eq $v) { $null } else { [int]$v } }
    return New-RetroflectObject ([ordered]@{
        PSTypeName           = 'Retroflect.Packet'
        Time                 = ConvertTo-RetroflectDateTime $Summary.time
        Direction            = [string]$Summary.direction
        Interface            = [string]$Summary.interface
        Verdict              = [string]$Summary.verdict
        MalformedReason      = $Summary.malformedReason
        Protocol             = $Summary.protocol
        Source               = ConvertTo-RetroflectIPAddress $Summary.before.source
        SourcePort           = & $port $Summary.before.sourcePort
        Destination          = ConvertTo-RetroflectIPAddress $Summary.before.destination
        DestinationPort      = & $port $Summary.before.destinationPort
        ReflectedSource      = if ($Summary.verdict -eq 'reflected') { ConvertTo-RetroflectIPAddress $Summary.after.source } else { $null }
        ReflectedDestination = if ($Summary.verdict -eq 'reflected') { ConvertTo-RetroflectIPAddress $Summary.after.destination } else { $null }
        Length               = [int]$Summary.length
        CapturedLength       = [int]$Summary.capturedLength
        TcpFlags             = $Summary.tcpFlags
        IcmpType             = $Summary.icmpType
        Pipe                 = $Pipe
    })
}

function New-RetroflectChange {
    # One change a Set- cmdlet made: Action (Added, Removed, Mapped, Unmapped), Kind (ReflectAddress, PortMap,
    # ShieldPort) and Target, the entry as text ('198.51.100.7', '198.51.100.7 80=8080/tcp', '8080/tcp').
    param([string]$Action, [string]$Kind, [string]$Target, [string]$Pipe)
    $o = [pscustomobject]@{
        PSTypeName = 'Retroflect.Change'
        Action     = $Action
        Kind       = $Kind
        Target     = $Target
        Pipe       = $Pipe
    }
    Add-Member -InputObject $o -MemberType ScriptMethod -Name ToString -Force -Value { '{0} {1}' -f $this.Action, $this.Target }
    return $o
}

function ConvertTo-RetroflectAddressChanges {
    # An address.set result -> one Retroflect.Change per address added or removed and per map added or removed.
    param([object]$Result, [string]$Pipe)
    foreach ($a in @($Result.added)) { if ($null -ne $a) { New-RetroflectChange 'Added' 'ReflectAddress' ([string]$a) $Pipe } }
    foreach ($a in @($Result.removed)) { if ($null -ne $a) { New-RetroflectChange 'Removed' 'ReflectAddress' ([string]$a) $Pipe } }
    foreach ($m in @($Result.portMapsAdded)) {
        if ($null -ne $m) { New-RetroflectChange 'Mapped' 'PortMap' ('{0} {1}={2}/{3}' -f $m.address, $m.port, $m.target, $m.protocol) $Pipe }
    }
    foreach ($m in @($Result.portMapsRemoved)) {
        if ($null -ne $m) { New-RetroflectChange 'Unmapped' 'PortMap' ('{0} {1}={2}/{3}' -f $m.address, $m.port, $m.target, $m.protocol) $Pipe }
    }
}

function ConvertTo-RetroflectShieldChanges {
    # A shield.set result -> one Retroflect.Change per port added or removed.
    param([object]$Result, [string]$Pipe)
    foreach ($p in @($Result.added)) { if ($null -ne $p) { New-RetroflectChange 'Added' 'ShieldPort' ('{0}/{1}' -f $p.port, $p.protocol) $Pipe } }
    foreach ($p in @($Result.removed)) { if ($null -ne $p) { New-RetroflectChange 'Removed' 'ShieldPort' ('{0}/{1}' -f $p.port, $p.protocol) $Pipe } }
}
