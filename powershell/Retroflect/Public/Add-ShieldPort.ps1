function Add-ShieldPort {
    <#
    .SYNOPSIS
    Shields local ports: traffic from other hosts to them is dropped.

    .DESCRIPTION
    A server bound to the wildcard address, so that reflected traffic reaches it, is also reachable from the
    network. A shield port drops inbound TCP and/or UDP traffic from other hosts to that port, while loopback and
    reflected traffic still pass. Adding a port that is already shielded is not an error (idempotent). Ports from
    the pipeline are added in one all-or-nothing change when the pipeline ends. The change is saved to the config
    file unless -Temporary is given.

    .PARAMETER Port
    Port numbers, 1 to 65535.

    .PARAMETER Protocol
    tcp, udp, or both (default).

    .PARAMETER Temporary
    Change only the running engine; the config file is not written.

    .PARAMETER Pipe
    The engine's control pipe: a name (default 'retroflect') or, on Linux, an absolute socket path.

    .EXAMPLE
    Add-ShieldPort 8080

    Drops TCP and UDP traffic from other hosts to port 8080.

    .EXAMPLE
    Add-ShieldPort 53 -Protocol udp

    .EXAMPLE
    8080, 8443 | Add-ShieldPort -Protocol tcp -WhatIf

    Shows what would be shielded without changing anything.

    .INPUTS
    System.Int32, or objects with Port and Protocol properties (such as Get-ShieldPort output or Import-Csv rows).

    .OUTPUTS
    Retroflect.ShieldPort. One per port and protocol, with Added telling whether it was new.
    #>
    [CmdletBinding(SupportsShouldProcess, ConfirmImpact = 'Medium')]
    [OutputType('Retroflect.ShieldPort')]
    param(
        [Parameter(Mandatory, Position = 0, ValueFromPipeline, ValueFromPipelineByPropertyName)]
        [ValidateRange(1, 65535)]
        [int[]]$Port,

        [Parameter(Position = 1, ValueFromPipelineByPropertyName)]
        [ValidateSet('tcp', 'udp', 'both')]
        [string]$Protocol = 'both',

        [switch]$Temporary,

        [Parameter(ValueFromPipelineByPropertyName)]
        [Alias('PipeName')]
        [string]$Pipe
    )
    begin {
        $pending = New-Object 'System.Collections.Generic.List[object]'
        $seen = @{}
        $targetPipe = $Pipe
    }
    process {
        if ($Pipe) { $targetPipe = $Pipe }
        foreach ($number in $Port) {
            foreach ($spec in (ConvertTo-RetroflectPortSpec -Port $number -Protocol $Protocol)) {
                $key = '{0}/{1}' -f $spec.port, $spec.protocol
                if ($seen.ContainsKey($key)) { continue }
                $seen[$key] = $true
                $what = 'shield port ' + $key
                if ($Temporary) { $what += ' (temporary)' }
                if ($PSCmdlet.ShouldProcess($what, 'Add')) { $pending.Add($spec) }
            }
        }
    }
    end {
        if ($pending.Count -eq 0) { return }
        $params = @{ ports = $pending.ToArray() }
        if ($Temporary) { $params.temporary = $true }
        $connection = $null
        try {
            $connection = Connect-RetroflectEngine -Pipe $targetPipe
            try {
                $result = Invoke-RetroflectMethod -Connection $connection -Method 'shield.add' -Params $params
            }
            catch {
                $code = $_.Exception.Data['RetroflectCode']
                if ($code -eq 'E_INVALID_PORT' -or $code -eq 'E_LIMIT_REACHED') {
                    $PSCmdlet.WriteError($_)
                    return
                }
                throw
            }
            $list = Invoke-RetroflectMethod -Connection $connection -Method 'shield.list'
        }
        catch {
            $PSCmdlet.ThrowTerminatingError($_)
        }
        finally {
            Disconnect-RetroflectEngine -Connection $connection
        }
        $added = @{}
        foreach ($p in $result.added) { $added['{0}/{1}' -f $p.port, $p.protocol] = $true }
        $existing = @{}
        foreach ($p in $result.existing) { $existing['{0}/{1}' -f $p.port, $p.protocol] = $true }
        foreach ($entry in $list.ports) {
            $key = '{0}/{1}' -f $entry.port, $entry.protocol
            if (-not ($added.ContainsKey($key) -or $existing.ContainsKey($key))) { continue }
            $o = New-RetroflectShieldPort -Port $entry.port -Protocol $entry.protocol -Persisted ([bool]$entry.persisted) -Pipe $targetPipe
            Add-Member -InputObject $o -NotePropertyName Added -NotePropertyValue ($added.ContainsKey($key))
            $o
        }
    }
}
