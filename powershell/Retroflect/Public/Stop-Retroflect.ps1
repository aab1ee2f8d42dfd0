function Stop-Retroflect {
    <#
    .SYNOPSIS
    Stops the running retroflect engine.

    .DESCRIPTION
    Asks the engine to stop, then waits until it has undone its host changes
    (routes, firewall rules, WinDivert handles) and exited. When no engine is
    running, nothing happens and no error is written (idempotent). A running
    installed engine (Install-Retroflect) starts again at the next boot.

    .PARAMETER TimeoutSeconds
    How long to wait for the engine to exit (default 30).
    Retroflect.Timeout if it does not.

    .PARAMETER PassThru
    Return the engine's last status (State = 'stopped' once it has exited).

    .PARAMETER Pipe
    The engine's control pipe: a name (default 'retroflect') or, on Linux,
    an absolute socket path.

    .EXAMPLE
    Stop-Retroflect

    .EXAMPLE
    Get-Retroflect -ErrorAction SilentlyContinue |
        Stop-Retroflect -Confirm:$false

    Stops the engine if one is running, without asking.

    .INPUTS
    Retroflect.Status, or objects with a Pipe property.

    .OUTPUTS
    None, or Retroflect.Status with -PassThru.
    .LINK
    Start-Retroflect

    .LINK
    Get-Retroflect

    .LINK
    about_Retroflect
    #>
    [CmdletBinding(SupportsShouldProcess, ConfirmImpact = 'Medium', PositionalBinding = $false)]
    [OutputType('Retroflect.Status')]
    param(
        [ValidateRange(1, 600)]
        [int]$TimeoutSeconds = 30,

        [switch]$PassThru,

        [Parameter(Position = 0, ValueFromPipeline, ValueFromPipelineByPropertyName)]
        [Alias('PipeName')]
        [string]$Pipe
    )
    process {
        $connection = $null
        try {
            $connection = Connect-RetroflectEngine -Pipe $Pipe
        }
        catch {
            if ($_.Exception.Data['RetroflectCode'] -eq 'E_ENGINE_NOT_RUNNING') {
                Write-Verbose $_.Exception.Message
                return
            }
            $PSCmdlet.ThrowTerminatingError($_)
        }
        try {
            $status = Invoke-RetroflectMethod -Connection $connection -Method 'status'
            $target = 'retroflect engine (pid {0}) on {1}' -f $status.pid, $connection.Pipe.Display
            if (-not $PSCmdlet.ShouldProcess($target, 'Stop')) { return }
            if ($status.runsAs -eq 'service') {
                # The installed service: stopped through the SCM, so Get-Service and its recovery see a clean stop.
                Disconnect-RetroflectEngine -Connection $connection
                $connection = $null
                Stop-RetroflectService -TimeoutSeconds $TimeoutSeconds
            }
            else { $null = Invoke-RetroflectMethod -Connection $connection -Method 'stop' }
        }
        catch {
            $PSCmdlet.ThrowTerminatingError($_)
        }
        finally {
            Disconnect-RetroflectEngine -Connection $connection
        }

        # The reply comes before the engine undoes its host changes; wait until the process is gone.
        $deadline = [DateTime]::UtcNow.AddSeconds($TimeoutSeconds)
        while ($null -ne (Get-Process -Id ([int]$status.pid) -ErrorAction SilentlyContinue)) {
            if ([DateTime]::UtcNow -gt $deadline) {
                $PSCmdlet.ThrowTerminatingError((New-RetroflectErrorRecord -Code 'E_TIMEOUT' -TargetObject $status.pid `
                    -Message "The retroflect engine (pid $($status.pid)) was asked to stop but is still running after $TimeoutSeconds s." `
                    -Hint "Wait and check with Get-Retroflect; as a last resort Stop-Process -Id $($status.pid) (then run Start-Retroflect and Stop-Retroflect once more to clean up its host changes)."))
            }
            Start-Sleep -Milliseconds 100
        }
        if ($PassThru) {
            $status.state = 'stopped'
            ConvertTo-RetroflectStatus -Status $status -Pipe $Pipe
        }
    }
}
