function Get-ReflectFlow {
    <#
    .SYNOPSIS
    Gets the flows the engine has reflected recently.

    .DESCRIPTION
    Returns one Retroflect.Flow per reflected connection or exchange, most
    recently seen first: protocol, reflect address, this host's address, client
    and server ports, packets, bytes, first and last time seen, and state (TCP:
    open or closed; others: active). Who made it, where the engine can tell:
    ProcessId, ProcessName, UserId and User (Linux, looked up when flows are
    listed: $null once the client's socket is closed); ProcessId, ProcessName
    and PackageFamilyName (Windows: for flows to an address with an -App list,
    whose connects the engine saw; $null otherwise). When no engine answers, a
    non-terminating Retroflect.EngineNotRunning error is written: -ErrorAction
    and $ErrorActionPreference decide (a script with
    $ErrorActionPreference = 'Stop' ends with an error).

    .PARAMETER First
    At most this many flows (1 to 100000, default 1000).

    .PARAMETER Protocol
    Only flows of these protocols (icmp covers ICMP and ICMPv6), as
    Watch-ReflectTraffic takes them.

    .PARAMETER ServerPort
    Only flows to these server ports.

    .PARAMETER Pipe
    The engine's control pipe: a name (default 'retroflect') or, on Linux,
    an absolute socket path.

    .EXAMPLE
    Get-ReflectFlow | Sort-Object Bytes -Descending |
        Select-Object -First 5

    The five biggest flows.

    .EXAMPLE
    Get-ReflectFlow -Protocol tcp -ServerPort 8080 |
        Where-Object State -eq 'open'

    Open TCP connections to the local server on port 8080.

    .INPUTS
    System.String. Pipe names by the property name Pipe.

    .EXAMPLE
    Get-ReflectFlow | Group-Object ProcessName |
        Sort-Object Count -Descending

    Which programs use the reflect addresses (for example a proxy reached
    through one), by number of flows.

    .OUTPUTS
    Retroflect.Flow
    .LINK
    Get-ReflectStats

    .LINK
    Get-ReflectAddress

    .LINK
    about_Retroflect
    #>
    [CmdletBinding(PositionalBinding = $false)]
    [OutputType('Retroflect.Flow')]
    param(
        [ValidateRange(1, 100000)]
        [int]$First = 1000,

        [ValidateSet('tcp', 'udp', 'icmp', 'other')]
        [string[]]$Protocol,

        [ValidateRange(0, 65535)]
        [int[]]$ServerPort,

        [Parameter(ValueFromPipelineByPropertyName)]
        [Alias('PipeName')]
        [string]$Pipe
    )
    process {
        Invoke-RetroflectSession $PSCmdlet $Pipe -NonTerminating {
            param($connection)
            $result = Invoke-RetroflectMethod -Connection $connection -Method 'flows' -Params @{ limit = $First }
            foreach ($f in $result.flows) {
                if ($Protocol -and $Protocol -notcontains ([string]$f.protocol -replace '^icmpv6$', 'icmp')) { continue }
                if ($ServerPort -and $ServerPort -notcontains [int]$f.serverPort) { continue }
                ConvertTo-RetroflectFlow -Flow $f -Pipe $Pipe
            }
        }
    }
}
