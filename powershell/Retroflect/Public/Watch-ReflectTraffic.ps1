function Watch-ReflectTraffic {
    <#
    .SYNOPSIS
    Shows the packets the engine handles, live, as objects.

    .DESCRIPTION
    Starts a capture in the running engine and emits one Retroflect.Packet per
    packet it decides: time, direction, interface, verdict (reflected, passed,
    shieldDropped, malformed, forgedSourceDropped), the malformed reason,
    protocol, source and destination addresses and ports as the packet was
    sent, the addresses after reflection, length and TCP flags. It runs until
    Ctrl+C, -Count packets or -Duration, and never slows the engine: packets it
    cannot take fast enough are dropped from this view (the engine counts them)
    and a warning says how many.

    Interface is the interface the packet left through or arrived on: on
    Windows its interface index as 'if12' (Get-NetAdapter -InterfaceIndex 12
    names it); on Linux the name (the engine's device for reflected
    traffic: 'rflx0' on ebpf, 'rflct0' on tun by default; for a
    shieldDropped or forgedSourceDropped packet the interface it arrived on,
    e.g. 'eth0'). On Linux those two drops are made by the engine's nftables
    rules, which report them to the engine while a capture runs.

    .PARAMETER Address
    Only packets to or from these addresses (reflect addresses, or this
    host's addresses).

    .PARAMETER Port
    Only TCP and UDP packets with one of these source or destination ports.

    .PARAMETER Verdict
    Only packets with these verdicts.

    .PARAMETER Protocol
    Only these protocols (icmp covers ICMP and ICMPv6).

    .PARAMETER Count
    Stop after this many packets.

    .PARAMETER Duration
    Stop after this long, e.g. (New-TimeSpan -Seconds 30) or '00:00:30'.

    .PARAMETER SnapLength
    Bytes of each packet the engine copies (64 to 65535, default 128):
    enough for the headers shown here.

    .PARAMETER Pipe
    The engine's control pipe: a name (default 'retroflect') or, on Linux,
    an absolute socket path.

    .EXAMPLE
    Watch-ReflectTraffic -Address 192.0.2.1

    Every packet to or from the reflect address 192.0.2.1, until Ctrl+C.

    .EXAMPLE
    Watch-ReflectTraffic -Port 8080 -Count 20 |
        Where-Object Verdict -ne 'reflected'

    The first 20 packets on port 8080 and which of them the engine did not
    reflect.

    .EXAMPLE
    Watch-ReflectTraffic -Verdict malformed -Duration '00:05:00' |
        Group-Object MalformedReason

    Malformed packets over five minutes, by reason.

    .INPUTS
    None.

    .OUTPUTS
    Retroflect.Packet
    .LINK
    Save-ReflectCapture

    .LINK
    Get-ReflectFlow

    .LINK
    about_Retroflect
    #>
    [CmdletBinding(PositionalBinding = $false)]
    [OutputType('Retroflect.Packet')]
    param(
        [string[]]$Address,

        [ValidateRange(1, 65535)]
        [int[]]$Port,

        [ValidateSet('reflected', 'passed', 'shieldDropped', 'malformed', 'forgedSourceDropped')]
        [string[]]$Verdict,

        [ValidateSet('tcp', 'udp', 'icmp', 'other')]
        [string[]]$Protocol,

        [ValidateRange(1, [int]::MaxValue)]
        [int]$Count,

        [timespan]$Duration,

        [ValidateRange(64, 65535)]
        [int]$SnapLength = 128,

        [Parameter(ValueFromPipelineByPropertyName)]

        [Alias('PipeName')]
        [string]$Pipe
    )
    $params = New-RetroflectCaptureParams -Format 'summary' -SnapLength $SnapLength -Address $Address -Port $Port -Verdict $Verdict -Protocol $Protocol
    try {
        $connection = Start-RetroflectCapture -Pipe $Pipe -Params $params
    }
    catch {
        $PSCmdlet.ThrowTerminatingError($_)
    }
    $tally = @{}
    try {
        # Each notification is a batch of packet summaries: emit them, at most as many as -Count leaves.
        Read-RetroflectCapture -Cmdlet $PSCmdlet -Connection $connection -Tally $tally -Count $Count -Duration $PSBoundParameters['Duration'] | ForEach-Object {
            foreach ($summary in $_.packets) {
                if ($Count -and $tally.Packets -ge $Count) { break }
                ConvertTo-RetroflectPacket -Summary $summary -Pipe $Pipe
                $tally.Packets++
            }
        }
    }
    finally {
        # Also on Ctrl+C: closing the connection ends the capture in the engine.
        Disconnect-RetroflectEngine -Connection $connection
        if ($tally.Dropped -gt 0) { Write-Warning "$($tally.Dropped) packets were not shown: this session could not keep up (narrow the filter)." }
    }
}
