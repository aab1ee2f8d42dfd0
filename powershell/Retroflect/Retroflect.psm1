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

Export-ModuleMember -Function (Get-ChildItem -LiteralPath (Join-Path $PSScriptRoot 'Public') -Filter '*.ps1').BaseName
