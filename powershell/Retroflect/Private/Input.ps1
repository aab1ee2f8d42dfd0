# Normalises what cmdlets receive from the pipeline or the command line into protocol arguments. One parser per
# kind of input, used by every cmdlet that takes it (Add-/Remove-ShieldPort, Start-/Install-Retroflect, the config
# file writer).

function ConvertTo-RetroflectAddressText {
    <#
    Accepts a string ('192.0.2.1', '[2001:db8::1]'), an [ipaddress], or any object with an IPAddress, Address or
    ReflectAddress property (a Retroflect.ReflectAddress, a Get-NetIPAddress result, an Import-Csv row). Returns
    the text to send; the engine does the validation, so its rules and messages are the only ones. Returns $null
    for input that has no address at all.
    #>
    param([object]$InputObject)
    if ($null -eq $InputObject) { return $null }
    # -is looks through the PSObject wrapper, so piped strings and addresses match here.
    if ($InputObject -is [string]) { return $InputObject.Trim() }
    if ($InputObject -is [System.Net.IPAddress]) { return $InputObject.ToString() }
    foreach ($name in @('IPAddress', 'Address', 'ReflectAddress')) {
        $property = $InputObject.PSObject.Properties[$name]
        if ($null -ne $property -and $null -ne $property.Value) { return ([string]$property.Value).Trim() }
    }
    return $null
}

function ConvertTo-RetroflectPortSpec {
    <#
    One shield port as a user gives it -> the protocol's {port, protocol} entries. Accepts 8080, '8080', '8080/tcp',
    '53/udp', '8080/both', or an object with Port (and Protocol) properties such as Get-ShieldPort output.
    $Protocol applies when the input names none; 'both' means TCP and UDP. Throws Retroflect.InvalidPort.
    #>
    param([object]$Port, [string]$Protocol = 'both')
    $value = $Port
    if ($null -ne $Port -and -not ($Port -is [string]) -and -not ($Port -is [int]) -and $null -ne $Port.PSObject.Properties['Port']) {
        $value = $Port.Port
        if ($null -ne $Port.PSObject.Properties['Protocol'] -and $Port.Protocol) { $Protocol = [string]$Port.Protocol }
    }
    $text = ([string]$value).Trim().ToLowerInvariant()
    $m = [regex]::Match($text, '^(\d{1,5})(?:/(tcp|udp|both))?$')
    $number = 0
    if ($m.Success) { $number = [int]$m.Groups[1].Value }
    if ($number -lt 1 -or $number -gt 65535) {
        throw (New-RetroflectErrorRecord -Code 'E_INVALID_PORT' -TargetObject $Port `
            -Message "'$value' is not a shield port." `
            -Hint 'Give a port from 1 to 65535, optionally with /tcp or /udp (8080, 8080/tcp, 53/udp).')
    }
    $p = 'both'
    if ($Protocol) { $p = $Protocol.ToLowerInvariant() }
    if ($m.Groups[2].Success) { $p = $m.Groups[2].Value }
    if ($p -eq 'both') {
        return @([ordered]@{ port = $number; protocol = 'tcp' }, [ordered]@{ port = $number; protocol = 'udp' })
    }
    return @([ordered]@{ port = $number; protocol = $p })
}

function Resolve-RetroflectUserPath {
    # A path as the user typed it, resolved against PowerShell's current location ($PWD), not the process's
    # working directory (which .NET file calls would use). The file need not exist.
    param($Cmdlet, [string]$Path)
    if (-not $Path) { return $Path }
    return $Cmdlet.SessionState.Path.GetUnresolvedProviderPathFromPSPath($Path)
}

function ConvertTo-RetroflectPortMapSpec {
    <#
    -PortMap input -> the protocol's map specs ("80=8080", "443=8443/tcp"). Accepts a hashtable @{80=8080} (each
    key a port, each value a target, or a string '8443/tcp' for one protocol), spec strings '443=8443/tcp' (several
    joined with ';' as a Retroflect.ReflectAddress's PortMap is written to CSV: '80=8080;443=8443/tcp'), and
    Retroflect.PortMap objects (Port, Target, Protocol), alone or in arrays. The engine checks ranges and conflicts,
    so its rules and messages are the only ones. Throws for input that is none of these.
    #>
    param([object[]]$InputObject)
    $specs = New-Object 'System.Collections.Generic.List[string]'
    foreach ($item in $InputObject) {
        if ($null -eq $item) { continue }
        if ($item -is [System.Collections.IDictionary]) {
            foreach ($key in $item.Keys) { $specs.Add(('{0}={1}' -f $key, $item[$key]).Trim()) }
        }
        elseif ($item -is [string] -or $item -is [int]) {
            # '80=8080;443=8443/tcp' is how Export-Csv writes a PortMap column: each part is one spec.
            foreach ($part in ([string]$item).Split(';')) { if ($part.Trim()) { $specs.Add($part.Trim()) } }
        }
        elseif ($null -ne $item.PSObject.Properties['Port'] -and $null -ne $item.PSObject.Properties['Target']) {
            $proto = 'both'
            if ($item.PSObject.Properties['Protocol'] -and $item.Protocol) { $proto = [string]$item.Protocol }
            $specs.Add(('{0}={1}/{2}' -f [int]$item.Port, [int]$item.Target, $proto))
        }
        else {
            throw "'$item' is not a port map: use @{80=8080}, '443=8443/tcp' or objects with Port and Target."
        }
    }
    return , $specs.ToArray()
}

function ConvertTo-RetroflectPortMapRemoval {
    <#
    Remove-ReflectAddress -PortMap input -> the protocol's `maps` of address.remove, which names maps by mapped port:
    80 or '80' (TCP and UDP), '80/tcp', or a Retroflect.PortMap object (Get-ReflectAddress's PortMap items) as
    {port, protocol}. Throws Retroflect.InvalidPort for Add-ReflectAddress's 'port=target' form, which would remove
    by a target the engine does not check.
    #>
    param([object[]]$InputObject)
    $maps = New-Object 'System.Collections.Generic.List[object]'
    foreach ($item in $InputObject) {
        if ($null -eq $item) { continue }
        if ($item -is [string] -or $item -is [int]) {
            $text = ([string]$item).Trim()
            if ($text.Contains('=')) {
                throw (New-RetroflectErrorRecord -Code 'E_INVALID_PORT' -TargetObject $item `
                    -Message "'$text' is a port map; -PortMap of Remove-ReflectAddress takes the mapped port." `
                    -Hint ("Give the port clients use: {0} (TCP and UDP) or '{0}/tcp', or pass the map objects: -PortMap ((Get-ReflectAddress <address>).PortMap | Where-Object Port -eq {0})." -f ($text.Split('=')[0].Trim())))
            }
            $maps.Add($text)
        }
        elseif ($null -ne $item.PSObject.Properties['Port']) {
            $map = [ordered]@{ port = [int]$item.Port }
            if ($null -ne $item.PSObject.Properties['Protocol'] -and $item.Protocol) { $map.protocol = ([string]$item.Protocol).ToLowerInvariant() }
            $maps.Add($map)
        }
        else {
            throw (New-RetroflectErrorRecord -Code 'E_INVALID_PORT' -TargetObject $item `
                -Message "'$item' is not a mapped port." -Hint "Give the port clients use: 80 (TCP and UDP) or '80/tcp'.")
        }
    }
    return , $maps.ToArray()
}
