function Remove-ShieldPort {
    <#
    .SYNOPSIS
    Removes shield ports, so traffic from other hosts reaches those ports
    again.

    .DESCRIPTION
    Removes the given port and protocol pairs from the running engine and,
    unless -Temporary is given, from the config file; a pair that is only in
    the config file (taken off the running engine with -Temporary) is removed
    from the file. A pair that is in neither (with -Temporary: not running)
    gets a non-terminating Retroflect.PortNotFound error, as the engine reports
    it, and the others are still removed, so `-ErrorAction Ignore` makes "make
    sure it is open" idempotent.

    .PARAMETER Port
    Port numbers, 1 to 65535.

    .PARAMETER Protocol
    tcp, udp, or both (default). 'both' removes whichever of TCP and UDP is
    shielded and reports the other as not found.

    .PARAMETER Temporary
    Remove from the running engine only; the port stays in the config file
    and comes back at the next start.

    .PARAMETER Pipe
    The engine's control pipe: a name (default 'retroflect') or, on Linux,
    an absolute socket path.

    .PARAMETER PassThru
    Return the removed ports as Retroflect.ShieldPort objects.

    .EXAMPLE
    Remove-ShieldPort 8080

    .EXAMPLE
    Get-ShieldPort | Where-Object Protocol -eq 'udp' |
        Remove-ShieldPort -Confirm:$false

    Removes every UDP shield port (Port and Protocol bind by property name).

    .INPUTS
    System.Int32, or objects with Port and Protocol properties (such as
    Get-ShieldPort output).

    .OUTPUTS
    None, or Retroflect.ShieldPort with -PassThru.
    .LINK
    Add-ShieldPort

    .LINK
    Get-ShieldPort

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

        [Parameter(ValueFromPipelineByPropertyName)]
        [Alias('PipeName')]
        [string]$Pipe,

        [switch]$PassThru
    )
    begin {
        $suffix = ''
        if ($Temporary) { $suffix = ' (running engine only)' }
        $collector = New-RetroflectCollector -Cmdlet $PSCmdlet -Action 'Remove' -Noun 'shield port' -Suffix $suffix -Pipe $Pipe
        # Port numbers given for both protocols: one of the two missing is fine, both missing is an error.
        $bothProtocols = @{}
    }
    process {
        foreach ($number in (Add-RetroflectPortItem $collector $Port $Protocol $Pipe)) { $bothProtocols[$number] = $true }
    }
    end {
        if ($collector.Items.Count -eq 0) { return }
        $removed = Invoke-RetroflectSession $PSCmdlet $collector.Pipe {
            param($connection)
            # The engine removes what is there (running, or unless -Temporary only in the config file) and says
            # which pairs were not.
            $params = @{ ports = $collector.Items.ToArray(); skipMissing = $true }
            if ($Temporary) { $params.temporary = $true }
            $result = Invoke-RetroflectMethod -Connection $connection -Method 'shield.remove' -Params $params
            $gone = @{}
            foreach ($entry in @($result.removed)) { $gone[[string]$entry.port] = $true }
            $reported = @{}
            $where = ''
            if ($Temporary) { $where = ' in the running engine' }
            foreach ($entry in @($result.missing)) {
                $key = '{0}/{1}' -f $entry.port, $entry.protocol
                if ($bothProtocols.ContainsKey([string]$entry.port)) {
                    # Given for both protocols: an error only when neither was shielded, and one for the port.
                    if ($gone.ContainsKey([string]$entry.port) -or $reported.ContainsKey([string]$entry.port)) { continue }
                    $reported[[string]$entry.port] = $true
                    $key = [string]$entry.port
                }
                $PSCmdlet.WriteError((New-RetroflectErrorRecord -Code 'E_PORT_NOT_FOUND' -TargetObject $key `
                    -Message "Port $key is not shielded$where." -Hint 'List the shield ports with Get-ShieldPort.'))
            }
            $result
        }
        if ($PassThru -and $null -ne $removed) {
            foreach ($p in $removed.removed) { New-RetroflectShieldPort -Port $p.port -Protocol $p.protocol -Persisted $false -Pipe $collector.Pipe }
        }
    }
}
