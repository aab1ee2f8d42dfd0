# Packet capture over the control pipe (docs/protocol.md, "Capture"), for Watch-ReflectTraffic and
# Save-ReflectCapture: start a capture on a connection of its own, then read its notifications one at a time with a
# short wait, so Ctrl+C (which stops the pipeline between statements) ends it promptly. Closing the connection ends
# the capture in the engine.

function New-RetroflectCaptureParams {
    # The capture.start params from the cmdlets' filter parameters (only those given).
    param([string]$Format, [int]$SnapLength, [string[]]$Address, [int[]]$Port, [string[]]$Verdict, [string[]]$Protocol)
    $params = [ordered]@{ format = $Format; snaplen = $SnapLength }
    if ($Address) { $params.addresses = @($Address) }
    if ($Port) { $params.ports = @($Port) }
    if ($Verdict) { $params.verdicts = @($Verdict) }
    if ($Protocol) { $params.protocols = @($Protocol) }
    return $params
}

function Start-RetroflectCapture {
    # Connects, starts the capture and returns the connection (with .Capture = the capture.start result). Notifications
    # that arrive before the reply are kept in .Notifications.
    param([string]$Pipe, [Parameter(Mandatory)][System.Collections.IDictionary]$Params)
    $connection = Connect-RetroflectEngine -Pipe $Pipe
    $connection | Add-Member -NotePropertyName Notifications -NotePropertyValue (New-Object 'System.Collections.Generic.List[object]')
    $connection | Add-Member -NotePropertyName PendingRead -NotePropertyValue $null
    try {
        $result = Invoke-RetroflectMethod -Connection $connection -Method 'capture.start' -Params $Params
    }
    catch {
        Disconnect-RetroflectEngine -Connection $connection
        throw
    }
    $connection | Add-Member -NotePropertyName Capture -NotePropertyValue $result
    return $connection
}

function Receive-RetroflectCaptureMessage {
    # The next message on a capture connection, or $null when none came within -TimeoutMs. A read that timed out
    # stays pending and is picked up by the next call (a StreamReader allows one read at a time).
    param([Parameter(Mandatory)][object]$Connection, [int]$TimeoutMs = 200)
    if ($Connection.Notifications.Count -gt 0) {
        $first = $Connection.Notifications[0]
        $Connection.Notifications.RemoveAt(0)
        return $first
    }
    if ($null -eq $Connection.PendingRead) { $Connection.PendingRead = $Connection.Reader.ReadLineAsync() }
    if (-not $Connection.PendingRead.Wait($TimeoutMs)) { return $null }
    $text = $Connection.PendingRead.Result
    $Connection.PendingRead = $null
    if ($null -eq $text) {
        throw (New-RetroflectErrorRecord -Code 'E_ENGINE_NOT_RUNNING' -TargetObject $Connection.Pipe.Display `
            -Message "The retroflect engine on $($Connection.Pipe.Display) closed the capture connection." `
            -Hint 'The engine stopped, or this session read too slowly: narrow the filter (-Address, -Port, -Verdict).')
    }
    if ([string]::IsNullOrWhiteSpace($text)) { return $null }
    return (ConvertFrom-Json -InputObject $text)
}

function Read-RetroflectCapture {
    <#
    The read loop of Watch-ReflectTraffic and Save-ReflectCapture: outputs the params of each capture notification
    ({dropped, packets} or {dropped, data}) as it arrives, until -Duration has passed (none: no limit), the caller
    has taken -Count packets (0: no limit), the engine ends the capture, or Ctrl+C (which stops the pipeline between
    two reads, at most 200 ms apart; the caller's finally disconnects). The caller pipes it into ForEach-Object and
    adds the packets it takes to $Tally.Packets, which is read before every read; $Tally.Dropped is the engine's count
    of packets dropped for this session, also after Ctrl+C. A failed read is $Cmdlet's terminating error.
    #>
    param(
        [Parameter(Mandatory)][System.Management.Automation.PSCmdlet]$Cmdlet,
        [Parameter(Mandatory)][object]$Connection,
        [Parameter(Mandatory)][hashtable]$Tally,
        [int]$Count,
        [object]$Duration
    )
    $Tally.Packets = [long]0
    $Tally.Dropped = [long]0
    $deadline = if ($null -ne $Duration) { [datetime]::UtcNow + [timespan]$Duration } else { [datetime]::MaxValue }
    while ([datetime]::UtcNow -lt $deadline -and (-not $Count -or $Tally.Packets -lt $Count)) {
        try {
            $message = Receive-RetroflectCaptureMessage -Connection $Connection -TimeoutMs 200
        }
        catch {
            $Cmdlet.ThrowTerminatingError($_)
        }
        if ($null -eq $message) { continue }
        if ($message.method -eq 'capture.end') { break }
        if ($message.method -ne 'capture') { continue }
        $Tally.Dropped = [long]$message.params.dropped
        $message.params
    }
}

function Select-RetroflectPcapngBlocks {
    # Splits pcapng bytes into whole blocks and keeps at most $Room packet blocks (type 6). Returns the bytes to
    # write and how many packets they hold.
    param([Parameter(Mandatory)][byte[]]$Bytes, [long]$Room)
    $pos = 0
    $packets = 0
    while ($pos + 12 -le $Bytes.Length) {
        $type = [System.BitConverter]::ToUInt32($Bytes, $pos)
        $length = [System.BitConverter]::ToUInt32($Bytes, $pos + 4)
        if ($type -eq 6) {
            if ($packets -ge $Room) { break }
            $packets++
        }
        $pos += $length
    }
    return [pscustomobject]@{ Length = $pos; Packets = $packets }
}
