function Add-ReflectAddress {
    <#
    .SYNOPSIS
    Adds reflect addresses to the running engine.

    .DESCRIPTION
    Every packet this host sends to a reflect address is turned around and
    delivered back to this host as if it came from that address, so a client
    connecting to the address reaches a local server bound to the wildcard
    address. The engine checks each address first (an IP address, not one of
    this host's, not on a local subnet, routed); if any is refused, none is
    added and a Retroflect.InvalidAddress error says why and what to do. Adding
    an address that is already configured is not an error (idempotent); with
    -PassThru it is returned with Added = $false. The change is saved to the
    engine's config file unless -Temporary is given. All addresses from the
    pipeline are sent as one all-or-nothing change when the pipeline ends.

    .PARAMETER Address
    IPv4 or IPv6 addresses ('192.0.2.1', '2001:db8::1', '[2001:db8::1]'),
    [ipaddress] objects, or objects with an IPAddress property
    (Get-ReflectAddress output, Import-Csv rows). Use Test-ReflectAddress
    to check an address and get a suggestion.

    .PARAMETER PortMap
    Port maps for every address given: a client reaching Address:Port gets
    the local server on Target. A hashtable @{80=8080; 443=8443} (TCP and
    UDP), spec strings '443=8443/tcp' or '53=5353/udp' (several joined with
    ';', as Export-Csv writes a PortMap column: '80=8080;443=8443/tcp'), or
    Retroflect.PortMap objects. Also adds maps to addresses already
    configured. A port out of range, a map to itself, a port already mapped
    to another target or overlapping maps are refused
    (Retroflect.InvalidPort / Retroflect.PortMapConflict) and nothing
    changes. See docs/port-mapping.md. Binds by property name too:
    Import-Csv rows (an IPAddress and a PortMap column, as Export-Csv of
    Get-ReflectAddress writes them) keep each row's maps; rows with
    different maps are sent as one change per distinct set of maps, in
    order, and the first refused one stops the rest.

    .PARAMETER Port
    Allow only these ports of the addresses: '8080' (TCP and UDP),
    '3128/tcp', '53/udp', or 'all' to lift the list. Replaces the list the
    address had. A client connecting to another port is refused at once (a
    TCP reset or ICMP port unreachable from the address) and counted as
    NotAllowed. Port maps count as allowed ports. Without -Port (and
    without a list set before) every port is reflected: see
    docs/security.md.

    .PARAMETER User
    Linux: allow only programs running as these users (names or uids);
    'all' lifts the list. Any one of -User, -Group, -CGroup matching is
    enough.

    .PARAMETER Group
    Linux: allow only programs running with these effective groups (names
    or gids); 'all' lifts the list.

    .PARAMETER CGroup
    Linux: allow only programs in these cgroups, as paths below the cgroup
    v2 root ('system.slice/squid.service'); 'all' lifts the list. A cgroup
    that does not exist is refused.

    .PARAMETER App
    Windows: allow only these programs (full paths) and AppContainer
    packages (package family names), compared case-insensitively; 'all'
    lifts the list. Another program's connection is refused at once (a TCP
    reset or ICMP port unreachable from the address) and counted as
    NotAllowed. A Linux engine refuses the list (Retroflect.InvalidParams),
    as a Windows engine refuses -User, -Group and -CGroup. See
    docs/security.md.

    .PARAMETER Temporary
    Change only the running engine; the config file is not written and the
    address is gone after a restart.

    .PARAMETER PassThru
    Return the entries as Retroflect objects (Added tells whether each was
    new, Persisted whether it is saved). Without it nothing is output, as
    Start-Service and Add-LocalGroupMember do.

    .PARAMETER Pipe
    The engine's control pipe: a name (default 'retroflect') or, on Linux,
    an absolute socket path.

    .EXAMPLE
    Add-ReflectAddress 192.0.2.1

    Reflects traffic to 192.0.2.1 and saves it in the config file.

    .EXAMPLE
    '192.0.2.1', '192.0.2.2' | Add-ReflectAddress

    Adds two addresses in one all-or-nothing change.

    .EXAMPLE
    Add-ReflectAddress 203.0.113.1 -PortMap @{80=8080}

    Clients of 203.0.113.1:80 reach the local server on port 8080 (TCP and
    UDP); it sees 203.0.113.1 as its peer.

    .EXAMPLE
    Add-ReflectAddress 203.0.113.1 -PortMap '443=8443/tcp'

    A TCP-only map.

    .EXAMPLE
    Add-ReflectAddress 203.0.113.1 -Port 3128/tcp -User root

    Only TCP port 3128, and only programs running as root (Linux), may use
    203.0.113.1; the rest is refused at once.

    .EXAMPLE
    Add-ReflectAddress 203.0.113.1 -Port all

    Lifts the port list of 203.0.113.1 (every port again).

    .EXAMPLE
    Add-ReflectAddress 2001:db8::1 -Temporary -WhatIf

    Shows what would be added without changing anything.

    .INPUTS
    System.String, System.Net.IPAddress, or any object with an IPAddress
    property.

    .OUTPUTS
    None, or with -PassThru Retroflect.ReflectAddress: one per address given,
    with Added telling whether it was new.
    .LINK
    Get-ReflectAddress

    .LINK
    Remove-ReflectAddress

    .LINK
    Test-ReflectAddress

    .LINK
    about_Retroflect
    #>
    [CmdletBinding(SupportsShouldProcess, ConfirmImpact = 'Medium', PositionalBinding = $false)]
    [OutputType('Retroflect.ReflectAddress')]
    param(
        [Parameter(Mandatory, Position = 0, ValueFromPipeline, ValueFromPipelineByPropertyName)]
        [Alias('IPAddress', 'ReflectAddress')]
        [object[]]$Address,

        [Parameter(ValueFromPipelineByPropertyName)]
        [object[]]$PortMap,

        [string[]]$Port,

        [string[]]$User,

        [string[]]$Group,

        [string[]]$CGroup,

        [string[]]$App,

        [switch]$Temporary,

        [switch]$PassThru,

        [Parameter(ValueFromPipelineByPropertyName)]
        [Alias('PipeName')]
        [string]$Pipe
    )
    begin {
        # The allow lists: each replaces the address's list, 'all' lifts it (config/allow-lists.ts).
        $allow = [ordered]@{}
        foreach ($kind in @(@('ports', $Port), @('users', $User), @('groups', $Group), @('cgroups', $CGroup), @('apps', $App))) {
            $values = @($kind[1] | Where-Object { $null -ne $_ } | ForEach-Object { $_ -split ',' } | ForEach-Object { $_.Trim() } | Where-Object { $_ })
            if ($values.Count -eq 0) { continue }
            if ($values.Count -eq 1 -and $values[0] -eq 'all') { $allow[$kind[0]] = 'all' } else { $allow[$kind[0]] = [string[]]$values }
        }
        $allowText = ''
        foreach ($k in $allow.Keys) { $allowText += ' allowing {0} {1}' -f $k, ($allow[$k] -join ',') }
        $collector = New-RetroflectCollector -Cmdlet $PSCmdlet -Action 'Add' -Noun 'reflect address' -Pipe $Pipe
        # The maps of each collected address (a PortMap column may differ per row), and the distinct sets in order.
        $mapsOfItem = @{}
        $mapSets = New-Object 'System.Collections.Generic.List[object]'
    }
    process {
        # -PortMap given once applies to every item; a piped row's own PortMap column (empty: none) to that row.
        $maps = @()
        if ($PortMap -and -not ($PortMap.Count -eq 1 -and [string]::IsNullOrWhiteSpace([string]$PortMap[0]))) {
            try { $maps = ConvertTo-RetroflectPortMapSpec $PortMap }
            catch {
                $PSCmdlet.ThrowTerminatingError((New-RetroflectErrorRecord -Code 'E_INVALID_PORT' -TargetObject $PortMap `
                    -Message $_.Exception.Message -Hint 'Write maps as @{80=8080} or ''443=8443/tcp''.'))
            }
        }
        $mapsKey = ($maps | ForEach-Object { ConvertTo-Json -InputObject $_ -Compress }) -join ';'
        $collector.Suffix = ''
        if ($maps.Count) { $collector.Suffix += ' with port maps ' + ($maps -join ', ') }
        $collector.Suffix += $allowText
        if ($Temporary) { $collector.Suffix += ' (temporary)' }
        $before = $collector.Items.Count
        Add-RetroflectAddressItem $collector $Address $Pipe
        for ($i = $before; $i -lt $collector.Items.Count; $i++) { $mapsOfItem[$collector.Items[$i]] = $mapsKey }
        if ($collector.Items.Count -gt $before -and -not ($mapSets | Where-Object { $_.Key -eq $mapsKey })) {
            $mapSets.Add([pscustomobject]@{ Key = $mapsKey; Maps = $maps })
        }
    }
    end {
        if ($collector.Items.Count -eq 0) { return }
        # A refusal about the input (nothing of that change was added) is written, not thrown, so the caller may go
        # on; it ends the session, so later sets of maps are not sent.
        $results = Invoke-RetroflectSession $PSCmdlet $collector.Pipe -WriteCodes 'E_INVALID_ADDRESS', 'E_LIMIT_REACHED', 'E_INVALID_PORT', 'E_PORT_MAP_CONFLICT', 'E_INVALID_PARAMS' {
            param($connection)
            foreach ($set in $mapSets) {
                $params = @{ addresses = @($collector.Items | Where-Object { $mapsOfItem[$_] -eq $set.Key }) }
                if ($set.Maps.Count) { $params.maps = $set.Maps }
                foreach ($k in $allow.Keys) { $params[$k] = $allow[$k] }
                if ($Temporary) { $params.temporary = $true }
                Invoke-RetroflectMethod -Connection $connection -Method 'address.add' -Params $params -TargetObject $params.addresses
            }
        }
        foreach ($result in @($results)) {
            if ($null -eq $result) { continue }
            foreach ($w in $result.warnings) { Write-Warning ('{0}: {1}' -f $w.address, $w.message) }
            if (-not $PassThru) { continue }
            # The engine says which are in the config file (an existing one may have been added -Temporary before).
            $persisted = @($result.persisted)
            $mapsOf = @(@($result.portMaps.added) + @($result.portMaps.existing) | Where-Object { $null -ne $_ })
            foreach ($entry in @($result.added) + @($result.existing)) {
                $o = New-RetroflectReflectAddress -Address $entry -Persisted ($persisted -contains $entry) `
                    -PortMap @($mapsOf | Where-Object { $_.address -eq $entry }) -Allow (@($result.allow) | Where-Object { $_.address -eq $entry } | Select-Object -First 1) `
                    -Pipe $collector.Pipe
                Add-Member -InputObject $o -NotePropertyName Added -NotePropertyValue (@($result.added) -contains $entry)
                $o
            }
        }
    }
}
