function Test-Retroflect {
    <#
    .SYNOPSIS
    Checks whether retroflect works on this host and says exactly what to
    change where it does not.

    .DESCRIPTION
    Runs every check of 'retroflect doctor' and returns one Retroflect.Check
    object per check: Name, Status (Pass, Warning, Fail or Skipped), Detail
    (what was found), Fix (what to change; empty when nothing needs doing) and
    Evidence (the facts as data). Works with or without a running engine: with
    one, its live state is checked too (its addresses, its host routes and
    firewall rules, its counters); without one, the config file is checked.

    Checks on both platforms: privileges, each reflect address (the validation
    rules, its route and the interface it leaves by), each shielded or mapped
    server port (is a server bound, and to the wildcard address), the engine.
    Windows: WinDivert.dll and WinDivert64.sys (present, same version, signed),
    the WinDivert driver service entry (stale entries), other programs holding
    WinDivert handles (their process, layer, priority and filter), the Base
    Filtering Engine, code integrity states, the firewall rule for reflected
    traffic, enterprise private ranges. Linux: /dev/net/tun, nftables, the
    engine's nft table and routes, rp_filter, the netfilter log (NFLOG). The
    JSON shape of the same report is documented in docs/doctor.md.

    .PARAMETER Pipe
    The engine's control pipe to check: a name (default 'retroflect') or,
    on Linux, an absolute socket path.

    .PARAMETER ConfigPath
    The config file to check when no engine runs. Default: the engine's
    default path.

    .PARAMETER Path
    The retroflect executable. Default: the one installed with this module,
    then the module folder, then PATH.

    .PARAMETER WinDivertPath
    Windows: the folder of WinDivert.dll and WinDivert64.sys. Default: the
    executable's folder.

    .PARAMETER Repair
    Also fix what is safe to fix: a stale WinDivert driver service entry is
    removed when no program holds a WinDivert handle. Needs an elevated
    session.

    .PARAMETER Quiet
    Return only $true (no check failed; warnings allowed) or $false.

    .EXAMPLE
    Test-Retroflect

    Shows every check as a table: status, name and what was found.

    .EXAMPLE
    Test-Retroflect | Where-Object Status -ne 'Pass' |
        Format-List Name, Status, Detail, Fix

    Only what is not right, with what to change.

    .EXAMPLE
    $healthy = Test-Retroflect -Quiet

    $false when any check fails (warnings allowed): a compliance or detection
    script ends with exit 1 then.

    .EXAMPLE
    Test-Retroflect -Repair

    Removes a stale WinDivert driver entry (left by an older tool) if no
    program uses WinDivert, then checks again.

    .INPUTS
    None.

    .OUTPUTS
    Retroflect.Check, or System.Boolean with -Quiet.
    .LINK
    Test-ReflectAddress

    .LINK
    about_Retroflect
    #>
    [CmdletBinding(PositionalBinding = $false)]
    [OutputType('Retroflect.Check', [bool])]
    param(
        [Parameter(ValueFromPipelineByPropertyName)]
        [Alias('PipeName')]
        [string]$Pipe,

        [string]$ConfigPath,

        [string]$Path,

        [string]$WinDivertPath,

        [switch]$Repair,

        [switch]$Quiet
    )
    try {
        $exe = Resolve-RetroflectExecutable -Path $Path
        $argv = New-Object 'System.Collections.Generic.List[string]'
        if ($Pipe) { $argv.Add('--pipe'); $argv.Add($Pipe) }
        if ($ConfigPath) { $argv.Add('--config'); $argv.Add((Resolve-RetroflectUserPath $PSCmdlet $ConfigPath)) }
        if ($WinDivertPath) {
            $argv.Add('--windivert-dir')
            $argv.Add((Resolve-RetroflectUserPath $PSCmdlet $WinDivertPath))
        }
        if ($Repair) { $argv.Add('--repair') }
        $report = Invoke-RetroflectDoctor -Executable $exe -ArgumentList $argv.ToArray()
    }
    catch {
        $PSCmdlet.ThrowTerminatingError($_)
    }
    foreach ($change in $report.repairs) { Write-Verbose ('Repaired: ' + $change) }
    $checks = @(foreach ($c in $report.checks) { ConvertTo-RetroflectCheck -Check $c })
    if ($Quiet) { return (@($checks | Where-Object { $_.Status -eq 'Fail' }).Count -eq 0) }
    $checks
}
