# TEST STAND-IN for Windows' ScheduledTasks module, which Wine's pwsh lacks (it is CIM-based, and Wine has no CIM).
# The Windows Pester tests put this folder first on PSModulePath, so the Retroflect module autoloads it exactly where
# Windows would autoload the real one. It models only what the module uses, in memory (per session):
#   Register-ScheduledTask stores the task; Get-ScheduledTask returns it (Principal.UserId 'SYSTEM' for S-1-5-18, as
#   Windows reports it) or a not-found error; Start-ScheduledTask really starts the task's action (Start-Process)
#   so the registered command line is proven to run the engine; Stop-ScheduledTask terminates that process, as Task
#   Scheduler does; Unregister-ScheduledTask forgets the task.
# Every call is also recorded; Get-ScheduledTaskStandInCall returns the record for the tests.

$script:Tasks = @{}
$script:Calls = New-Object 'System.Collections.Generic.List[object]'
$script:Started = 0

function Add-StandInCall([string]$Name, [hashtable]$Bound) {
    $script:Calls.Add([pscustomobject]@{ Command = $Name; Parameters = $Bound })
}

function Get-StandInTaskState($Task) {
    if ($null -ne $Task.Process -and -not $Task.Process.HasExited) { return 'Running' }
    return 'Ready'
}

function Get-ScheduledTaskStandInCall {
    [CmdletBinding()]
    param([string]$Command)
    $script:Calls | Where-Object { -not $Command -or $_.Command -eq $Command }
}

function New-ScheduledTaskAction {
    [CmdletBinding()]
    param([Parameter(Mandatory)][string]$Execute, [string]$Argument, [string]$WorkingDirectory, [string]$Id)
    Add-StandInCall 'New-ScheduledTaskAction' $PSBoundParameters
    [pscustomobject]@{ PSTypeName = 'StandIn.ScheduledTaskAction'; Execute = $Execute; Arguments = $Argument; WorkingDirectory = $WorkingDirectory }
}

function New-ScheduledTaskTrigger {
    [CmdletBinding()]
    param([switch]$AtStartup, [switch]$AtLogOn, [switch]$Once, [datetime]$At)
    Add-StandInCall 'New-ScheduledTaskTrigger' $PSBoundParameters
    [pscustomobject]@{ PSTypeName = 'StandIn.ScheduledTaskTrigger'; AtStartup = [bool]$AtStartup; AtLogOn = [bool]$AtLogOn }
}

function New-ScheduledTaskPrincipal {
    [CmdletBinding()]
    param([string]$UserId, [string]$LogonType, [string]$RunLevel, [string]$GroupId)
    Add-StandInCall 'New-ScheduledTaskPrincipal' $PSBoundParameters
    [pscustomobject]@{ PSTypeName = 'StandIn.ScheduledTaskPrincipal'; UserId = $UserId; LogonType = $LogonType; RunLevel = $RunLevel }
}

function New-ScheduledTaskSettingsSet {
    [CmdletBinding()]
    param([timespan]$ExecutionTimeLimit, [int]$RestartCount, [timespan]$RestartInterval, [switch]$AllowStartIfOnBatteries,
        [switch]$DontStopIfGoingOnBatteries, [switch]$StartWhenAvailable, [switch]$Hidden)
    Add-StandInCall 'New-ScheduledTaskSettingsSet' $PSBoundParameters
    [pscustomobject]@{ PSTypeName = 'StandIn.ScheduledTaskSettings'; ExecutionTimeLimit = $ExecutionTimeLimit; RestartCount = $RestartCount
        RestartInterval = $RestartInterval; StartWhenAvailable = [bool]$StartWhenAvailable }
}

function Register-ScheduledTask {
    [CmdletBinding(SupportsShouldProcess)]
    param([Parameter(Mandatory)][string]$TaskName, [string]$TaskPath = '\', [object[]]$Action, [object[]]$Trigger, [object]$Principal,
        [object]$Settings, [string]$Description, [switch]$Force)
    Add-StandInCall 'Register-ScheduledTask' $PSBoundParameters
    $key = $TaskPath + $TaskName
    if ($script:Tasks.ContainsKey($key) -and -not $Force) { throw "Cannot create a file when that file already exists: $key" }
    $userId = $Principal.UserId
    if ($userId -eq 'S-1-5-18') { $userId = 'SYSTEM' }   # Windows shows LocalSystem by name
    $script:Tasks[$key] = [pscustomobject]@{
        TaskPath = $TaskPath; TaskName = $TaskName; Actions = @($Action); Triggers = @($Trigger); Settings = $Settings; Description = $Description
        Principal = [pscustomobject]@{ UserId = $userId; LogonType = $Principal.LogonType; RunLevel = $Principal.RunLevel }
        Process = $null
    }
    Get-ScheduledTask -TaskPath $TaskPath -TaskName $TaskName
}

function Get-ScheduledTask {
    [CmdletBinding()]
    param([string]$TaskName, [string]$TaskPath = '\')
    $key = $TaskPath + $TaskName
    $task = $script:Tasks[$key]
    if ($null -eq $task) {
        Write-Error -Message "No MSFT_ScheduledTask objects found with property 'TaskName' equal to '$TaskName'." -Category ObjectNotFound -TargetObject $TaskName
        return
    }
    [pscustomobject]@{
        PSTypeName = 'StandIn.ScheduledTask'; TaskPath = $task.TaskPath; TaskName = $task.TaskName; State = (Get-StandInTaskState $task)
        Actions = $task.Actions; Triggers = $task.Triggers; Principal = $task.Principal; Settings = $task.Settings; Description = $task.Description
    }
}

function Start-ScheduledTask {
    [CmdletBinding()]
    param([Parameter(Mandatory)][string]$TaskName, [string]$TaskPath = '\')
    Add-StandInCall 'Start-ScheduledTask' $PSBoundParameters
    $task = $script:Tasks[$TaskPath + $TaskName]
    if ($null -eq $task) { throw "The system cannot find the file specified: $TaskPath$TaskName" }
    if ((Get-StandInTaskState $task) -eq 'Running') { return }
    $action = @($task.Actions)[0]
    # Output to files (a task has no console; they help when a test fails). Redirecting also keeps Start-Process
    # on CreateProcess: its ShellExecute path did not start the engine under Wine.
    $script:Started++
    $log = Join-Path $env:RETROFLECT_TEST_DIR ('task-{0}-{1}' -f $TaskName, $script:Started)
    $start = @{ FilePath = $action.Execute; PassThru = $true; RedirectStandardOutput = "$log.out.log"; RedirectStandardError = "$log.err.log" }
    if ($action.Arguments) { $start.ArgumentList = $action.Arguments }
    if ($action.WorkingDirectory) { $start.WorkingDirectory = $action.WorkingDirectory }
    $task.Process = Start-Process @start
}

function Stop-ScheduledTask {
    [CmdletBinding()]
    param([Parameter(Mandatory)][string]$TaskName, [string]$TaskPath = '\')
    Add-StandInCall 'Stop-ScheduledTask' $PSBoundParameters
    $task = $script:Tasks[$TaskPath + $TaskName]
    if ($null -ne $task -and (Get-StandInTaskState $task) -eq 'Running') { $task.Process.Kill() }
}

function Unregister-ScheduledTask {
    [CmdletBinding(SupportsShouldProcess, ConfirmImpact = 'High')]
    param([Parameter(Mandatory)][string]$TaskName, [string]$TaskPath = '\')
    Add-StandInCall 'Unregister-ScheduledTask' $PSBoundParameters
    $key = $TaskPath + $TaskName
    if (-not $script:Tasks.ContainsKey($key)) { throw "No MSFT_ScheduledTask objects found with property 'TaskName' equal to '$TaskName'." }
    if ($PSCmdlet.ShouldProcess($key, 'Unregister')) { $script:Tasks.Remove($key) }
}

Export-ModuleMember -Function @('New-ScheduledTaskAction', 'New-ScheduledTaskTrigger', 'New-ScheduledTaskPrincipal', 'New-ScheduledTaskSettingsSet',
    'Register-ScheduledTask', 'Get-ScheduledTask', 'Start-ScheduledTask', 'Stop-ScheduledTask', 'Unregister-ScheduledTask', 'Get-ScheduledTaskStandInCall')
