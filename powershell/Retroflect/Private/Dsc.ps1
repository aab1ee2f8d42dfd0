# The work of the desired-state (DSC) resources RetroflectReflectAddress and RetroflectShieldPort, whose classes are
# in Retroflect.psm1 (the one place DSC looks for them): what an entry is now, whether it is as wanted, and the
# change, made through Set-ReflectAddress / Set-ShieldPort so the engine applies the whole list at once and writes
# its config file. Entries set by managed policy are reported (Source 'Policy') and never sent; wanting one of them
# otherwise than policy has it fails with Retroflect.ManagedByPolicy.

function Get-RetroflectDscPipe {
    # -Pipe for the cmdlets: the resource's Pipe when set, else nothing (the default pipe, or $env:RETROFLECT_PIPE).
    param([string]$Pipe)
    if ([string]::IsNullOrWhiteSpace($Pipe)) { return @{} }
    return @{ Pipe = $Pipe }
}

function ConvertTo-RetroflectDscIPAddress {
    param([string]$Address)
    $ip = $null
    $text = ([string]$Address).Trim().Trim('[', ']')
    if ([string]::IsNullOrWhiteSpace($text) -or -not [System.Net.IPAddress]::TryParse($text, [ref]$ip)) {
        throw (New-RetroflectErrorRecord -Code 'E_INVALID_ADDRESS' -TargetObject $Address `
            -Message "'$Address' is not an IP address." `
            -Hint 'Give an IPv4 or IPv6 address such as 192.0.2.1 or 2001:db8::1.')
    }
    return $ip
}

function ConvertTo-RetroflectDscMapSet {
    # Port maps as sorted one-protocol specs ('80=8080/tcp', '80=8080/udp'): '80=8080' as written in a
    # configuration and the engine's maps of it compare equal.
    param([object[]]$PortMap)
    $units = foreach ($spec in (ConvertTo-RetroflectPortMapSpec $PortMap)) {
        $base, $protocol = $spec.ToLowerInvariant() -split '/', 2
        if (-not $protocol -or $protocol -eq 'both') { "$base/tcp"; "$base/udp" } else { "$base/$protocol" }
    }
    return , [string[]]@($units | Sort-Object -Unique)
}

function Get-RetroflectDscProtocol {
    param([string]$Protocol)
    if ($Protocol -eq 'both' -or [string]::IsNullOrEmpty($Protocol)) { return @('tcp', 'udp') }
    return @($Protocol.ToLowerInvariant())
}

function Stop-RetroflectDscPolicyChange {
    param([string]$Target, [string]$What)
    throw (New-RetroflectErrorRecord -Code 'E_MANAGED_BY_POLICY' -TargetObject $Target `
        -Message "$Target is set by managed policy; this configuration wants it $What." `
        -Hint 'Change the policy (Group Policy, Intune or policy.json), or this configuration.')
}

function Get-RetroflectDscAddressState {
    # The configured entry of the resource's address (a Retroflect.ReflectAddress), or $null; and every entry.
    param([Parameter(Mandatory)]$Resource)
    $ip = ConvertTo-RetroflectDscIPAddress $Resource.Address
    $pipe = Get-RetroflectDscPipe $Resource.Pipe
    $all = @(Get-ReflectAddress @pipe -ErrorAction Stop)
    $entry = @($all | Where-Object { $_.IPAddress.Equals($ip) }) | Select-Object -First 1
    return @{ IPAddress = $ip; Entry = $entry; All = $all }
}

function Test-RetroflectDscAddress {
    param([Parameter(Mandatory)]$Resource)
    $state = Get-RetroflectDscAddressState $Resource
    if ($Resource.Ensure -eq 'Absent') { return ($null -eq $state.Entry) }
    if ($null -eq $state.Entry) { return $false }
    if ($null -eq $Resource.PortMap) { return $true }
    $now = ConvertTo-RetroflectDscMapSet @($state.Entry.PortMap)
    $want = ConvertTo-RetroflectDscMapSet $Resource.PortMap
    return (($now -join ',') -ceq ($want -join ','))
}

function Set-RetroflectDscAddress {
    param([Parameter(Mandatory)]$Resource)
    if (Test-RetroflectDscAddress $Resource) { return }
    $state = Get-RetroflectDscAddressState $Resource
    $target = $state.IPAddress.ToString()
    if ($null -ne $state.Entry -and $state.Entry.Source -eq 'Policy') {
        $what = 'absent'
        if ($Resource.Ensure -ne 'Absent') { $what = 'with the port maps ' + ($Resource.PortMap -join ', ') }
        Stop-RetroflectDscPolicyChange -Target "Reflect address $target" -What $what
    }
    # Every other entry as it is (its own maps ride along on the object), then this one as wanted.
    $wanted = New-Object 'System.Collections.Generic.List[object]'
    foreach ($e in $state.All) {
        if ($e.Source -ne 'Policy' -and -not $e.IPAddress.Equals($state.IPAddress)) { $wanted.Add($e) }
    }
    if ($Resource.Ensure -ne 'Absent') {
        $maps = $Resource.PortMap
        if ($null -eq $maps -and $null -ne $state.Entry) { $maps = @($state.Entry.PortMap) }
        $wanted.Add([pscustomobject]@{ IPAddress = $target; PortMap = [object[]]@($maps) })
    }
    $pipe = Get-RetroflectDscPipe $Resource.Pipe
    $null = Set-ReflectAddress -Address $wanted.ToArray() @pipe -Confirm:$false -ErrorAction Stop
}

function Get-RetroflectDscShieldState {
    # The configured entries of the resource's port in its protocols, and every entry.
    param([Parameter(Mandatory)]$Resource)
    $pipe = Get-RetroflectDscPipe $Resource.Pipe
    $protocols = Get-RetroflectDscProtocol $Resource.Protocol
    $all = @(Get-ShieldPort @pipe -ErrorAction Stop)
    $mine = @($all | Where-Object { $_.Port -eq $Resource.Port -and $protocols -contains $_.Protocol })
    return @{ Protocols = $protocols; Entries = $mine; All = $all }
}

function Test-RetroflectDscShieldPort {
    param([Parameter(Mandatory)]$Resource)
    $state = Get-RetroflectDscShieldState $Resource
    if ($Resource.Ensure -eq 'Absent') { return ($state.Entries.Count -eq 0) }
    return ($state.Entries.Count -eq $state.Protocols.Count)
}

function Set-RetroflectDscShieldPort {
    param([Parameter(Mandatory)]$Resource)
    if (Test-RetroflectDscShieldPort $Resource) { return }
    $state = Get-RetroflectDscShieldState $Resource
    $policy = @($state.Entries | Where-Object Source -eq 'Policy')
    if ($Resource.Ensure -eq 'Absent' -and $policy.Count -gt 0) {
        $shown = ($policy | ForEach-Object { '{0}/{1}' -f $_.Port, $_.Protocol }) -join ', '
        Stop-RetroflectDscPolicyChange -Target "Shield port $shown" -What 'absent'
    }
    $wanted = New-Object 'System.Collections.Generic.List[string]'
    foreach ($e in $state.All) {
        $mine = $e.Port -eq $Resource.Port -and $state.Protocols -contains $e.Protocol
        if ($e.Source -ne 'Policy' -and -not $mine) { $wanted.Add(('{0}/{1}' -f $e.Port, $e.Protocol)) }
    }
    if ($Resource.Ensure -ne 'Absent') {
        foreach ($p in $state.Protocols) {
            $byPolicy = @($policy | Where-Object Protocol -eq $p).Count -gt 0
            if (-not $byPolicy) { $wanted.Add(('{0}/{1}' -f $Resource.Port, $p)) }
        }
    }
    $pipe = Get-RetroflectDscPipe $Resource.Pipe
    $null = Set-ShieldPort -Port $wanted.ToArray() @pipe -Confirm:$false -ErrorAction Stop
}
