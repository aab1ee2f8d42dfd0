function Get-ShieldPort {
    <#
    .SYNOPSIS
    Gets the shield ports of the running engine.

    .DESCRIPTION
    Returns one Retroflect.ShieldPort per shielded port and protocol, with whether it is saved in the config file
    (Persisted) and the packets and bytes from other hosts dropped at it since the engine started.

    .PARAMETER Port
    Return only these port numbers.

    .PARAMETER Protocol
    Return only this protocol (tcp or udp).

    .PARAMETER Pipe
    The engine's control pipe: a name (default 'retroflect') or, on Linux, an absolute socket path.

    .EXAMPLE
    Get-ShieldPort

    .EXAMPLE
    Get-ShieldPort -Port 8080 | Select-Object Protocol, Packets

    .EXAMPLE
    Get-ShieldPort | Remove-ShieldPort -Confirm:$false

    Removes every shield port.

    .INPUTS
    System.String. Pipe names by the property name Pipe.

    .OUTPUTS
    Retroflect.ShieldPort
    #>
    [CmdletBinding()]
    [OutputType('Retroflect.ShieldPort')]
    param(
        [Parameter(Position = 0)]
        [ValidateRange(1, 65535)]
        [int[]]$Port,

        [ValidateSet('tcp', 'udp')]
        [string]$Protocol,

        [Parameter(ValueFromPipelineByPropertyName)]
        [Alias('PipeName')]
        [string]$Pipe
    )
    process {
        $connection = $null
        try {
            $connection = Connect-RetroflectEngine -Pipe $Pipe
            $list = Invoke-RetroflectMethod -Connection $connection -Method 'shield.list'
            $stats = Invoke-RetroflectMethod -Connection $connection -Method 'stats'
        }
        catch {
            $PSCmdlet.ThrowTerminatingError($_)
        }
        finally {
            Disconnect-RetroflectEngine -Connection $connection
        }
        $counts = @{}
        foreach ($s in $stats.byShieldPort) { $counts['{0}/{1}' -f $s.port, $s.protocol] = $s }
        foreach ($entry in $list.ports) {
            if ($Port -and $Port -notcontains [int]$entry.port) { continue }
            if ($Protocol -and $Protocol -ne [string]$entry.protocol) { continue }
            $packets = 0
            $bytes = 0
            $c = $counts['{0}/{1}' -f $entry.port, $entry.protocol]
            if ($null -ne $c) { $packets = $c.packets; $bytes = $c.bytes }
            New-RetroflectShieldPort -Port $entry.port -Protocol $entry.protocol -Persisted ([bool]$entry.persisted) -Packets $packets -Bytes $bytes -Pipe $Pipe
        }
    }
}
