function Add-ReflectAddress {
    <#
    .SYNOPSIS
    Adds reflect addresses to the running engine.

    .DESCRIPTION
    Every packet this host sends to a reflect address is turned around and delivered back to this host as if it
    came from that address, so a client connecting to the address reaches a local server bound to the wildcard
    address. The engine checks each address first (an IP address, not one of this host's, not on a local subnet,
    routed); if any is refused, none is added and a Retroflect.InvalidAddress error says why and what to do.
    Adding an address that is already configured is not an error (idempotent); it is returned with
    Added = $false. The change is saved to the engine's config file unless -Temporary is given.
    All addresses from the pipeline are sent as one all-or-nothing change when the pipeline ends.

    .PARAMETER Address
    IPv4 or IPv6 addresses ('192.0.2.1', '2001:db8::1', '[2001:db8::1]'), [ipaddress] objects, or objects with an
    Address property. Use Test-ReflectAddress to check an address and get a suggestion.

    .PARAMETER PortMap
    Port maps for every address given: a client reaching Address:Port gets the local server on Target. A hashtable
    @{80=8080; 443=8443} (TCP and UDP), spec strings '443=8443/tcp' or '53=5353/udp', or Retroflect.PortMap objects.
    Also adds maps to addresses already configured. A port out of range, a map to itself, a port already mapped to
    another target or overlapping maps are refused (Retroflect.InvalidPort / Retroflect.PortMapConflict) and nothing
    changes. See docs/port-mapping.md.

    .PARAMETER Temporary
    Change only the running engine; the config file is not written and the address is gone after a restart.

    .PARAMETER Pipe
    The engine's control pipe: a name (default 'retroflect') or, on Linux, an absolute socket path.

    .EXAMPLE
    Add-ReflectAddress 192.0.2.1

    Reflects traffic to 192.0.2.1 and saves it in the config file.

    .EXAMPLE
    '192.0.2.1', '192.0.2.2' | Add-ReflectAddress

    Adds two addresses in one all-or-nothing change.

    .EXAMPLE
    Add-ReflectAddress 198.51.100.1 -PortMap @{80=8080}

    Clients of 198.51.100.1:80 reach the local server on port 8080 (TCP and UDP); it sees 198.51.100.1 as its peer.

    .EXAMPLE
    Add-ReflectAddress 198.51.100.1 -PortMap '443=8443/tcp'

    A TCP-only map.

    .EXAMPLE
    Add-ReflectAddress 2001:db8::1 -Temporary -WhatIf

    Shows what would be added without changing anything.

    .INPUTS
    System.String, System.Net.IPAddress, or any object with an Address property.

    .OUTPUTS
    Retroflect.ReflectAddress. One per address given, with Added telling whether it was new.
    #>
    [CmdletBinding(SupportsShouldProcess, ConfirmImpact = 'Medium')]
    [OutputType('Retroflect.ReflectAddress')]
    param(
        [Parameter(Mandatory, Position = 0, ValueFromPipeline, ValueFromPipelineByPropertyName)]
        [Alias('IPAddress', 'ReflectAddress')]
        [object[]]$Address,

        [object[]]$PortMap,

        [switch]$Temporary,

        [Parameter(ValueFromPipelineByPropertyName)]
        [Alias('PipeName')]
        [string]$Pipe
    )
    begin {
        $pending = New-Object 'System.Collections.Generic.List[string]'
        $targetPipe = $Pipe
        $maps = @()
        if ($PortMap) {
            try { $maps = ConvertTo-RetroflectPortMapSpec $PortMap }
            catch {
                $PSCmdlet.ThrowTerminatingError((New-RetroflectErrorRecord -Code 'E_INVALID_PORT' -TargetObject $PortMap `
                    -Message $_.Exception.Message -Hint 'Write maps as @{80=8080} or ''443=8443/tcp''.'))
            }
        }
    }
    process {
        if ($Pipe) { $targetPipe = $Pipe }
        foreach ($item in $Address) {
            $text = ConvertTo-RetroflectAddressText $item
            if (-not $text) {
                $PSCmdlet.WriteError((New-RetroflectErrorRecord -Code 'E_INVALID_ADDRESS' -TargetObject $item `
                    -Message "'$item' is not an address and has no Address property." `
                    -Hint 'Give an IPv4 or IPv6 address such as 192.0.2.1 or 2001:db8::1.'))
                continue
            }
            if ($pending.Contains($text)) { continue }
            $what = 'reflect address ' + $text
            if ($maps.Count) { $what += ' with port maps ' + ($maps -join ', ') }
            if ($Temporary) { $what += ' (temporary)' }
            if ($PSCmdlet.ShouldProcess($what, 'Add')) { $pending.Add($text) }
        }
    }
    end {
        if ($pending.Count -eq 0) { return }
        $params = @{ addresses = $pending.ToArray() }
        if ($maps.Count) { $params.maps = $maps }
        if ($Temporary) { $params.temporary = $true }
        $connection = $null
        try {
            $connection = Connect-RetroflectEngine -Pipe $targetPipe
            try {
                $result = Invoke-RetroflectMethod -Connection $connection -Method 'address.add' -Params $params -TargetObject $pending.ToArray()
            }
            catch {
                $code = $_.Exception.Data['RetroflectCode']
                if ($code -eq 'E_INVALID_ADDRESS' -or $code -eq 'E_LIMIT_REACHED' -or $code -eq 'E_INVALID_PORT' -or $code -eq 'E_PORT_MAP_CONFLICT') {
                    # About the input, and nothing was added: the caller may go on with other work.
                    $PSCmdlet.WriteError($_)
                    return
                }
                throw
            }
            # The list tells which of them are persisted (an existing address may have been added -Temporary).
            $list = Invoke-RetroflectMethod -Connection $connection -Method 'address.list'
        }
        catch {
            $PSCmdlet.ThrowTerminatingError($_)
        }
        finally {
            Disconnect-RetroflectEngine -Connection $connection
        }
        foreach ($w in $result.warnings) { Write-Warning ('{0}: {1}' -f $w.address, $w.message) }
        $added = @($result.added)
        foreach ($entry in $list.addresses) {
            $isAdded = $added -contains $entry.address
            if (-not $isAdded -and @($result.existing) -notcontains $entry.address) { continue }
            $o = New-RetroflectReflectAddress -Address $entry.address -Persisted ([bool]$entry.persisted) -PortMap @($entry.portMaps) -Pipe $targetPipe
            Add-Member -InputObject $o -NotePropertyName Added -NotePropertyValue $isAdded
            $o
        }
    }
}
