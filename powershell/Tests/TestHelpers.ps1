# Shared by the Pester files (dot-source it in BeforeAll). The environment comes from test/powershell/module.test.ts,
# which runs Invoke-RetroflectTests.ps1 inside a network namespace it creates:
#   RETROFLECT_TEST_ENGINE_EXE  the engine executable (dist/retroflect); its folder is put on PATH, as a release is
#   RETROFLECT_TEST_DIR         a private (0700) scratch folder for sockets, configs and install roots
#   RETROFLECT_TEST_PWSH        this pwsh, for the tests that run scripts the way users run them (pwsh -File)
# Addresses come from the documentation ranges; the namespace has a default route, so they validate. One engine
# at a time (they would share the engine's device): each file starts its own and stops it in AfterAll.

$script:ModuleManifest = Join-Path $PSScriptRoot '..\Retroflect\Retroflect.psd1'
Import-Module $script:ModuleManifest -Force
$script:Exe = $env:RETROFLECT_TEST_ENGINE_EXE
$script:Dir = $env:RETROFLECT_TEST_DIR
$script:Pwsh = $env:RETROFLECT_TEST_PWSH
if (-not $script:Pwsh) { $script:Pwsh = (Get-Process -Id $PID).Path }
$exeDir = Split-Path -Parent $script:Exe
if (($env:PATH -split [System.IO.Path]::PathSeparator) -notcontains $exeDir) {
    $env:PATH = $exeDir + [System.IO.Path]::PathSeparator + $env:PATH
}

function New-TestPath {
    # A fresh path in the scratch folder: New-TestPath 'x.sock' -> <dir>/<run prefix>-<random>-x.sock
    param([string]$Leaf)
    $prefix = ''
    if ($env:RETROFLECT_TEST_RUN) { $prefix = $env:RETROFLECT_TEST_RUN + '-' }
    return (Join-Path $script:Dir ($prefix + ([guid]::NewGuid().ToString('N').Substring(0, 8)) + '-' + $Leaf))
}

function Start-TestEngine {
    <#
    Starts an engine for one test file on its own socket and returns that socket path. -ConfigPath gives it a
    config file (changes are persisted); without it, -NoConfig.
    #>
    param([string[]]$Address, [string[]]$ShieldPort, [string]$ConfigPath)
    $pipe = New-TestPath 'engine.sock'
    # The default backend (Linux: ebpf where its program loads, else tun): both enforce every allow list.
    $params = @{ Path = $script:Exe; Pipe = $pipe; TimeoutSeconds = 60; Confirm = $false }
    if ($ConfigPath) { $params.ConfigPath = $ConfigPath } else { $params.NoConfig = $true }
    if ($Address) { $params.Address = $Address }
    if ($ShieldPort) { $params.ShieldPort = $ShieldPort }
    Start-Retroflect @params
    return $pipe
}

function Stop-TestEngine {
    param([string]$Pipe)
    if ($Pipe) { Stop-Retroflect -Pipe $Pipe -Confirm:$false }
}

function Invoke-WithTestTraffic {
    <#
    Runs -ScriptBlock (a capture: Watch-ReflectTraffic, Save-ReflectCapture) while traffic goes through a reflect
    address, and returns its output: a background job runs curl to a closed port (9) of -Address every 200 ms for
    about 30 s, each try a SYN and the RST answering it, both reflected. The job is stopped afterwards, also when
    the script block fails.
    #>
    param([Parameter(Mandatory)][string]$Address, [Parameter(Mandatory)][scriptblock]$ScriptBlock)
    $job = Start-Job -ArgumentList $Address -ScriptBlock {
        param($Address)
        for ($i = 0; $i -lt 150; $i++) { & curl -s -m 1 "http://${Address}:9/" | Out-Null; Start-Sleep -Milliseconds 200 }
    }
    try {
        & $ScriptBlock
    }
    finally {
        $job | Stop-Job -PassThru | Remove-Job
    }
}

function Invoke-TestScript {
    <#
    Runs a script file as a scheduled task or Intune would: pwsh -NoProfile -NonInteractive -File, output captured
    through pipes (a child that kept them open would make this wait until the time-out). Returns
    {ExitCode, Output, TimedOut}.
    #>
    param([Parameter(Mandatory)][string]$Text, [int]$TimeoutSeconds = 120)
    $file = New-TestPath 'script.ps1'
    Set-Content -LiteralPath $file -Value $Text -Encoding utf8
    $info = New-Object System.Diagnostics.ProcessStartInfo
    $info.FileName = $script:Pwsh
    foreach ($a in @('-NoProfile', '-NonInteractive', '-File', $file)) { $info.ArgumentList.Add($a) }
    $info.RedirectStandardOutput = $true
    $info.RedirectStandardError = $true
    $info.RedirectStandardInput = $true
    $info.UseShellExecute = $false
    $info.Environment['RETROFLECT_TEST_MODULE'] = (Resolve-Path $script:ModuleManifest).ProviderPath
    $p = [System.Diagnostics.Process]::Start($info)
    $p.StandardInput.Close()
    $out = $p.StandardOutput.ReadToEndAsync()
    $err = $p.StandardError.ReadToEndAsync()
    $done = $out.Wait($TimeoutSeconds * 1000) -and $err.Wait(5000) -and $p.WaitForExit(5000)
    if (-not $done) { try { $p.Kill($true) } catch { } }
    $output = ''
    if ($out.IsCompleted) { $output += $out.Result }
    if ($err.IsCompleted) { $output += $err.Result }
    $exitCode = -1
    if ($p.HasExited) { $exitCode = $p.ExitCode }
    return [pscustomobject]@{ ExitCode = $exitCode; Output = $output; TimedOut = (-not $done) }
}

function Add-WindowsCmdletStub {
    <#
    The ScheduledTasks and NetSecurity cmdlets (and New-Service) exist only on Windows (and not under Wine). Pester can mock only
    commands that exist, so where they are missing this defines stand-ins with the parameters the module uses;
    they fail if a test forgets to mock them. These are the only mocks of the suite besides the platform checks.
    #>
    $stubs = @{
        'Get-ScheduledTask'            = 'param([string]$TaskPath, [string]$TaskName)'
        'Register-ScheduledTask'       = 'param([string]$TaskPath, [string]$TaskName, $Action, $Trigger, $Principal, $Settings, [string]$Description, [switch]$Force)'
        'Start-ScheduledTask'          = 'param([string]$TaskPath, [string]$TaskName)'
        'Stop-ScheduledTask'           = 'param([string]$TaskPath, [string]$TaskName)'
        'Unregister-ScheduledTask'     = 'param([string]$TaskPath, [string]$TaskName)'
        'New-ScheduledTaskAction'      = 'param([string]$Execute, [string]$Argument, [string]$WorkingDirectory)'
        'New-ScheduledTaskTrigger'     = 'param([switch]$AtStartup)'
        'New-ScheduledTaskPrincipal'   = 'param([string]$UserId, [string]$LogonType, [string]$RunLevel)'
        'New-ScheduledTaskSettingsSet' = 'param($ExecutionTimeLimit, [int]$RestartCount, $RestartInterval, [switch]$AllowStartIfOnBatteries, [switch]$DontStopIfGoingOnBatteries, [switch]$StartWhenAvailable)'
        'Get-NetFirewallRule'          = 'param([string[]]$Name)'
        'New-NetFirewallRule'          = 'param([string]$Name, [string]$DisplayName, [string]$Group, [string]$Description, [string]$Direction, [string]$Action, [string]$Profile, [string[]]$RemoteAddress)'
        'Set-NetFirewallRule'          = 'param([string[]]$Name, [string[]]$RemoteAddress)'
        'Remove-NetFirewallRule'       = 'param([string[]]$Name)'
        'Get-NetFirewallAddressFilter' = 'param($AssociatedNetFirewallRule)'
        # Windows-only in PowerShell 7 (Microsoft.PowerShell.Management on Windows): the service's registration.
        'New-Service'                  = 'param([string]$Name, [string]$BinaryPathName, [string]$DisplayName, [string]$Description, $StartupType, [string[]]$DependsOn)'
    }
    foreach ($name in $stubs.Keys) {
        if (Get-Command -Name $name -ErrorAction SilentlyContinue) { continue }
        $body = "[CmdletBinding(SupportsShouldProcess)] $($stubs[$name]) throw 'stand-in for $name; mock it'"
        $null = New-Item -Path "function:global:$name" -Value ([scriptblock]::Create($body)) -Force
    }
}
