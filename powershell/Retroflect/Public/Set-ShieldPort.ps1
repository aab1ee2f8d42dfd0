function Set-ShieldPort {
    <#
    .SYNOPSIS
    Makes the shield ports exactly the ones given (desired state), leaving
    managed policy entries as they are.

    .DESCRIPTION
    Compares the running engine and its config file with the ports given and
    makes both match: ports not given are removed, ports given are added (and
    saved). Ports set by managed policy (Source 'Policy' in Get-ShieldPort) are
    left as policy says. Running it again changes nothing. The engine makes the
    whole change at once.

    Returns one Retroflect.Change per change made (Action Added or Removed),
    nothing when the list already matched. -WhatIf shows each addition and
    removal and changes nothing.

    .PARAMETER Port
    The wanted ports: 8080, '8080/tcp', '53/udp', or objects with Port and
    Protocol (Get-ShieldPort output). @() means no port besides those
    policy sets. Piped input is collected and applied once, at the end.

    .PARAMETER Protocol
    tcp, udp, or both (default), for ports that do not name their protocol.

    .PARAMETER Pipe
    The engine's control pipe: a name (default 'retroflect') or, on Linux,
    an absolute socket path.

    .EXAMPLE
    Set-ShieldPort 8080, '53/udp'

    TCP and UDP 8080 and UDP 53, nothing else (besides what policy sets).

    .EXAMPLE
    Set-ShieldPort 8080 -Protocol tcp -WhatIf

    Shows what would be added and removed.

    .INPUTS
    System.Int32, System.String, or objects with Port and Protocol properties.

    .OUTPUTS
    Retroflect.Change
    .LINK
    Get-ShieldPort

    .LINK
    Set-ReflectAddress

    .LINK
    about_Retroflect
    #>
    [CmdletBinding(SupportsShouldProcess, ConfirmImpact = 'Medium', PositionalBinding = $false)]
    [OutputType('Retroflect.Change')]
    param(
        [Parameter(Mandatory, Position = 0, ValueFromPipeline, ValueFromPipelineByPropertyName)]
        [AllowEmptyCollection()]
        [object[]]$Port,

        [Parameter(Position = 1, ValueFromPipelineByPropertyName)]
        [ValidateSet('tcp', 'udp', 'both')]
        [string]$Protocol = 'both',

        [Parameter(ValueFromPipelineByPropertyName)]
        [Alias('PipeName')]
        [string]$Pipe
    )
    begin {
        $wanted = New-Object 'System.Collections.Generic.List[object]'
        $target = $Pipe
        $failed = $false
        $received = $false
    }
    process {
        $received = $true
        if ($Pipe) { $target = $Pipe }
        foreach ($item in $Port) {
            try { foreach ($spec in @(ConvertTo-RetroflectPortSpec -Port $item -Protocol $Protocol)) { $wanted.Add($spec) } }
            catch { $PSCmdlet.WriteError($_); $failed = $true }
        }
    }
    end {
        Invoke-RetroflectDesiredState -Cmdlet $PSCmdlet -Pipe $target -Method 'shield.set' `
            -Params @{ ports = $wanted.ToArray() } `
            -What 'shield ports' -ChangesFrom 'ConvertTo-RetroflectShieldChanges' `
            -Received $received -Failed $failed
    }
}
