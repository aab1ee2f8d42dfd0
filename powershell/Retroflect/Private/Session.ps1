# The two shapes every cmdlet has: one session with the engine (connect, requests, always disconnect, errors
# reported the cmdlet's way), and, for the Add/Remove cmdlets, a pipeline collected into one all-or-nothing
# request with ShouldProcess asked once per distinct item.
#
# Both helpers are plain functions on purpose (no [CmdletBinding()], no [Parameter()]): inside the script block a
# cmdlet passes, $PSCmdlet and the cmdlet's own variables stay the cmdlet's. The script block runs in a child
# scope, so it hands results back as output, not by assigning the cmdlet's variables.

# Why failures inside a session are not thrown: PowerShell adds every exception that passes a command boundary (and
# every `throw`, even one caught at once) to the calling cmdlet's -ErrorVariable, so one refused request gave a
# script 5 or 6 records. Helpers on the session path (PipeClient.ps1, Get-RetroflectPersistedSet) call
# Stop-RetroflectSession instead: it hands the record to the innermost session and leaves it with `break`, which
# PowerShell records nowhere as long as only plain functions (no [CmdletBinding()], no [Parameter()]) lie between.
# Outside a session (Start-Retroflect's polling, captures) it throws as before.
$script:SessionStack = New-Object 'System.Collections.Generic.Stack[hashtable]'

function Stop-RetroflectSession {
    # Ends the innermost session with $Record as its failure, or throws $Record when no session is open.
    param($Record)
    if ($script:SessionStack.Count -eq 0) { throw $Record }
    $script:SessionStack.Peek().Failure = $Record
    break 'RetroflectSession'
}

function Invoke-RetroflectSession {
    <#
    Connects to the engine on $Pipe, runs $Script with the connection as its only argument, and disconnects
    whatever happens. A failure (no engine, access denied, a refused request) ends the session and is reported as
    the cmdlet's one error: terminating by default (cmdlets that change something stop at the first failure), or
    with $NonTerminating written through WriteError, so that -ErrorAction and $ErrorActionPreference decide
    (Get-/Test- cmdlets, as Get-NetFirewallRule does). A failure whose protocol code is in $WriteCodes (about the
    input: nothing was changed) is written, not thrown, so the caller's script may go on. Returns what $Script
    outputs.
    #>
    param($Cmdlet, [string]$Pipe, [scriptblock]$Script, [switch]$NonTerminating, [int]$ConnectTimeoutMs = $script:DefaultConnectTimeoutMs, [string[]]$WriteCodes = @())
    $frame = @{ Failure = $null; Connection = $null }
    $script:SessionStack.Push($frame)
    try {
        :RetroflectSession do {
            $frame.Connection = Connect-RetroflectEngine -Pipe $Pipe -ConnectTimeoutMs $ConnectTimeoutMs
            & $Script $frame.Connection
        } while ($false)
    }
    finally {
        $null = $script:SessionStack.Pop()
        Disconnect-RetroflectEngine -Connection $frame.Connection
    }
    $failure = $frame.Failure
    if ($null -eq $failure) { return }
    if ($NonTerminating -or $WriteCodes -contains $failure.Exception.Data['RetroflectCode']) { $Cmdlet.WriteError($failure) }
    else { $Cmdlet.ThrowTerminatingError($failure) }
}

function New-RetroflectCollector {
    <#
    Collects a pipeline's items for one all-or-nothing request sent in the cmdlet's end block. $Action and $Noun
    word the ShouldProcess question ("Add" "reflect address 192.0.2.1"); $Suffix is appended to the target
    (" (temporary)"). The last -Pipe seen wins (piped objects carry their engine's pipe).
    #>
    param($Cmdlet, [string]$Action, [string]$Noun, [string]$Suffix, [string]$Pipe)
    # A -Temporary change says so in every ShouldProcess question.
    return [pscustomobject]@{
        Cmdlet = $Cmdlet
        Action = $Action
        Noun   = $Noun
        Suffix = $Suffix
        Pipe   = $Pipe
        Keys   = New-Object 'System.Collections.Generic.List[string]'
        Items  = New-Object 'System.Collections.Generic.List[object]'
        Seen   = @{}
    }
}

function Add-RetroflectAddressItem {
    # The -Address values of one pipeline object -> collected address texts; input with no address at all is a
    # non-terminating Retroflect.InvalidAddress (the engine judges the rest).
    param($Collector, [object[]]$Address, [string]$Pipe)
    foreach ($item in $Address) {
        $text = ConvertTo-RetroflectAddressText $item
        if (-not $text) {
            $Collector.Cmdlet.WriteError((New-RetroflectErrorRecord -Code 'E_INVALID_ADDRESS' -TargetObject $item `
                -Message "'$item' is not an address and has no IPAddress property." `
                -Hint 'Give an IPv4 or IPv6 address such as 192.0.2.1 or 2001:db8::1, or pipe Get-ReflectAddress.'))
            continue
        }
        Add-RetroflectCollectorItem $Collector $text $text $Pipe
    }
}

function Add-RetroflectPortItem {
    # The -Port values of one pipeline object -> collected {port, protocol} entries, keyed 'port/protocol'; a bad
    # port is a non-terminating Retroflect.InvalidPort. Returns the port numbers given for both protocols.
    param($Collector, [object[]]$Port, [string]$Protocol, [string]$Pipe)
    foreach ($item in $Port) {
        try { $specs = @(ConvertTo-RetroflectPortSpec -Port $item -Protocol $Protocol) }
        catch { $Collector.Cmdlet.WriteError($_); continue }
        if ($specs.Count -eq 2) { [string]$specs[0].port }
        foreach ($spec in $specs) { Add-RetroflectCollectorItem $Collector ('{0}/{1}' -f $spec.port, $spec.protocol) $spec $Pipe }
    }
}

function Confirm-RetroflectAction {
    <#
    $Cmdlet.ShouldProcess($Target, $Action), except that a confirmation PowerShell cannot ask (pwsh -NonInteractive
    with -Confirm or a low $ConfirmPreference) stops the cmdlet with Retroflect.ConfirmationRequired, so $? is
    $false and the script is told to pass -Confirm:$false. Without this the host's exception was a statement error
    inside the cmdlet: written, the item skipped, and $? still $true.
    #>
    param($Cmdlet, [string]$Target, [string]$Action)
    try { return $Cmdlet.ShouldProcess($Target, $Action) }
    catch {
        if ($_.Exception.GetBaseException() -isnot [System.Management.Automation.Host.HostException] -and
            $_.Exception.GetBaseException() -isnot [System.Management.Automation.PSInvalidOperationException]) { throw }
        $Cmdlet.ThrowTerminatingError((New-RetroflectErrorRecord -Code 'PS_CONFIRMATION_REQUIRED' -TargetObject $Target `
            -Message "$Action $Target needs a confirmation, and PowerShell runs non-interactively (-NonInteractive): nothing was changed." `
            -Hint 'Pass -Confirm:$false to go ahead unattended, or -WhatIf to see what would change.'))
    }
}

function Add-RetroflectCollectorItem {
    # Adds $Item under $Key once; returns nothing. Items the user declines (-Confirm) or -WhatIf are not collected.
    param($Collector, [string]$Key, $Item, [string]$Pipe)
    if ($Pipe) { $Collector.Pipe = $Pipe }
    if ($Collector.Seen.ContainsKey($Key)) { return }
    $Collector.Seen[$Key] = $true
    if (Confirm-RetroflectAction $Collector.Cmdlet ($Collector.Noun + ' ' + $Key + $Collector.Suffix) $Collector.Action) {
        $Collector.Keys.Add($Key)
        $Collector.Items.Add($Item)
    }
}
