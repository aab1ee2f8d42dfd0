function Add-ReflectAddress {
    <#
    .SYNOPSIS
    Adds reflect addresses to the running engine.

    .DESCRIPTION
    Every packet this host sends to a reflect address is turned around and delivered back to this host as if it
    came from that address, so a client connecting to the address reaches a local server bound to the wildcard
    address. The engine checks each address first (an IP address, not one of this host's, not on a local subnet,
    routed); if any is refused, none is added and a Retroflect.InvalidAddress error says why and what to do.
    Adding an address that is already configured is not an error (idempotent); with -PassThru it is returned
    with Added = $false. The change is saved to the engine's config file unless -Temporary is given.
    All addresses from the pipeline are sent as one all-or-nothing change when the pipeline ends.

    .PARAMETER Address
    IPv4 or IPv6 addresses ('192.0.2.1', '2001:db8::1', '[2001:db8::1]'), [ipaddress] objects, or objects with an
    IPAddress property (Get-ReflectAddress output, Import-Csv rows). Use Test-ReflectAddress to check an address and get a suggestion.

    .PARAMETER Temporary
    Change only the running engine; the config file is not written and the address is gone after a restart.

    .PARAMETER PassThru
    Return the entries as Retroflect objects (Added tells whether each was new, Persisted whether it is saved).
    Without it nothing is output, as Start-Service and Add-LocalGroupMember do.

    .PARAMETER Pipe
    The engine's control pipe: a name (default 'retroflect') or, on Linux, an absolute socket path.

    .EXAMPLE
    Add-ReflectAddress 192.0.2.1

    Reflects traffic to 192.0.2.1 and saves it in the config file.

    .EXAMPLE
    '192.0.2.1', '192.0.2.2' | Add-ReflectAddress

    Adds two addresses in one all-or-nothing change.

    .EXAMPLE
    Add-ReflectAddress 2001:db8::1 -Temporary -WhatIf

    Shows what would be added without changing anything.

    .INPUTS
    System.String, System.Net.IPAddress, or any object with an IPAddress property.

    .OUTPUTS
    None, or with -PassThru Retroflect.ReflectAddress: one per address given, with Added telling whether it was new.
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

        [switch]$Temporary,

        [switch]$PassThru,

        [Parameter(ValueFromPipelineByPropertyName)]
        [Alias('PipeName')]
        [string]$Pipe
    )
    begin {
        $suffix = ''
        if ($Temporary) { $suffix = ' (temporary)' }
        $collector = New-RetroflectCollector -Cmdlet $PSCmdlet -Action 'Add' -Noun 'reflect address' -Suffix $suffix -Pipe $Pipe
    }
    process {
        Add-RetroflectAddressItem $collector $Address $Pipe
    }
    end {
        if ($collector.Items.Count -eq 0) { return }
        $params = @{ addresses = $collector.Items.ToArray() }
        if ($Temporary) { $params.temporary = $true }
        $result = Invoke-RetroflectSession $PSCmdlet $collector.Pipe {
            param($connection)
            try {
                Invoke-RetroflectMethod -Connection $connection -Method 'address.add' -Params $params -TargetObject $params.addresses
            }
            catch {
                # About the input, and nothing was added: written, not thrown, so the caller may go on.
                if (@('E_INVALID_ADDRESS', 'E_LIMIT_REACHED') -notcontains $_.Exception.Data['RetroflectCode']) { throw }
                $PSCmdlet.WriteError($_)
            }
        }
        if ($null -eq $result) { return }
        foreach ($w in $result.warnings) { Write-Warning ('{0}: {1}' -f $w.address, $w.message) }
        if (-not $PassThru) { return }
        # The engine says which are in the config file (an existing one may have been added -Temporary before).
        $persisted = @($result.persisted)
        foreach ($entry in @($result.added) + @($result.existing)) {
            $o = New-RetroflectReflectAddress -Address $entry -Persisted ($persisted -contains $entry) -Pipe $collector.Pipe
            Add-Member -InputObject $o -NotePropertyName Added -NotePropertyValue (@($result.added) -contains $entry)
            $o
        }
    }
}
