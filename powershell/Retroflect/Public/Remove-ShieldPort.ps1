function Remove-ShieldPort {
    <#
    .SYNOPSIS
    Removes shield ports, so traffic from other hosts reaches those ports again.

    .DESCRIPTION
    Removes the given port and protocol pairs from the running engine and, unless -Temporary is given, from the
    config file. A pair that is not shielded gets a non-terminating Retroflect.PortNotFound error and the others
    are still removed, so `-ErrorAction Ignore` makes "make sure it is open" idempotent.

    .PARAMETER Port
    Port numbers, 1 to 65535.

    .PARAMETER Protocol
    tcp, udp, or both (default). 'both' removes whichever of TCP and UDP is shielded and reports the other as not
    found.

    .PARAMETER Temporary
    Remove from the running engine only; the port stays in the config file and comes back at the next start.

    .PARAMETER Pipe
    The engine's control pipe: a name (default 'retroflect') or, on Linux, an absolute socket path.

    .PARAMETER PassThru
    Return the removed ports as Retroflect.ShieldPort objects.

    .EXAMPLE
    Remove-ShieldPort 8080

    .EXAMPLE
    Get-ShieldPort | Where-Object Protocol -eq 'udp' | Remove-ShieldPort -Confirm:$false

    Removes every UDP shield port (Port and Protocol bind by property name).

    .INPUTS
    System.Int32, or objects with Port and Protocol properties (such as Get-ShieldPort output).

    .OUTPUTS
    None, or Retroflect.ShieldPort with -PassThru.
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
        [string]$Pipe,

        [switch]$PassThru
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
                if ($Temporary) { $what += ' (running engine only)' }
                if ($PSCmdlet.ShouldProcess($what, 'Remove')) { $pending.Add($spec) }
            }
        }
    }
    end {
        if ($pending.Count -eq 0) { return }
        $connection = $null
        $removed = $null
        try {
            $connection = Connect-RetroflectEngine -Pipe $targetPipe
            $list = Invoke-RetroflectMethod -Connection $connection -Method 'shield.list'
            $shielded = @{}
            foreach ($entry in $list.ports) { $shielded['{0}/{1}' -f $entry.port, $entry.protocol] = $true }
            $toRemove = New-Object 'System.Collections.Generic.List[object]'
            foreach ($spec in $pending) {
                $key = '{0}/{1}' -f $spec.port, $spec.protocol
                if ($shielded.ContainsKey($key)) { $toRemove.Add($spec) }
                else {
                    $PSCmdlet.WriteError((New-RetroflectErrorRecord -Code 'E_PORT_NOT_FOUND' -TargetObject $key `
                        -Message "Port $key is not shielded." -Hint 'List the shield ports with Get-ShieldPort.'))
                }
            }
            if ($toRemove.Count -gt 0) {
                $params = @{ ports = $toRemove.ToArray() }
                if ($Temporary) { $params.temporary = $true }
                $removed = Invoke-RetroflectMethod -Connection $connection -Method 'shield.remove' -Params $params
            }
        }
        catch {
            $PSCmdlet.ThrowTerminatingError($_)
        }
        finally {
            Disconnect-RetroflectEngine -Connection $connection
        }
        if ($PassThru -and $null -ne $removed) {
            foreach ($p in $removed.removed) { New-RetroflectShieldPort -Port $p.port -Protocol $p.protocol -Persisted (-not $Temporary) -Pipe $targetPipe }
        }
    }
}
