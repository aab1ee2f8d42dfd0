function Remove-ReflectAddress {
    <#
    .SYNOPSIS
    Removes reflect addresses from the running engine.

    .DESCRIPTION
    Stops reflecting traffic to the given addresses and, unless -Temporary is
    given, removes them from the config file; an address that is only in the
    config file (taken off the running engine with -Temporary) is removed from
    the file. An address that is in neither (with -Temporary: not running) gets
    a non-terminating Retroflect.AddressNotFound error, as the engine reports
    it, and the other addresses are still removed, so `-ErrorAction Ignore`
    makes "make sure it is gone" idempotent. Input that is not an IP address
    gets Retroflect.InvalidAddress. All addresses from the pipeline are removed
    in one change when the pipeline ends.

    .PARAMETER Address
    Addresses to remove: strings, [ipaddress] objects, or objects with an
    IPAddress property, such as the output of Get-ReflectAddress.

    .PARAMETER PortMap
    Remove only these port maps (by mapped port: 80 for TCP and UDP,
    '80/tcp' for one protocol, or the Retroflect.PortMap objects in
    Get-ReflectAddress's PortMap); the addresses stay. A map that is not
    there is a Retroflect.PortNotFound error and nothing is removed.

    .PARAMETER Temporary
    Remove from the running engine only; the address stays in the config
    file and comes back at the next start.

    .PARAMETER Pipe
    The engine's control pipe: a name (default 'retroflect') or, on Linux,
    an absolute socket path.

    .PARAMETER PassThru
    Return the removed addresses as Retroflect.ReflectAddress objects.

    .EXAMPLE
    Remove-ReflectAddress 192.0.2.1

    Stops reflecting 192.0.2.1 and removes it from the config file (asks first
    when $ConfirmPreference is Medium).

    .EXAMPLE
    Get-ReflectAddress | Remove-ReflectAddress -Confirm:$false

    Removes every reflect address.

    .EXAMPLE
    Remove-ReflectAddress 192.0.2.9 -ErrorAction Ignore

    Makes sure 192.0.2.9 is not configured, without an error when it already is
    not.

    .INPUTS
    System.String, System.Net.IPAddress, Retroflect.ReflectAddress, or any
    object with an IPAddress property (Import-Csv rows).

    .OUTPUTS
    None, or Retroflect.ReflectAddress with -PassThru.
    .LINK
    Add-ReflectAddress

    .LINK
    Get-ReflectAddress

    .LINK
    about_Retroflect
    #>
    [CmdletBinding(SupportsShouldProcess, ConfirmImpact = 'Medium', PositionalBinding = $false)]
    [OutputType('Retroflect.ReflectAddress')]
    [OutputType('Retroflect.PortMap')]
    param(
        [Parameter(Mandatory, Position = 0, ValueFromPipeline, ValueFromPipelineByPropertyName)]
        [Alias('IPAddress', 'ReflectAddress')]
        [object[]]$Address,

        [object[]]$PortMap,

        [switch]$Temporary,

        [Parameter(ValueFromPipelineByPropertyName)]
        [Alias('PipeName')]
        [string]$Pipe,

        [switch]$PassThru
    )
    begin {
        $suffix = ''
        if ($Temporary) { $suffix = ' (running engine only)' }
        $noun = 'reflect address'
        $maps = @()
        if ($PortMap) {
            try { $maps = ConvertTo-RetroflectPortMapRemoval $PortMap }
            catch { $PSCmdlet.ThrowTerminatingError($_) }
            $noun = 'port maps ' + (@($maps | ForEach-Object { if ($_ -is [string]) { $_ } else { '{0}/{1}' -f $_.port, $_.protocol } }) -join ', ') + ' of reflect address'
        }
        $collector = New-RetroflectCollector -Cmdlet $PSCmdlet -Action 'Remove' -Noun $noun -Suffix $suffix -Pipe $Pipe
    }
    process {
        Add-RetroflectAddressItem $collector $Address $Pipe
    }
    end {
        if ($collector.Items.Count -eq 0) { return }
        # A port map that is not there is about the input (maps are all or nothing): written, not thrown.
        $removed = Invoke-RetroflectSession $PSCmdlet $collector.Pipe -WriteCodes 'E_PORT_NOT_FOUND' {
            param($connection)
            # address.test gives the canonical form, so input that is no address is reported on its own instead of
            # failing the whole request.
            $toRemove = New-Object 'System.Collections.Generic.List[string]'
            foreach ($text in $collector.Items) {
                $test = Invoke-RetroflectMethod -Connection $connection -Method 'address.test' -Params @{ address = $text } -TargetObject $text
                if ($null -eq $test.address) {
                    $reason = @($test.reasons)[0]
                    $PSCmdlet.WriteError((New-RetroflectErrorRecord -Code 'E_INVALID_ADDRESS' -TargetObject $text `
                        -Message ([string]$reason.message) -Hint ([string]$reason.hint)))
                }
                elseif (-not $toRemove.Contains([string]$test.address)) {
                    $toRemove.Add([string]$test.address)
                }
            }
            if ($toRemove.Count -eq 0) { return }
            $params = @{ addresses = $toRemove.ToArray() }
            if ($Temporary) { $params.temporary = $true }
            if ($PortMap) {
                $params.maps = $maps
                Invoke-RetroflectMethod -Connection $connection -Method 'address.remove' -Params $params -TargetObject $toRemove.ToArray()
                return
            }
            # The engine removes what is there (running, or unless -Temporary only in the config file) and says
            # which addresses were not: one error each, the others are removed.
            $params.skipMissing = $true
            $result = Invoke-RetroflectMethod -Connection $connection -Method 'address.remove' -Params $params -TargetObject $toRemove.ToArray()
            $where = 'a'
            if ($Temporary) { $where = 'a running' }
            foreach ($missing in @($result.missing)) {
                $PSCmdlet.WriteError((New-RetroflectErrorRecord -Code 'E_ADDRESS_NOT_FOUND' -TargetObject ([string]$missing) `
                    -Message "$missing is not $where reflect address." -Hint 'List the configured addresses with Get-ReflectAddress.'))
            }
            $result
        }
        if ($PortMap) {
            if ($PassThru -and $null -ne $removed) { foreach ($m in $removed.portMapsRemoved) { ConvertTo-RetroflectPortMap $m } }
            return
        }
        if ($PassThru -and $null -ne $removed) {
            foreach ($a in $removed.removed) { New-RetroflectReflectAddress -Address $a -Persisted $false -Pipe $collector.Pipe }
        }
    }
}
