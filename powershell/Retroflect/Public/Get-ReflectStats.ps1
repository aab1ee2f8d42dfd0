function Get-ReflectStats {
    <#
    .SYNOPSIS
    Gets the engine's traffic counters.

    .DESCRIPTION
    Returns one Retroflect.Stats sample: packets and bytes reflected, dropped
    at shield ports, dropped because another host forged a reflect address as
    their source (ForgedSourceDropped*), dropped because another host routed
    them through this one towards a reflect address (ForwardedDropped*; Linux
    only, 0 on Windows), and passed; malformed packets by reason; receive and
    send errors; totals by protocol, by reflect address and by shield port; and
    the current rates per second. With -Interval, samples are returned
    repeatedly until -Count is reached or Ctrl+C. When no engine answers, a
    non-terminating Retroflect.EngineNotRunning error is written: -ErrorAction
    and $ErrorActionPreference decide (a script with
    $ErrorActionPreference = 'Stop' ends with an error).

    .PARAMETER Interval
    Seconds between samples. Without it, one sample is returned.

    .PARAMETER Count
    Number of samples with -Interval (default: until stopped).

    .PARAMETER Pipe
    The engine's control pipe: a name (default 'retroflect') or, on Linux,
    an absolute socket path.

    .EXAMPLE
    Get-ReflectStats

    .EXAMPLE
    Get-ReflectStats | ConvertTo-Json -Depth 4

    Counters for a script or a log: addresses as strings, UptimeSeconds in
    seconds.

    .EXAMPLE
    (Get-ReflectStats).ByAddress | Sort-Object Bytes -Descending

    Which reflect address carries the most traffic.

    .EXAMPLE
    Get-ReflectStats -Interval 1 -Count 3 |
        Select-Object SampledAt, ReflectedPacketsPerSecond

    Three one-second samples of the reflection rate.

    .INPUTS
    System.String. Pipe names by the property name Pipe.

    .OUTPUTS
    Retroflect.Stats
    .LINK
    Get-ReflectAddress

    .LINK
    Get-ShieldPort

    .LINK
    Get-ReflectFlow

    .LINK
    about_Retroflect
    #>
    [CmdletBinding(PositionalBinding = $false)]
    [OutputType('Retroflect.Stats')]
    param(
        [ValidateRange(0.1, 3600)]
        [double]$Interval,

        [ValidateRange(1, [int]::MaxValue)]
        [int]$Count,

        [Parameter(Position = 0, ValueFromPipelineByPropertyName)]
        [Alias('PipeName')]
        [string]$Pipe
    )
    process {
        $samples = 1
        if ($PSBoundParameters.ContainsKey('Interval')) {
            $samples = [int]::MaxValue
            if ($PSBoundParameters.ContainsKey('Count')) { $samples = $Count }
        }
        Invoke-RetroflectSession $PSCmdlet $Pipe -NonTerminating {
            param($connection)
            for ($i = 0; $i -lt $samples; $i++) {
                if ($i -gt 0) { Start-Sleep -Milliseconds ([int]($Interval * 1000)) }
                $persisted = Get-RetroflectPersistedSet -Connection $connection
                $stats = Invoke-RetroflectMethod -Connection $connection -Method 'stats'
                ConvertTo-RetroflectStats -Stats $stats -Pipe $Pipe -Persisted $persisted
            }
        }
    }
}
