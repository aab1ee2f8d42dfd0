# TEST STAND-IN for Windows' NetSecurity module (Windows Defender Firewall cmdlets), which Wine's pwsh lacks (it is
# CIM-based, and Wine has no CIM). Like StandIns\ScheduledTasks it is first on PSModulePath in the Windows Pester
# tests, so the Retroflect module autoloads it where Windows would autoload the real one. It models only what the
# module uses, in memory (per session): rules by Name with their remote addresses; a missing rule is an ObjectNotFound
# error as on Windows. Every call is recorded; Get-NetFirewallStandInCall returns the record for the tests.

$script:Rules = @{}
$script:Calls = New-Object 'System.Collections.Generic.List[object]'

function Get-NetFirewallStandInCall {
    [CmdletBinding()]
    param([string]$Command)
    $script:Calls | Where-Object { -not $Command -or $_.Command -eq $Command }
}

function Get-NetFirewallRule {
    [CmdletBinding()]
    param([string[]]$Name, [string]$Group)
    foreach ($n in $Name) {
        $rule = $script:Rules[$n]
        if ($null -eq $rule) {
            Write-Error -Message "No MSFT_NetFirewallRule objects found with property 'Name' equal to '$n'." -Category ObjectNotFound -TargetObject $n
            continue
        }
        $rule
    }
}

function New-NetFirewallRule {
    [CmdletBinding(SupportsShouldProcess)]
    param([Parameter(Mandatory)][string]$DisplayName, [string]$Name, [string]$Group, [string]$Description, [string]$Direction,
        [string]$Action, [string[]]$Profile, [string[]]$RemoteAddress, [string]$Program, [string[]]$LocalPort, [string]$Protocol)
    $script:Calls.Add([pscustomobject]@{ Command = 'New-NetFirewallRule'; Parameters = $PSBoundParameters })
    if (-not $Name) { $Name = [guid]::NewGuid().ToString('B') }
    if ($script:Rules.ContainsKey($Name)) { throw "Cannot create a file when that file already exists: rule $Name" }
    $remote = @('Any')
    if ($RemoteAddress) { $remote = $RemoteAddress }
    $script:Rules[$Name] = [pscustomobject]@{
        PSTypeName = 'StandIn.NetFirewallRule'; Name = $Name; DisplayName = $DisplayName; Group = $Group; Description = $Description
        Direction = $Direction; Action = $Action; Profile = ($Profile -join ', '); Enabled = 'True'; RemoteAddress = $remote
    }
    $script:Rules[$Name]
}

function Get-NetFirewallAddressFilter {
    [CmdletBinding()]
    param([Parameter(Mandatory)][object]$AssociatedNetFirewallRule)
    $rule = $script:Rules[$AssociatedNetFirewallRule.Name]
    if ($null -eq $rule) { throw "No firewall rule $($AssociatedNetFirewallRule.Name)" }
    [pscustomobject]@{ PSTypeName = 'StandIn.NetFirewallAddressFilter'; RemoteAddress = $rule.RemoteAddress; LocalAddress = @('Any') }
}

function Set-NetFirewallRule {
    [CmdletBinding(SupportsShouldProcess)]
    param([Parameter(Mandatory)][string[]]$Name, [string[]]$RemoteAddress)
    $script:Calls.Add([pscustomobject]@{ Command = 'Set-NetFirewallRule'; Parameters = $PSBoundParameters })
    foreach ($n in $Name) {
        if (-not $script:Rules.ContainsKey($n)) { throw "No MSFT_NetFirewallRule objects found with property 'Name' equal to '$n'." }
        if ($PSBoundParameters.ContainsKey('RemoteAddress')) { $script:Rules[$n].RemoteAddress = $RemoteAddress }
    }
}

function Remove-NetFirewallRule {
    [CmdletBinding(SupportsShouldProcess)]
    param([Parameter(Mandatory)][string[]]$Name)
    $script:Calls.Add([pscustomobject]@{ Command = 'Remove-NetFirewallRule'; Parameters = $PSBoundParameters })
    foreach ($n in $Name) {
        if (-not $script:Rules.ContainsKey($n)) { throw "No MSFT_NetFirewallRule objects found with property 'Name' equal to '$n'." }
        if ($PSCmdlet.ShouldProcess($n, 'Remove')) { $script:Rules.Remove($n) }
    }
}

Export-ModuleMember -Function @('Get-NetFirewallRule', 'New-NetFirewallRule', 'Get-NetFirewallAddressFilter', 'Set-NetFirewallRule',
    'Remove-NetFirewallRule', 'Get-NetFirewallStandInCall')
