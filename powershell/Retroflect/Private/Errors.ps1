# Errors as PowerShell ErrorRecords. Every record has a FullyQualifiedErrorId 'Retroflect.<Name>' (documented in
# about_Retroflect), a category scripts can filter on, the engine's hint as RecommendedAction, and the protocol
# code in Exception.Data['RetroflectCode'].

# Protocol error code (src/errors.ts, docs/protocol.md) -> error id suffix, ErrorCategory and exception type.
# Codes the module raises itself (no engine involved) are at the end.
$script:ErrorMap = @{
    'E_NOT_ADMIN'           = @{ Id = 'NotAdmin';           Category = 'PermissionDenied';    Exception = 'System.UnauthorizedAccessException' }
    'E_ACCESS_DENIED'       = @{ Id = 'AccessDenied';       Category = 'PermissionDenied';    Exception = 'System.UnauthorizedAccessException' }
    'E_INVALID_ADDRESS'     = @{ Id = 'InvalidAddress';     Category = 'InvalidArgument';     Exception = 'System.ArgumentException' }
    'E_INVALID_PORT'        = @{ Id = 'InvalidPort';        Category = 'InvalidArgument';     Exception = 'System.ArgumentException' }
    'E_ADDRESS_NOT_FOUND'   = @{ Id = 'AddressNotFound';    Category = 'ObjectNotFound';      Exception = 'System.Management.Automation.ItemNotFoundException' }
    'E_PORT_NOT_FOUND'      = @{ Id = 'PortNotFound';       Category = 'ObjectNotFound';      Exception = 'System.Management.Automation.ItemNotFoundException' }
    'E_PORT_MAP_CONFLICT'   = @{ Id = 'PortMapConflict';    Category = 'ResourceExists';      Exception = 'System.InvalidOperationException' }
    'E_LIMIT_REACHED'       = @{ Id = 'LimitReached';       Category = 'LimitsExceeded';      Exception = 'System.InvalidOperationException' }
    'E_MANAGED_BY_POLICY'   = @{ Id = 'ManagedByPolicy';    Category = 'PermissionDenied';    Exception = 'System.InvalidOperationException' }
    'E_BACKEND_UNAVAILABLE' = @{ Id = 'BackendUnavailable'; Category = 'ResourceUnavailable'; Exception = 'System.InvalidOperationException' }
    'E_BACKEND_FAILED'      = @{ Id = 'BackendFailed';      Category = 'OperationStopped';    Exception = 'System.InvalidOperationException' }
    'E_CONFIG_INVALID'      = @{ Id = 'ConfigInvalid';      Category = 'InvalidData';         Exception = 'System.IO.InvalidDataException' }
    'E_CONFIG_WRITE_FAILED' = @{ Id = 'ConfigWriteFailed';  Category = 'WriteError';          Exception = 'System.IO.IOException' }
    'E_ENGINE_NOT_RUNNING'  = @{ Id = 'EngineNotRunning';   Category = 'ResourceUnavailable'; Exception = 'System.InvalidOperationException' }
    'E_ALREADY_RUNNING'     = @{ Id = 'AlreadyRunning';     Category = 'ResourceExists';      Exception = 'System.InvalidOperationException' }
    'E_BAD_REQUEST'         = @{ Id = 'BadRequest';         Category = 'ProtocolError';       Exception = 'System.InvalidOperationException' }
    'E_UNKNOWN_METHOD'      = @{ Id = 'UnknownMethod';      Category = 'NotImplemented';      Exception = 'System.NotSupportedException' }
    'E_INVALID_PARAMS'      = @{ Id = 'InvalidParams';      Category = 'InvalidArgument';     Exception = 'System.ArgumentException' }
    'E_UNSUPPORTED_VERSION' = @{ Id = 'UnsupportedVersion'; Category = 'ProtocolError';       Exception = 'System.NotSupportedException' }
    'E_TIMEOUT'             = @{ Id = 'Timeout';            Category = 'OperationTimeout';    Exception = 'System.TimeoutException' }
    'E_ENGINE_BUSY'         = @{ Id = 'EngineBusy';         Category = 'ResourceBusy';        Exception = 'System.InvalidOperationException' }
    'E_USAGE'               = @{ Id = 'Usage';              Category = 'InvalidArgument';     Exception = 'System.ArgumentException' }
    'E_OUTPUT_FAILED'       = @{ Id = 'OutputFailed'; Category = 'WriteError'; Exception = 'System.IO.IOException' }
    'E_OUTPUT_REFUSED' = @{ Id = 'OutputRefused'; Category = 'InvalidArgument'; Exception = 'System.ArgumentException' }
    'E_INTERNAL'            = @{ Id = 'Internal';           Category = 'NotSpecified';        Exception = 'System.InvalidOperationException' }
    # Module-only (before or around the engine):
    'PS_EXECUTABLE_NOT_FOUND' = @{ Id = 'ExecutableNotFound';  Category = 'ObjectNotFound';      Exception = 'System.IO.FileNotFoundException' }
    'PS_WINDIVERT_NOT_FOUND'  = @{ Id = 'WinDivertNotFound';   Category = 'NotInstalled';        Exception = 'System.IO.FileNotFoundException' }
    'PS_ENGINE_EXITED'        = @{ Id = 'EngineExited';        Category = 'InvalidResult';       Exception = 'System.InvalidOperationException' }
    'PS_INSTALL_FAILED'       = @{ Id = 'InstallFailed';       Category = 'InvalidOperation';    Exception = 'System.InvalidOperationException' }
    'PS_PROTOCOL_ERROR'       = @{ Id = 'ProtocolError';       Category = 'ProtocolError';       Exception = 'System.IO.InvalidDataException' }
    'PS_CONFIRMATION_REQUIRED' = @{ Id = 'ConfirmationRequired'; Category = 'OperationStopped';   Exception = 'System.Management.Automation.PSInvalidOperationException' }
}

# Exit codes of `retroflect run` (src/errors.ts ExitCode) -> protocol code, so a failed start says why.
$script:ExitCodeToErrorCode = @{
    2 = 'E_INVALID_PARAMS'
    3 = 'E_NOT_ADMIN'
    4 = 'E_INVALID_ADDRESS'
    5 = 'E_BACKEND_UNAVAILABLE'
    6 = 'E_CONFIG_INVALID'
    8 = 'E_ALREADY_RUNNING'
}

function New-RetroflectErrorRecord {
    <#
    Builds the ErrorRecord for a protocol error code (or a module-only code). Unknown codes become
    Retroflect.Internal so a newer engine's code never breaks the module.
    #>
    [CmdletBinding()]
    [OutputType([System.Management.Automation.ErrorRecord])]
    param(
        [Parameter(Mandatory)][string]$Code,
        [Parameter(Mandatory)][string]$Message,
        [string]$Hint,
        [object]$Details,
        [object]$TargetObject,
        [System.Exception]$InnerException
    )
    $entry = $script:ErrorMap[$Code]
    if ($null -eq $entry) { $entry = $script:ErrorMap['E_INTERNAL'] }
    if ($null -ne $InnerException) {
        $exception = New-Object -TypeName $entry.Exception -ArgumentList @($Message, $InnerException)
    }
    else {
        $exception = New-Object -TypeName $entry.Exception -ArgumentList @($Message)
    }
    $exception.Data['RetroflectCode'] = $Code
    if ($null -ne $Details) { $exception.Data['RetroflectDetails'] = $Details }
    $category = [System.Management.Automation.ErrorCategory]$entry.Category
    $record = New-Object System.Management.Automation.ErrorRecord($exception, ('Retroflect.' + $entry.Id), $category, $TargetObject)
    $record.ErrorDetails = New-Object System.Management.Automation.ErrorDetails($Message)
    if ($Hint) { $record.ErrorDetails.RecommendedAction = $Hint }
    return $record
}

function ConvertFrom-RetroflectWireError {
    # The `error` object of a failure reply -> ErrorRecord.
    [CmdletBinding()]
    [OutputType([System.Management.Automation.ErrorRecord])]
    param(
        [Parameter(Mandatory)][object]$WireError,
        [object]$TargetObject
    )
    $hint = $null
    if ($WireError.PSObject.Properties['hint']) { $hint = [string]$WireError.hint }
    $details = $null
    if ($WireError.PSObject.Properties['details']) { $details = $WireError.details }
    # The engine names the one address it refused (details.address): that is the target, not the whole request
    # (CategoryInfo would read 'System.Object[]', and $_.TargetObject would not say which).
    if ($null -ne $details -and $null -ne $details.PSObject.Properties['address'] -and $details.address -is [string]) {
        $TargetObject = $details.address
    }
    return (New-RetroflectErrorRecord -Code ([string]$WireError.code) -Message ([string]$WireError.message) -Hint $hint -Details $details -TargetObject $TargetObject)
}
