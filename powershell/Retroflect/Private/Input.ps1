# Normalises what cmdlets receive from the pipeline or the command line into protocol arguments.

function ConvertTo-RetroflectAddressText {
    <#
    Accepts a string ('192.0.2.1', '[2001:db8::1]'), an [ipaddress], or any object with an Address property
    (a Retroflect.ReflectAddress, an Import-Csv row). Returns the text to send; the engine does the validation,
    so its rules and messages are the only ones. Returns $null for input that has no address at all.
    #>
    param([object]$InputObject)
    if ($null -eq $InputObject) { return $null }
    # -is looks through the PSObject wrapper, so piped strings and addresses match here.
    if ($InputObject -is [string]) { return $InputObject.Trim() }
    if ($InputObject -is [System.Net.IPAddress]) { return $InputObject.ToString() }
    $property = $InputObject.PSObject.Properties['Address']
    if ($null -eq $property) { $property = $InputObject.PSObject.Properties['ReflectAddress'] }
    if ($null -ne $property -and $null -ne $property.Value) { return ([string]$property.Value).Trim() }
    return $null
}

function ConvertTo-RetroflectPortSpec {
    <#
    One port number and protocol ('tcp', 'udp' or 'both') -> the protocol's port arguments: objects
    {port, protocol} for one protocol, the bare number for both (the engine expands it to TCP and UDP).
    #>
    param([Parameter(Mandatory)][int]$Port, [string]$Protocol = 'both')
    $p = 'both'
    if ($Protocol) { $p = $Protocol.ToLowerInvariant() }
    if ($p -eq 'both') {
        return @([ordered]@{ port = $Port; protocol = 'tcp' }, [ordered]@{ port = $Port; protocol = 'udp' })
    }
    return @([ordered]@{ port = $Port; protocol = $p })
}

function ConvertTo-RetroflectPortMapSpec {
    <#
    -PortMap input -> the protocol's map specs ("80=8080", "443=8443/tcp"). Accepts a hashtable @{80=8080} (each
    key a port, each value a target, or a string '8443/tcp' for one protocol), spec strings '443=8443/tcp', and
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
            $specs.Add(([string]$item).Trim())
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
