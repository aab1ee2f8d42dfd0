function Get-Retroflect {
    <#
    .SYNOPSIS
    Gets the status of the running retroflect engine.

    .DESCRIPTION
    Asks the engine on the control pipe for its status: state, version, packet
    backend, process id, start time, uptime, reflect addresses, shield ports,
    config file and pipe, and whether managed policy locks the configuration
    (LockedByPolicy: then every change cmdlet fails with
    Retroflect.ManagedByPolicy). When no engine answers, a non-terminating
    Retroflect.EngineNotRunning error is written, so `Get-Retroflect
    -ErrorAction SilentlyContinue` returns nothing and can be used as a check.

    .PARAMETER Pipe
    The engine's control pipe: a name (default 'retroflect', or
    $env:RETROFLECT_PIPE) or, on Linux, an absolute socket path. Several
    names may be piped in; each engine's status is returned.

    .EXAMPLE
    Get-Retroflect

    Shows the state, backend, addresses and ports of the default engine.

    .EXAMPLE
    if (Get-Retroflect -ErrorAction SilentlyContinue) { 'running' }
    else { 'not running' }

    Checks whether an engine is running without showing an error.

    .EXAMPLE
    (Get-Retroflect).ReflectAddresses | ForEach-Object { $_.AddressFamily }

    ReflectAddresses are [ipaddress] objects.

    .INPUTS
    System.String. Pipe names, by value or by the property name Pipe.

    .OUTPUTS
    Retroflect.Status
    .LINK
    Start-Retroflect

    .LINK
    Stop-Retroflect

    .LINK
    about_Retroflect
    #>
    [CmdletBinding(PositionalBinding = $false)]
    [OutputType('Retroflect.Status')]
    param(
        [Parameter(Position = 0, ValueFromPipeline, ValueFromPipelineByPropertyName)]
        [Alias('PipeName')]
        [string]$Pipe
    )
    process {
        Invoke-RetroflectSession $PSCmdlet $Pipe -NonTerminating {
            param($connection)
            $persisted = Get-RetroflectPersistedSet -Connection $connection
            $status = Invoke-RetroflectMethod -Connection $connection -Method 'status'
            ConvertTo-RetroflectStatus -Status $status -Pipe $Pipe -Persisted $persisted
        }
    }
}
