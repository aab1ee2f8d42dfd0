function Get-ReflectAddress {
    <#
    .SYNOPSIS
    Gets the reflect addresses of the running engine.

    .DESCRIPTION
    Returns one Retroflect.ReflectAddress per configured address, in the
    engine's order: IPAddress ([ipaddress]), AddressFamily, whether it is saved
    in the config file (Persisted), its port maps (PortMap: Retroflect.PortMap
    objects with Port, Target and Protocol, one per protocol), and the packets
    and bytes reflected to it since the engine started. An address given
    without wildcards that is not configured is a non-terminating
    Retroflect.AddressNotFound error (ObjectNotFound); a wildcard that matches
    nothing returns nothing. When no engine answers, a non-terminating
    Retroflect.EngineNotRunning error is written: -ErrorAction decides.

    .PARAMETER Address
    Return only these addresses (wildcards allowed, matched against the
    canonical text form).

    .PARAMETER Pipe
    The engine's control pipe: a name (default 'retroflect') or, on Linux,
    an absolute socket path.

    .EXAMPLE
    Get-ReflectAddress

    Lists every reflect address with its counters.

    .EXAMPLE
    Get-ReflectAddress | Where-Object AddressFamily -eq 'IPv6'

    Only IPv6 addresses.

    .EXAMPLE
    Get-ReflectAddress | Remove-ReflectAddress -Confirm:$false

    Removes them all.

    .EXAMPLE
    (Get-ReflectAddress).IPAddress

    The addresses as [ipaddress] objects.

    .INPUTS
    System.String. Pipe names by the property name Pipe.

    .OUTPUTS
    Retroflect.ReflectAddress
    .LINK
    Add-ReflectAddress

    .LINK
    Remove-ReflectAddress

    .LINK
    Get-ReflectStats

    .LINK
    about_Retroflect
    #>
    [CmdletBinding(PositionalBinding = $false)]
    [OutputType('Retroflect.ReflectAddress')]
    param(
        [Parameter(Position = 0)]
        [SupportsWildcards()]
        [Alias('IPAddress')]
        [string[]]$Address,

        [Parameter(ValueFromPipelineByPropertyName)]
        [Alias('PipeName')]
        [string]$Pipe
    )
    process {
        Invoke-RetroflectSession $PSCmdlet $Pipe -NonTerminating {
            param($connection)
            $list = Invoke-RetroflectMethod -Connection $connection -Method 'address.list'
            $stats = Invoke-RetroflectMethod -Connection $connection -Method 'stats'
            $counts = @{}
            foreach ($s in $stats.byAddress) { $counts[[string]$s.address] = $s }
            $entries = foreach ($entry in $list.addresses) {
                $c = $counts[[string]$entry.address]
                $packets = 0
                $bytes = 0
                $refused = 0
                if ($null -ne $c) { $packets = $c.packets; $bytes = $c.bytes; if ($null -ne $c.notAllowed) { $refused = $c.notAllowed.packets } }
                New-RetroflectReflectAddress -Address $entry.address -Persisted ([bool]$entry.persisted) -Source ([string]$entry.source) -Packets $packets -Bytes $bytes `
                    -PortMap @($entry.portMaps) -Allow $entry.allow -NotAllowed $refused -Pipe $Pipe
            }
            Select-RetroflectByName -Cmdlet $PSCmdlet -InputObject $entries -Name $Address -What 'reflect address' `
                -Key { param($o) $o.IPAddress.ToString() } -Normalize { param($text) ConvertTo-RetroflectCanonicalAddress $text } `
                -ErrorCode 'E_ADDRESS_NOT_FOUND' -Hint 'List the configured addresses with Get-ReflectAddress.'
        }
    }
}
