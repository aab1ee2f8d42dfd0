# The one shape of the Set- cmdlets (desired state: Set-ReflectAddress, Set-ShieldPort): the wanted list is
# collected from the pipeline by the cmdlet, then sent whole, once, in its end block by Invoke-RetroflectDesiredState.
# A plain function (no [CmdletBinding()]) for the reasons Session.ps1 gives: -WhatIf ($WhatIfPreference) and the
# cmdlet's ShouldProcess stay the cmdlet's.

function Invoke-RetroflectDesiredState {
    <#
    Makes the engine's list match $Params through $Method ('address.set', 'shield.set'): asks for the plan first
    (whatIf), does nothing when it is empty, shows each planned change under -WhatIf, otherwise asks ShouldProcess
    once for the whole plan (about $What) and sends the change. $ChangesFrom names the converter of a result into
    Retroflect.Change objects; warnings in the result are written. Returns the changes.
    Nothing is sent when no input came through the pipeline ($Received false: a warning) or when some input could
    not be read ($Failed: half a list is not the wanted state; the cmdlet wrote its errors).
    #>
    param($Cmdlet, [string]$Pipe, [string]$Method, [hashtable]$Params, [string]$What, [string]$ChangesFrom,
        [bool]$Received, [bool]$Failed)
    # An empty pipeline (a filter that matched nothing) is no wanted state: only an explicit @() empties the list.
    if (-not $Received) {
        Write-Warning ('No input came through the pipeline; nothing was changed. To remove every entry policy ' +
            'does not set, pass @() as a parameter.')
        return
    }
    if ($Failed) { return }
    Invoke-RetroflectSession $Cmdlet $Pipe {
        param($connection)
        $plan = Invoke-RetroflectMethod -Connection $connection -Method $Method -Params (@{ whatIf = $true } + $Params)
        $planned = @(& $ChangesFrom $plan $Pipe)
        if ($planned.Count -eq 0) { return }
        if ($WhatIfPreference) {
            foreach ($c in $planned) { [void]$Cmdlet.ShouldProcess(('{0} {1}' -f $c.Kind, $c.Target), $c.Action) }
            return
        }
        $description = ($planned | ForEach-Object { '{0} {1}' -f $_.Action, $_.Target }) -join '; '
        if (-not $Cmdlet.ShouldProcess($What, $description)) { return }
        $result = Invoke-RetroflectMethod -Connection $connection -Method $Method -Params $Params
        if ($result.PSObject.Properties['warnings']) {
            foreach ($w in $result.warnings) { Write-Warning ('{0}: {1}' -f $w.address, $w.message) }
        }
        & $ChangesFrom $result $Pipe
    }
}
