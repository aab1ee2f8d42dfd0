function Test-ReflectAddress {
    <#
    .SYNOPSIS
    Tests whether addresses can be used as reflect addresses on this host,
    using the engine's own validation.

    .DESCRIPTION
    Asks the engine to check each address exactly as Add-ReflectAddress would
    (an IP address, not one of this host's addresses, not on a local subnet,
    routed) without changing anything. When no engine runs, the engine
    executable runs the same checks on this host ('retroflect address test'),
    with the config file's addresses as the configured ones. The result says
    whether it is usable, why not, any warnings, whether it is already
    configured, and a suggested address of the same family that passes every
    check (taken from the documentation ranges, which nothing real uses). The
    engine's warnings (a public address, for example) are also written as
    warnings. All addresses of a pipeline are tested in one session with the
    engine.

    .PARAMETER Address
    Addresses to test: strings, [ipaddress] objects, or objects with an
    IPAddress property.

    .PARAMETER Quiet
    Return only $true or $false per address, always one per address: $false
    also for an address that could not be tested (no engine and no
    retroflect executable; the error is written as well).

    .PARAMETER Pipe
    The engine's control pipe: a name (default 'retroflect') or, on Linux,
    an absolute socket path.

    .EXAMPLE
    Test-ReflectAddress 192.0.2.1

    Shows whether 192.0.2.1 is usable and, if not, why and what to use instead.

    .EXAMPLE
    $t = Test-ReflectAddress 127.0.0.1;
    if (-not $t.Usable) { Add-ReflectAddress $t.Suggestion }

    Falls back to the engine's suggestion.

    .EXAMPLE
    if (Test-ReflectAddress 198.51.100.7 -Quiet) {
        Add-ReflectAddress 198.51.100.7
    }

    .INPUTS
    System.String, System.Net.IPAddress, or any object with an IPAddress
    property.

    .OUTPUTS
    Retroflect.AddressTest, or System.Boolean with -Quiet.
    .LINK
    Add-ReflectAddress

    .LINK
    about_Retroflect
    #>
    [CmdletBinding(PositionalBinding = $false)]
    [OutputType('Retroflect.AddressTest', [bool])]
    param(
        [Parameter(Mandatory, Position = 0, ValueFromPipeline, ValueFromPipelineByPropertyName)]
        [Alias('IPAddress', 'ReflectAddress')]
        [object[]]$Address,

        [switch]$Quiet,

        [Parameter(ValueFromPipelineByPropertyName)]
        [Alias('PipeName')]
        [string]$Pipe
    )
    begin {
        $targetPipe = $Pipe
        $items = New-Object 'System.Collections.Generic.List[string]'
    }
    process {
        if ($Pipe) { $targetPipe = $Pipe }
        foreach ($item in $Address) {
            $text = ConvertTo-RetroflectAddressText $item
            if (-not $text) { $text = [string]$item }
            $items.Add($text)
        }
    }
    end {
        # One session for the whole pipeline.
        if ($items.Count -eq 0) { return }
        # No engine: the executable runs the engine's checks on this host ('retroflect address test').
        $offline = Invoke-RetroflectOfflineAddressTest -Pipe $targetPipe -Address $items.ToArray()
        if ($null -ne $offline) {
            foreach ($result in $offline) {
                foreach ($w in $result.warnings) { Write-Warning ('{0}: {1}' -f $result.input, $w) }
                if ($Quiet) { [bool]$result.valid }
                else { ConvertTo-RetroflectAddressTest -Test $result -Pipe $targetPipe }
            }
            return
        }
        $answered = @{ Count = 0 }   # counted from the session's child scope
        Invoke-RetroflectSession $PSCmdlet $targetPipe -NonTerminating {
            param($connection)
            foreach ($text in $items) {
                $result = Invoke-RetroflectMethod -Connection $connection -Method 'address.test' -Params @{ address = $text } -TargetObject $text
                foreach ($w in $result.warnings) { Write-Warning ('{0}: {1}' -f $text, $w) }
                $answered.Count++
                if ($Quiet) { [bool]$result.valid }
                else { ConvertTo-RetroflectAddressTest -Test $result -Pipe $targetPipe }
            }
        }
        # -Quiet answers every address with a boolean, as Test-Connection -Quiet does: one the engine could not
        # judge (no engine, a failed session; the error is written) is not known to be usable.
        if ($Quiet) { for ($i = $answered.Count; $i -lt $items.Count; $i++) { $false } }
    }
}
