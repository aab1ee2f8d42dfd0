function Get-ShieldPort {
    <#
    .SYNOPSIS
    Gets the shield ports of the running engine.

    .DESCRIPTION
    Returns one Retroflect.ShieldPort per shielded port and protocol, with
    whether it is saved in the config file (Persisted) and the packets and
    bytes from other hosts dropped at it since the engine started. When no
    engine answers, a non-terminating Retroflect.EngineNotRunning error is
    written: -ErrorAction and $ErrorActionPreference decide (a script with
    $ErrorActionPreference = 'Stop' ends with an error).

    .PARAMETER Port
    Return only these port numbers. A port that is not shielded is a
    non-terminating Retroflect.PortNotFound error (ObjectNotFound).

    .PARAMETER Protocol
    Return only this protocol: tcp, udp, or both (the default: every
    entry), as Add-ShieldPort takes it.

    .PARAMETER Pipe
    The engine's control pipe: a name (default 'retroflect') or, on Linux,
    an absolute socket path.

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
    .LINK
    Add-ShieldPort

    .LINK
    Remove-ShieldPort

    .LINK
    about_Retroflect
    #>
    [CmdletBinding(PositionalBinding = $false)]
    [OutputType('Retroflect.ShieldPort')]
    param(
        [Parameter(Position = 0)]
        [ValidateRange(1, 65535)]
        [int[]]$Port,

        [ValidateSet('tcp', 'udp', 'both')]
        [string]$Protocol = 'both',

        [Parameter(ValueFromPipelineByPropertyName)]
        [Alias('PipeName')]
        [string]$Pipe
    )
    process {
        Invoke-RetroflectSession $PSCmdlet $Pipe -NonTerminating {
            param($connection)
            $list = Invoke-RetroflectMethod -Connection $connection -Method 'shield.list'
            $stats = Invoke-RetroflectMethod -Connection $connection -Method 'stats'
            $counts = @{}
            foreach ($s in $stats.byShieldPort) { $counts['{0}/{1}' -f $s.port, $s.protocol] = $s }
            $entries = foreach ($entry in $list.ports) {
                if ($Protocol -ne 'both' -and $Protocol -ne [string]$entry.protocol) { continue }
                $c = $counts['{0}/{1}' -f $entry.port, $entry.protocol]
                $packets = 0
                $bytes = 0
                if ($null -ne $c) { $packets = $c.packets; $bytes = $c.bytes }
                New-RetroflectShieldPort -Port $entry.port -Protocol $entry.protocol -Persisted ([bool]$entry.persisted) -Source ([string]$entry.source) -Packets $packets -Bytes $bytes -Pipe $Pipe
            }
            $what = 'shield port'
            if ($Protocol) { $what = "$Protocol shield port" }
            Select-RetroflectByName -Cmdlet $PSCmdlet -InputObject $entries -Name $Port -What $what `
                -Key { param($o) [string]$o.Port } -ErrorCode 'E_PORT_NOT_FOUND' -Hint 'List the shield ports with Get-ShieldPort.'
        }
    }
}
