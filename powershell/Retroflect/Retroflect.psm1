# Retroflect module: loads the private helpers, then one file per public function. The manifest's
# FunctionsToExport is the list of what is public; test/powershell/module.test.ts checks it matches Public/.
#
# How to add a cmdlet (see also powershell/README.md):
#  1. Public/<Verb-Noun>.ps1 with exactly that function: comment-based help (.SYNOPSIS, .DESCRIPTION, every
#     .PARAMETER, .EXAMPLE run by a test or marked "Windows only", .OUTPUTS, .LINK), [CmdletBinding(...,
#     PositionalBinding = $false)], -Pipe with [Alias('PipeName')] bound by property name.
#  2. Talk to the engine through Invoke-RetroflectSession (Private/Session.ps1): Get-/Test- cmdlets pass
#     -NonTerminating so -ErrorAction decides; changes are terminating. Add/Remove cmdlets collect their pipeline
#     with New-RetroflectCollector / Add-RetroflectCollectorItem (ShouldProcess once per item) and send one
#     request in end {}; they output nothing unless -PassThru.
#  3. Objects come from a builder in Private/Objects.ps1 with a PSTypeName, and a table and list view in
#     Retroflect.Format.ps1xml. Addresses are [ipaddress] named IPAddress, counters [long], durations seconds; a type
#     with an address is built by New-RetroflectObject so that ConvertTo-Json writes the address as text.
#  4. Errors: New-RetroflectErrorRecord with a code from Private/Errors.ps1 (documented in about_Retroflect).
#  5. Add it to FunctionsToExport in Retroflect.psd1 and write powershell/Tests/<Verb-Noun>.Tests.ps1 (one per cmdlet); see powershell/README.md.

foreach ($folder in @('Private', 'Public')) {
    $dir = Join-Path $PSScriptRoot $folder
    foreach ($file in (Get-ChildItem -LiteralPath $dir -Filter '*.ps1' | Sort-Object Name)) {
        . $file.FullName
    }
}

# Tab completion of the entries of the running engine (on -Pipe if given), for the cmdlets that name them (reflect
# addresses also for the capture filters of Watch-ReflectTraffic and Save-ReflectCapture). Quick and silent: no engine, no list.
$addressCompleter = {
    param($commandName, $parameterName, $wordToComplete, $commandAst, $fakeBoundParameters)
    $pipe = $fakeBoundParameters['Pipe']
    Get-ReflectAddress -Pipe $pipe -ErrorAction Ignore | ForEach-Object { $_.IPAddress.ToString() } |
        Where-Object { $_ -like "$wordToComplete*" } |
        ForEach-Object { New-Object System.Management.Automation.CompletionResult($_, $_, 'ParameterValue', $_) }
}
$portCompleter = {
    param($commandName, $parameterName, $wordToComplete, $commandAst, $fakeBoundParameters)
    $pipe = $fakeBoundParameters['Pipe']
    Get-ShieldPort -Pipe $pipe -ErrorAction Ignore | ForEach-Object { [string]$_.Port } | Sort-Object -Unique |
        Where-Object { $_ -like "$wordToComplete*" } |
        ForEach-Object { New-Object System.Management.Automation.CompletionResult($_, $_, 'ParameterValue', $_) }
}
Register-ArgumentCompleter -CommandName 'Get-ReflectAddress', 'Remove-ReflectAddress', 'Watch-ReflectTraffic', 'Save-ReflectCapture' -ParameterName 'Address' -ScriptBlock $addressCompleter
Register-ArgumentCompleter -CommandName 'Get-ShieldPort', 'Remove-ShieldPort' -ParameterName 'Port' -ScriptBlock $portCompleter

# Desired State Configuration resources, class-based (DSC finds them only in the root module, so they are here; their
# work is in Private/Dsc.ps1). One reflect address or one shield port Present or Absent on the engine on Pipe;
# Set goes through Set-ReflectAddress / Set-ShieldPort and so writes the config file. Entries set by managed policy
# show Source 'Policy' and cannot be changed here (Retroflect.ManagedByPolicy). Enums, not ValidateSet, limit the
# values: DSC reads both, and a property with two attributes trips the syntax check's grammar (module.test.ts).
enum RetroflectEnsure {
    Absent
    Present
}
enum RetroflectShieldProtocol {
    tcp
    udp
    both
}

[DscResource()]
class RetroflectReflectAddress {
    # The reflect address, IPv4 or IPv6.
    [DscProperty(Key)] [string]$Address
    [DscProperty()] [RetroflectEnsure]$Ensure = [RetroflectEnsure]::Present
    # Port maps ('80=8080', '443=8443/tcp'): when given, exactly these; when not, the address keeps its maps.
    [DscProperty()] [string[]]$PortMap
    # The engine's control pipe; empty: the default (or $env:RETROFLECT_PIPE).
    [DscProperty()] [string]$Pipe
    # Where the entry comes from: Policy, Config or Temporary (empty when absent).
    [DscProperty(NotConfigurable)] [string]$Source

    [RetroflectReflectAddress] Get() {
        $state = Get-RetroflectDscAddressState $this
        $now = [RetroflectReflectAddress]::new()
        $now.Address = $state.IPAddress.ToString()
        $now.Pipe = $this.Pipe
        $now.Ensure = 'Absent'
        if ($null -ne $state.Entry) {
            $now.Ensure = 'Present'
            $now.PortMap = ConvertTo-RetroflectDscMapSet @($state.Entry.PortMap)
            $now.Source = $state.Entry.Source
        }
        return $now
    }
    [bool] Test() { return (Test-RetroflectDscAddress $this) }
    [void] Set() { Set-RetroflectDscAddress $this }
}

[DscResource()]
class RetroflectShieldPort {
    # 1 to 65535 (the engine checks it).
    [DscProperty(Key)] [int]$Port
    # tcp, udp or both (one resource for the two entries).
    [DscProperty(Key)] [RetroflectShieldProtocol]$Protocol = [RetroflectShieldProtocol]::both
    [DscProperty()] [RetroflectEnsure]$Ensure = [RetroflectEnsure]::Present
    [DscProperty()] [string]$Pipe
    # The sources of the entries there (Policy, Config, Temporary), one per protocol, joined with ','.
    [DscProperty(NotConfigurable)] [string]$Source

    [RetroflectShieldPort] Get() {
        $state = Get-RetroflectDscShieldState $this
        $now = [RetroflectShieldPort]::new()
        $now.Port = $this.Port
        $now.Protocol = $this.Protocol
        $now.Pipe = $this.Pipe
        $now.Ensure = 'Absent'
        if ($state.Entries.Count -eq $state.Protocols.Count) { $now.Ensure = 'Present' }
        $now.Source = (@($state.Entries | ForEach-Object { $_.Source } | Sort-Object -Unique) -join ',')
        return $now
    }
    [bool] Test() { return (Test-RetroflectDscShieldPort $this) }
    [void] Set() { Set-RetroflectDscShieldPort $this }
}

Export-ModuleMember -Function (Get-ChildItem -LiteralPath (Join-Path $PSScriptRoot 'Public') -Filter '*.ps1').BaseName
