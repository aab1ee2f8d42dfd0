function Set-ReflectAddress {
    <#
    .SYNOPSIS
    Makes the reflect addresses exactly the ones given (desired state), leaving
    managed policy entries as they are.

    .DESCRIPTION
    Compares the running engine and its config file with the addresses given,
    each with exactly its port maps, and makes both match: addresses not given
    are removed, addresses given are added (and saved), port maps are added and
    removed to match. Addresses set by managed policy (Group Policy, Intune,
    policy.json; Source 'Policy' in Get-ReflectAddress) are left as policy
    says. Running it again changes nothing, so it suits a scheduled task or an
    Intune remediation. The engine makes the whole change at once: a refused
    address (not usable on this host, a conflicting map) changes nothing and is
    a terminating error.

    Returns one Retroflect.Change per change made (Action Added, Removed,
    Mapped or Unmapped), nothing when the list already matched. -WhatIf shows
    each addition and removal and changes nothing.

    .PARAMETER Address
    The wanted addresses: strings, [ipaddress] objects, or objects with an
    IPAddress property (Get-ReflectAddress output, Import-Csv rows); an
    object's PortMap property gives its maps. @() means no address besides
    those policy sets. Piped input is collected and applied once, at the
    end.

    .PARAMETER PortMap
    Port maps for the addresses given as text (not objects with their own
    PortMap): @{80=8080}, '443=8443/tcp', or '80=8080;443=8443/tcp'. An
    address without maps loses any maps it has.

    .PARAMETER Pipe
    The engine's control pipe: a name (default 'retroflect') or, on Linux,
    an absolute socket path.

    .EXAMPLE
    Set-ReflectAddress '203.0.113.7', '2001:db8::7'

    Exactly these two addresses (and any that policy sets).

    .EXAMPLE
    Set-ReflectAddress '203.0.113.7' -PortMap @{80=8080} -WhatIf

    Shows what would be added, mapped and removed.

    .EXAMPLE
    Get-ReflectAddress | Export-Csv .\addresses.csv
    Import-Csv .\addresses.csv | Set-ReflectAddress

    Saves the addresses to a CSV file (IPAddress and PortMap columns, maps as
    '80=8080;443=8443/tcp') and later makes the engine match it again.

    .EXAMPLE
    Set-ReflectAddress -Address @() -Confirm:$false

    Removes every address that policy does not set.

    .INPUTS
    System.String, System.Net.IPAddress, or objects with IPAddress (and
    PortMap) properties.

    .OUTPUTS
    Retroflect.Change
    .LINK
    Get-ReflectAddress

    .LINK
    Set-ShieldPort

    .LINK
    about_Retroflect
    #>
    [CmdletBinding(SupportsShouldProcess, ConfirmImpact = 'Medium', PositionalBinding = $false)]
    [OutputType('Retroflect.Change')]
    param(
        [Parameter(Mandatory, Position = 0, ValueFromPipeline, ValueFromPipelineByPropertyName)]
        [AllowEmptyCollection()]
        [Alias('IPAddress', 'ReflectAddress')]
        [object[]]$Address,

        [Parameter(ValueFromPipelineByPropertyName)]
        [object[]]$PortMap,

        [Parameter(ValueFromPipelineByPropertyName)]
        [Alias('PipeName')]
        [string]$Pipe
    )
    begin {
        $wanted = New-Object 'System.Collections.Generic.List[object]'
        $seen = @{}
        $target = $Pipe
        $failed = $false
        $received = $false
    }
    process {
        $received = $true
        if ($Pipe) { $target = $Pipe }
        $maps = @()
        if ($PortMap) {
            # One array of spec strings (the converter returns it whole, not item by item).
            try { $maps = ConvertTo-RetroflectPortMapSpec $PortMap }
            catch {
                $PSCmdlet.WriteError((New-RetroflectErrorRecord -Code 'E_INVALID_PORT' -TargetObject $PortMap `
                    -Message $_.Exception.Message -Hint 'Write maps as @{80=8080} or ''443=8443/tcp''.'))
                $failed = $true
                return
            }
        }
        foreach ($item in $Address) {
            $text = ConvertTo-RetroflectAddressText $item
            if (-not $text) {
                $PSCmdlet.WriteError((New-RetroflectErrorRecord -Code 'E_INVALID_ADDRESS' -TargetObject $item `
                    -Message "'$item' is not an address and has no IPAddress property." `
                    -Hint 'Give an IPv4 or IPv6 address such as 192.0.2.1 or 2001:db8::1, or pipe Get-ReflectAddress.'))
                $failed = $true
                continue
            }
            # An object carrying its own maps (Get-ReflectAddress output) keeps them; text takes -PortMap.
            $own = $maps
            if (-not ($item -is [string]) -and $null -ne $item.PSObject.Properties['PortMap'] -and $null -ne $item.PortMap) {
                $own = ConvertTo-RetroflectPortMapSpec @($item.PortMap)
            }
            if ($seen.ContainsKey($text)) { continue }
            $seen[$text] = $true
            $wanted.Add([ordered]@{ address = $text; portMaps = [string[]]@($own) })
        }
    }
    end {
        Invoke-RetroflectDesiredState -Cmdlet $PSCmdlet -Pipe $target -Method 'address.set' `
            -Params @{ addresses = $wanted.ToArray() } `
            -What 'reflect addresses' -ChangesFrom 'ConvertTo-RetroflectAddressChanges' `
            -Received $received -Failed $failed
    }
}
