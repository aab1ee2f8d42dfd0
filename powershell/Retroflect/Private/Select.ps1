# Name filters of the Get- cmdlets, as Get-NetFirewallRule -Name and Get-Service -Name behave: a wildcard that
# matches nothing is silent; an exact name that matches nothing is a non-terminating ObjectNotFound error.

function Select-RetroflectByName {
    <#
    Outputs the objects of $InputObject whose key (script block $Key, given the object) matches one of $Name
    (all of them when $Name is empty). $Normalize turns an exact name into the key's form (2001:DB8::1 ->
    2001:db8::1). Not an advanced function, so WriteError goes through the calling cmdlet.
    #>
    param($Cmdlet, [object[]]$InputObject, [string[]]$Name, [scriptblock]$Key, [scriptblock]$Normalize, [string]$What, [string]$ErrorCode, [string]$Hint)
    if (-not $Name) {
        foreach ($o in $InputObject) { $o }   # not `return $InputObject`: an empty list would output one $null
        return
    }
    $matched = @{}
    foreach ($o in $InputObject) {
        $k = [string](& $Key $o)
        foreach ($n in $Name) {
            $pattern = $n
            if (-not [System.Management.Automation.WildcardPattern]::ContainsWildcardCharacters($n) -and $Normalize) { $pattern = [string](& $Normalize $n) }
            if ($k -like $pattern) { $matched[$n] = $true; $o; break }
        }
    }
    foreach ($n in $Name) {
        if ($matched.ContainsKey($n) -or [System.Management.Automation.WildcardPattern]::ContainsWildcardCharacters($n)) { continue }
        $Cmdlet.WriteError((New-RetroflectErrorRecord -Code $ErrorCode -TargetObject $n -Message "No $What matches '$n'." -Hint $Hint))
    }
}

function ConvertTo-RetroflectCanonicalAddress {
    # '2001:DB8::1' or '[2001:db8::1]' -> '2001:db8::1', as the engine writes it; anything else unchanged.
    param([string]$Text)
    $ip = $null
    if ([System.Net.IPAddress]::TryParse($Text.Trim().Trim('[', ']'), [ref]$ip)) { return $ip.ToString() }
    return $Text
}
