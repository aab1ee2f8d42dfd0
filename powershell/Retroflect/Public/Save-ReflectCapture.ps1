function Save-ReflectCapture {
    <#
    .SYNOPSIS
    Captures the packets the engine handles into a pcapng file for Wireshark or
    tshark.

    .DESCRIPTION
    Starts a capture in the running engine and writes what it sends to -Path as
    pcapng: one interface per direction, and for every packet its bytes as the
    engine sent them on (reflected packets with their addresses swapped), a
    comment with the verdict and the addresses before reflection
    ("verdict=reflected original=198.51.100.2:40000 > 192.0.2.1:8081"), and its
    direction. It runs for -Duration, until -Count packets, or until Ctrl+C,
    then returns the file. An existing file is refused unless -Force (then it
    is replaced); a symbolic link, a junction, a folder, a device, a FIFO, a
    socket or a file with more than one name (hard links) is always refused,
    with a Retroflect.OutputRefused error and nothing written. No capture
    driver is installed and the engine keeps running.

    .PARAMETER Path
    The pcapng file to write.

    .PARAMETER Duration
    How long to capture, e.g. (New-TimeSpan -Seconds 30) or '00:00:30'.

    .PARAMETER Count
    Stop after this many packets.

    .PARAMETER Address
    Only packets to or from these addresses.

    .PARAMETER Port
    Only TCP and UDP packets with one of these source or destination ports.

    .PARAMETER Verdict
    Only packets with these verdicts.

    .PARAMETER Protocol
    Only these protocols (icmp covers ICMP and ICMPv6).

    .PARAMETER SnapLength
    Bytes kept of each packet (64 to 65535, default 256); 65535 keeps whole
    packets.

    .PARAMETER Force
    Replace -Path when it is an existing regular file (never a link, a
    device or a file with other names).

    .PARAMETER Pipe
    The engine's control pipe: a name (default 'retroflect') or, on Linux,
    an absolute socket path.

    .EXAMPLE
    Save-ReflectCapture -Path C:\temp\reflect.pcapng -Duration '00:00:30' `
        -Address 192.0.2.1

    Thirty seconds of traffic through the reflect address 192.0.2.1; open the
    file in Wireshark.

    .EXAMPLE
    Save-ReflectCapture -Path .\drops.pcapng -Count 100 -WhatIf `
        -Verdict shieldDropped, malformed

    Says which file it would write, and writes nothing.

    .EXAMPLE
    Save-ReflectCapture -Path .\reflect.pcapng -Duration '00:00:10' -Force

    Captures ten seconds into reflect.pcapng, replacing the file of an
    earlier run.

    .INPUTS
    None.

    .OUTPUTS
    System.IO.FileInfo
    .LINK
    Watch-ReflectTraffic

    .LINK
    about_Retroflect
    #>
    [CmdletBinding(SupportsShouldProcess, ConfirmImpact = 'Low', PositionalBinding = $false)]
    [OutputType([System.IO.FileInfo])]
    param(
        [Parameter(Mandatory, Position = 0)]
        [string]$Path,

        [timespan]$Duration,

        [ValidateRange(1, [int]::MaxValue)]
        [int]$Count,

        [string[]]$Address,

        [ValidateRange(1, 65535)]
        [int[]]$Port,

        [ValidateSet('reflected', 'passed', 'shieldDropped', 'malformed', 'forgedSourceDropped')]
        [string[]]$Verdict,

        [ValidateSet('tcp', 'udp', 'icmp', 'other')]
        [string[]]$Protocol,

        [ValidateRange(64, 65535)]
        [int]$SnapLength = 256,

        [switch]$Force,

        [Parameter(ValueFromPipelineByPropertyName)]

        [Alias('PipeName')]
        [string]$Pipe
    )
    $full = $PSCmdlet.GetUnresolvedProviderPathFromPSPath($Path)
    $refused = Get-RetroflectOutputProblem -Path $full -Force:$Force
    if ($null -ne $refused) { $PSCmdlet.ThrowTerminatingError($refused) }
    if (-not (Confirm-RetroflectAction $PSCmdlet $full 'Write a packet capture')) { return }
    $params = New-RetroflectCaptureParams -Format 'pcapng' -SnapLength $SnapLength -Address $Address -Port $Port -Verdict $Verdict -Protocol $Protocol
    try {
        $connection = Start-RetroflectCapture -Pipe $Pipe -Params $params
    }
    catch {
        $PSCmdlet.ThrowTerminatingError($_)
    }
    $file = $null
    $tally = @{}
    try {
        try {
            $file = Open-RetroflectOutputFile -Path $full -Force:$Force
        }
        catch {
            if ($_.FullyQualifiedErrorId -like 'Retroflect.*') { $PSCmdlet.ThrowTerminatingError($_) }
            $PSCmdlet.ThrowTerminatingError((New-RetroflectErrorRecord -Code 'E_INVALID_PARAMS' -TargetObject $full -InnerException $_.Exception `
                -Message "Cannot write $full`: $($_.Exception.InnerException.Message)" -Hint 'Give a path in a folder that exists and that you may write.'))
        }
        # Each notification is pcapng bytes: write its whole blocks, at most as many packets as -Count leaves.
        Read-RetroflectCapture -Cmdlet $PSCmdlet -Connection $connection -Tally $tally -Count $Count -Duration $PSBoundParameters['Duration'] | ForEach-Object {
            $bytes = [System.Convert]::FromBase64String([string]$_.data)
            $room = if ($Count) { $Count - $tally.Packets } else { [long]::MaxValue }
            $blocks = Select-RetroflectPcapngBlocks -Bytes $bytes -Room $room
            $file.Write($bytes, 0, $blocks.Length)
            $tally.Packets += $blocks.Packets
        }
    }
    finally {
        Disconnect-RetroflectEngine -Connection $connection
        if ($null -ne $file) { $file.Dispose() }
    }
    if ($tally.Dropped -gt 0) { Write-Warning "$($tally.Dropped) packets are missing from $full`: the capture could not keep up (narrow the filter or lower -SnapLength)." }
    Write-Verbose "$($tally.Packets) packets written to $full."
    Get-Item -LiteralPath $full
}
