function Add-ShieldPort {
    <#
    .SYNOPSIS
    Shields local ports: traffic from other hosts to them is dropped.

    .DESCRIPTION
    A server bound to the wildcard address, so that reflected traffic reaches
    it, is also reachable from the network. A shield port drops inbound TCP
    and/or UDP traffic from other hosts to that port, while loopback and
    reflected traffic still pass. Adding a port that is already shielded is not
    an error (idempotent). Ports from the pipeline are added in one
    all-or-nothing change when the pipeline ends. The change is saved to the
    config file unless -Temporary is given.

    .PARAMETER Port
    Ports, 1 to 65535, each optionally with its protocol as
    Start-Retroflect and Install-Retroflect take them: 8080, '8080/tcp',
    '53/udp'. Objects with Port and Protocol properties bind by property
    name.

    .PARAMETER Protocol
    tcp, udp, or both (default), for ports given without one.

    .PARAMETER Temporary
    Change only the running engine; the config file is not written.

    .PARAMETER PassThru
    Return the entries as Retroflect objects (Added tells whether each was
    new, Persisted whether it is saved). Without it nothing is output, as
    Start-Service and Add-LocalGroupMember do.

    .PARAMETER Pipe
    The engine's control pipe: a name (default 'retroflect') or, on Linux,
    an absolute socket path.

    .EXAMPLE
    Add-ShieldPort 8080

    Drops TCP and UDP traffic from other hosts to port 8080.

    .EXAMPLE
    Add-ShieldPort 53 -Protocol udp

    Drops UDP traffic from other hosts to port 53.

    .EXAMPLE
    Add-ShieldPort '8080/tcp', '53/udp' -PassThru

    The same port forms as Start-Retroflect -ShieldPort; -PassThru returns the
    shield ports.

    .EXAMPLE
    8080, 8443 | Add-ShieldPort -Protocol tcp -WhatIf

    Shows what would be shielded without changing anything.

    .INPUTS
    System.Int32, or objects with Port and Protocol properties (such as
    Get-ShieldPort output or Import-Csv rows).

    .OUTPUTS
    None, or with -PassThru Retroflect.ShieldPort: one per port and protocol,
    with Added telling whether it was new.
    .LINK
    Get-ShieldPort

    .LINK
    Remove-ShieldPort

    .LINK
    about_Retroflect
    #>
    [CmdletBinding(SupportsShouldProcess, ConfirmImpact = 'Medium', PositionalBinding = $false)]
    [OutputType('Retroflect.ShieldPort')]
    param(
        [Parameter(Mandatory, Position = 0, ValueFromPipeline, ValueFromPipelineByPropertyName)]
        [object[]]$Port,

        [Parameter(Position = 1, ValueFromPipelineByPropertyName)]
        [ValidateSet('tcp', 'udp', 'both')]
        [string]$Protocol = 'both',

        [switch]$Temporary,

        [switch]$PassThru,

        [Parameter(ValueFromPipelineByPropertyName)]
        [Alias('PipeName')]
        [string]$Pipe
    )
    begin {
        $suffix = ''
        if ($Temporary) { $suffix = ' (temporary)' }
        $collector = New-RetroflectCollector -Cmdlet $PSCmdlet -Action 'Add' -Noun 'shield port' -Suffix $suffix -Pipe $Pipe
    }
    process {
        $null = Add-RetroflectPortItem $collector $Port $Protocol $Pipe
    }
    end {
        if ($collector.Items.Count -eq 0) { return }
        $params = @{ ports = $collector.Items.ToArray() }
        if ($Temporary) { $params.temporary = $true }
        # A refusal about the input (nothing was added) is written, not thrown, so the caller may go on.
        $result = Invoke-RetroflectSession $PSCmdlet $collector.Pipe -WriteCodes 'E_INVALID_PORT', 'E_LIMIT_REACHED' {
            param($connection)
            Invoke-RetroflectMethod -Connection $connection -Method 'shield.add' -Params $params -TargetObject $collector.Keys.ToArray()
        }
        if ($null -eq $result -or -not $PassThru) { return }
        $persisted = @{}
        foreach ($p in $result.persisted) { $persisted['{0}/{1}' -f $p.port, $p.protocol] = $true }
        $added = @{}
        foreach ($p in $result.added) { $added['{0}/{1}' -f $p.port, $p.protocol] = $true }
        foreach ($p in @($result.added) + @($result.existing)) {
            $key = '{0}/{1}' -f $p.port, $p.protocol
            $o = New-RetroflectShieldPort -Port $p.port -Protocol $p.protocol -Persisted $persisted.ContainsKey($key) -Pipe $collector.Pipe
            Add-Member -InputObject $o -NotePropertyName Added -NotePropertyValue $added.ContainsKey($key)
            $o
        }
    }
}
