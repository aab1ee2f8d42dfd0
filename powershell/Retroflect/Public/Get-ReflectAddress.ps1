function Get-ReflectAddress {
    <#
    .SYNOPSIS
    Gets the reflect addresses of the running engine.

    .DESCRIPTION
    Returns one Retroflect.ReflectAddress per configured address, in the engine's order, with its family, whether
    it is saved in the config file (Persisted), its port maps (PortMap: Retroflect.PortMap objects with Port, Target
    and Protocol, one per protocol), and the packets and bytes reflected to it since the engine started.

    .PARAMETER Address
    Return only these addresses (wildcards allowed, matched against the canonical text form).

    .PARAMETER Pipe
    The engine's control pipe: a name (default 'retroflect') or, on Linux, an absolute socket path.

    .EXAMPLE
    Get-ReflectAddress

    Lists every reflect address with its counters.

    .EXAMPLE
    Get-ReflectAddress | Where-Object Family -eq 'IPv6'

    Only IPv6 addresses.

    .EXAMPLE
    Get-ReflectAddress | Remove-ReflectAddress -Confirm:$false

    Removes them all.

    .INPUTS
    System.String. Pipe names by the property name Pipe.

    .OUTPUTS
    Retroflect.ReflectAddress
    #>
    [CmdletBinding()]
    [OutputType('Retroflect.ReflectAddress')]
    param(
        [Parameter(Position = 0)]
        [SupportsWildcards()]
        [string[]]$Address,

        [Parameter(ValueFromPipelineByPropertyName)]
        [Alias('PipeName')]
        [string]$Pipe
    )
    process {
        $connection = $null
        try {
            $connection = Connect-RetroflectEngine -Pipe $Pipe
            $list = Invoke-RetroflectMethod -Connection $connection -Method 'address.list'
            $stats = Invoke-RetroflectMethod -Connection $connection -Method 'stats'
        }
        catch {
            $PSCmdlet.ThrowTerminatingError($_)
        }
        finally {
            Disconnect-RetroflectEngine -Connection $connection
        }
        $counts = @{}
        foreach ($s in $stats.byAddress) { $counts[[string]$s.address] = $s }
        foreach ($entry in $list.addresses) {
            $text = [string]$entry.address
            if ($Address) {
                $match = $false
                foreach ($pattern in $Address) { if ($text -like $pattern) { $match = $true } }
                if (-not $match) { continue }
            }
            $packets = 0
            $bytes = 0
            $c = $counts[$text]
            if ($null -ne $c) { $packets = $c.packets; $bytes = $c.bytes }
            New-RetroflectReflectAddress -Address $text -Persisted ([bool]$entry.persisted) -Packets $packets -Bytes $bytes -PortMap @($entry.portMaps) -Pipe $Pipe
        }
    }
}
