# Client of the engine's control pipe (docs/protocol.md): one JSON object per line, UTF-8, hello first.
# Uses System.IO.Pipes.NamedPipeClientStream on every platform; on Linux .NET treats a rooted pipe name as the
# path of a Unix domain socket, which is what the engine listens on.

# Protocol version this module speaks (docs/protocol.md, "Handshake").
$script:ProtocolVersion = 1
# Sent as hello.client; shown in the engine's log.
$script:ClientName = 'Retroflect-PS/0.1.0'
# How long to wait for the pipe to accept a connection. Short: a missing engine should be reported quickly.
$script:DefaultConnectTimeoutMs = 2000
# How long to wait for one reply. Changes touch routes and firewall rules, which can take a moment.
$script:DefaultReplyTimeoutMs = 15000
# UTF-8 without a byte order mark: the engine refuses a BOM at the start of a line.
$script:Utf8NoBom = New-Object System.Text.UTF8Encoding($false)

function Resolve-RetroflectPipe {
    <#
    Maps the -Pipe value of a cmdlet to what NamedPipeClientStream needs. Windows: a pipe name ('retroflect');
    Linux: the absolute socket path ('/run/retroflect/retroflect.sock'). Empty means $env:RETROFLECT_PIPE, then
    the default, exactly as the CLI does.
    #>
    param([string]$Pipe)
    if ([string]::IsNullOrWhiteSpace($Pipe)) { $Pipe = $env:RETROFLECT_PIPE }
    if ([string]::IsNullOrWhiteSpace($Pipe)) { $Pipe = $script:DefaultPipeName }
    $Pipe = $Pipe.Trim()

    if (Test-RetroflectWindows) {
        $name = $Pipe
        if ($name.StartsWith('\\.\pipe\', [System.StringComparison]::OrdinalIgnoreCase)) { $name = $name.Substring(9) }
        if ($name -notmatch $script:PipeNamePattern) {
            Stop-RetroflectSession (New-RetroflectErrorRecord -Code 'E_INVALID_PARAMS' -TargetObject $Pipe `
                -Message "'$Pipe' is not a pipe name." `
                -Hint 'On Windows give a pipe name of letters, digits, ., _ or - (1 to 64 characters), such as retroflect.')
        }
        return [pscustomobject]@{ Name = $name; ClientPipeName = $name; Display = ('\\.\pipe\' + $name); SocketPath = $null }
    }

    if ($Pipe.StartsWith('/')) {
        $leaf = [System.IO.Path]::GetFileNameWithoutExtension($Pipe)
        return [pscustomobject]@{ Name = $leaf; ClientPipeName = $Pipe; Display = $Pipe; SocketPath = $Pipe }
    }
    if ($Pipe -notmatch $script:PipeNamePattern) {
        Stop-RetroflectSession (New-RetroflectErrorRecord -Code 'E_INVALID_PARAMS' -TargetObject $Pipe `
            -Message "'$Pipe' is neither a pipe name nor an absolute socket path." `
            -Hint 'Give a name of letters, digits, ., _ or - (such as retroflect), or a socket path starting with /.')
    }
    $path = $script:LinuxSocketDir + '/' + $Pipe + '.sock'
    return [pscustomobject]@{ Name = $Pipe; ClientPipeName = $path; Display = $path; SocketPath = $path }
}

# Windows' answer when no pipe of a name exists (WaitNamedPipe, CreateFile): ERROR_FILE_NOT_FOUND.
$script:Win32FileNotFound = 2
# The pipe probe type (Get-RetroflectPipeProbe), made once per session; $false when it could not be made.
$script:PipeProbe = $null

function Get-RetroflectPipeProbe {
    <#
    Windows: a type whose static Probe(path) calls WaitNamedPipeW(path, 1 ms) and returns 0 when an instance of the
    pipe is free, else the Win32 error (ERROR_FILE_NOT_FOUND: no such pipe; ERROR_SEM_TIMEOUT: all instances busy).
    WaitNamedPipe only asks the pipe file system: it takes no instance of an engine's pipe, as connecting or
    File.Exists would. The error is read inside Probe, right after the call, so nothing PowerShell runs in between
    can overwrite it. Made with Reflection.Emit (milliseconds; Add-Type would compile C# for about 2 s), once per
    session. $false when it cannot be made (then the connect with its timeout decides).
    #>
    if ($null -ne $script:PipeProbe) { return $script:PipeProbe }
    $script:PipeProbe = $false
    try {
        $name = New-Object System.Reflection.AssemblyName('Retroflect.PipeProbe')
        $assembly = [System.Reflection.Emit.AssemblyBuilder]::DefineDynamicAssembly($name,
            [System.Reflection.Emit.AssemblyBuilderAccess]::Run)
        $type = $assembly.DefineDynamicModule('Retroflect.PipeProbe').DefineType('Retroflect.PipeProbe',
            [System.Reflection.TypeAttributes]'Public, Abstract, Sealed')
        $wait = $type.DefineMethod('WaitNamedPipeW',
            [System.Reflection.MethodAttributes]'Public, Static, PinvokeImpl, HideBySig', [bool], [type[]]@([string], [int]))
        $wait.SetImplementationFlags([System.Reflection.MethodImplAttributes]::PreserveSig)
        $dllImport = [System.Runtime.InteropServices.DllImportAttribute]
        $wait.SetCustomAttribute((New-Object System.Reflection.Emit.CustomAttributeBuilder(
                    $dllImport.GetConstructor([type[]]@([string])), [object[]]@('kernel32.dll'),
                    [System.Reflection.FieldInfo[]]@($dllImport.GetField('SetLastError'),
                        $dllImport.GetField('CharSet')),
                    [object[]]@($true, [System.Runtime.InteropServices.CharSet]::Unicode))))
        $probe = $type.DefineMethod('Probe', [System.Reflection.MethodAttributes]'Public, Static, HideBySig', [int],
            [type[]]@([string]))
        $il = $probe.GetILGenerator()
        $free = $il.DefineLabel()
        $il.Emit([System.Reflection.Emit.OpCodes]::Ldarg_0)
        $il.Emit([System.Reflection.Emit.OpCodes]::Ldc_I4_1)
        $il.Emit([System.Reflection.Emit.OpCodes]::Call, $wait)
        $il.Emit([System.Reflection.Emit.OpCodes]::Brtrue_S, $free)
        $lastError = [System.Runtime.InteropServices.Marshal].GetMethod('GetLastWin32Error')
        $il.Emit([System.Reflection.Emit.OpCodes]::Call, $lastError)
        $il.Emit([System.Reflection.Emit.OpCodes]::Ret)
        $il.MarkLabel($free)
        $il.Emit([System.Reflection.Emit.OpCodes]::Ldc_I4_0)
        $il.Emit([System.Reflection.Emit.OpCodes]::Ret)
        $script:PipeProbe = $type.CreateType()
    }
    catch {
        Write-Verbose ("The pipe probe could not be made ($($_.Exception.Message)); the connect decides " +
            'whether an engine runs.')
    }
    return $script:PipeProbe
}

function Test-RetroflectPipeMissing {
    <#
    Is it certain that nothing listens on $Resolved (a Resolve-RetroflectPipe result)? Linux: no socket file.
    Windows: WaitNamedPipe says no pipe of that name exists (Get-RetroflectPipeProbe); a free or busy pipe, or no
    probe, proves nothing, and the connect with its timeout decides. Without this, "no engine" took the whole
    connect timeout on Windows: Detect scripts and every tab completion waited 2 s. (Listing \\.\pipe\ was the
    check before; Wine cannot list that folder, so there it never answered.)
    #>
    param($Resolved)
    if ($null -ne $Resolved.SocketPath) { return (-not [System.IO.File]::Exists($Resolved.SocketPath)) }
    $probe = Get-RetroflectPipeProbe
    if ($probe -eq $false) { return $false }
    return ($probe::Probe($Resolved.Display) -eq $script:Win32FileNotFound)
}

function Connect-RetroflectEngine {
    <#
    Opens a connection and completes the hello handshake. Returns a connection object for
    Invoke-RetroflectMethod; close it with Disconnect-RetroflectEngine. Throws an ErrorRecord
    (Retroflect.EngineNotRunning, Retroflect.AccessDenied, Retroflect.Timeout, ...) on failure.
    #>
    param(
        [string]$Pipe,
        [int]$ConnectTimeoutMs = $script:DefaultConnectTimeoutMs,
        [int]$ReplyTimeoutMs = $script:DefaultReplyTimeoutMs
    )
    $resolved = Resolve-RetroflectPipe -Pipe $Pipe
    $notRunningHint = 'Start it with Start-Retroflect (or install it with Install-Retroflect), or pass -Pipe to reach an engine on another pipe.'

    # Linux: the engine answers root only (it checks the peer's credentials), and its socket folder is root's, so
    # for anyone else the truthful answer is "run elevated", not a file-access error or "not running".
    if ($null -ne $resolved.SocketPath -and -not (Test-RetroflectElevated)) {
        Stop-RetroflectSession (New-RetroflectErrorRecord -Code 'E_ACCESS_DENIED' -TargetObject $resolved.Display `
            -Message "Only root may control the retroflect engine on $($resolved.Display)." `
            -Hint 'Run elevated: start PowerShell as root (sudo pwsh).')
    }
    # No socket file / no such pipe means no engine: say so at once instead of waiting for the connect timeout.
    if (Test-RetroflectPipeMissing $resolved) {
        Stop-RetroflectSession (New-RetroflectErrorRecord -Code 'E_ENGINE_NOT_RUNNING' -TargetObject $resolved.Display `
            -Message "No retroflect engine is running on $($resolved.Display)." -Hint $notRunningHint)
    }

    $stream = New-Object System.IO.Pipes.NamedPipeClientStream('.', $resolved.ClientPipeName,
        [System.IO.Pipes.PipeDirection]::InOut, [System.IO.Pipes.PipeOptions]::Asynchronous)
    # The outcome of the connect is read from its task instead of caught: PowerShell adds an exception caught here
    # to the calling cmdlet's -ErrorVariable, so on Windows (no socket file to check first) `Get-Retroflect
    # -ErrorVariable e` got a TimeoutException record before Retroflect.EngineNotRunning.
    $connect = $stream.ConnectAsync($ConnectTimeoutMs)
    $null = [System.Threading.Tasks.Task]::WhenAny([System.Threading.Tasks.Task[]]@($connect)).GetAwaiter().GetResult()
    if ($connect.Status -ne [System.Threading.Tasks.TaskStatus]::RanToCompletion) {
        $stream.Dispose()
        $inner = $null
        if ($null -ne $connect.Exception) { $inner = $connect.Exception.GetBaseException() }
        if ($inner -is [System.UnauthorizedAccessException]) {
            Stop-RetroflectSession (New-RetroflectErrorRecord -Code 'E_ACCESS_DENIED' -TargetObject $resolved.Display -InnerException $inner `
                -Message "Access to the retroflect pipe $($resolved.Display) was denied." `
                -Hint 'Run elevated: PowerShell as Administrator (Windows) or as root (Linux).')
        }
        Stop-RetroflectSession (New-RetroflectErrorRecord -Code 'E_ENGINE_NOT_RUNNING' -TargetObject $resolved.Display -InnerException $inner `
            -Message "No retroflect engine answered on $($resolved.Display) within $ConnectTimeoutMs ms." -Hint $notRunningHint)
    }

    # leaveOpen: the stream is disposed once, by Disconnect-RetroflectEngine.
    $reader = New-Object System.IO.StreamReader($stream, $script:Utf8NoBom, $false, 4096, $true)
    $connection = [pscustomobject]@{
        PSTypeName     = 'Retroflect.Connection'
        Pipe           = $resolved
        Stream         = $stream
        Reader         = $reader
        NextId         = 1
        ReplyTimeoutMs = $ReplyTimeoutMs
        Hello          = $null
    }

    $helloParams = @{ protocol = $script:ProtocolVersion; client = $script:ClientName }
    if (Test-RetroflectWindows) {
        # Windows engines require the token from the ACL-protected file (docs/protocol.md, "Access").
        $tokenPath = Get-RetroflectTokenPath -PipeName $resolved.Name
        try {
            $helloParams.token = ([System.IO.File]::ReadAllText($tokenPath)).Trim()
        }
        catch [System.UnauthorizedAccessException] {
            Disconnect-RetroflectEngine -Connection $connection
            Stop-RetroflectSession (New-RetroflectErrorRecord -Code 'E_ACCESS_DENIED' -TargetObject $tokenPath -InnerException $_.Exception `
                -Message "Cannot read the engine's access token $tokenPath." -Hint 'Run PowerShell as Administrator.')
        }
        catch {
            Disconnect-RetroflectEngine -Connection $connection
            Stop-RetroflectSession (New-RetroflectErrorRecord -Code 'E_ACCESS_DENIED' -TargetObject $tokenPath -InnerException $_.Exception `
                -Message "The engine's access token $tokenPath could not be read: $($_.Exception.Message)" `
                -Hint 'Run PowerShell as Administrator; if the engine was just stopped, start it again.')
        }
    }
    # A failed hello leaves through Stop-RetroflectSession (a break, not caught here): close the pipe in finally.
    $helloDone = $false
    try {
        $connection.Hello = Invoke-RetroflectMethod -Connection $connection -Method 'hello' -Params $helloParams
        $helloDone = $true
    }
    finally {
        if (-not $helloDone) { Disconnect-RetroflectEngine -Connection $connection }
    }
    return $connection
}

function Disconnect-RetroflectEngine {
    param([object]$Connection)
    if ($null -eq $Connection) { return }
    try { $Connection.Reader.Dispose() } catch { Write-Verbose "Closing the reader failed: $($_.Exception.Message)" }
    try { $Connection.Stream.Dispose() } catch { Write-Verbose "Closing the pipe failed: $($_.Exception.Message)" }
}

function Invoke-RetroflectMethod {
    <#
    Sends one request and returns its `result`. A failure reply ends the session (Stop-RetroflectSession) with the matching ErrorRecord, with
    -TargetObject as its target. Notifications (messages without id) that arrive first are skipped.
    #>
    param(
        [object]$Connection,
        [string]$Method,
        [System.Collections.IDictionary]$Params,
        [object]$TargetObject
    )
    $id = $Connection.NextId
    $Connection.NextId = $id + 1
    $request = [ordered]@{ id = $id; method = $Method }
    if ($null -ne $Params) { $request.params = $Params }
    # -Depth: shield port objects sit 3 levels down; 10 leaves room. -Compress: the frame is one line.
    $line = ConvertTo-Json -InputObject $request -Depth 10 -Compress
    $bytes = $script:Utf8NoBom.GetBytes($line + "`n")
    $display = $Connection.Pipe.Display
    try {
        $Connection.Stream.Write($bytes, 0, $bytes.Length)
        $Connection.Stream.Flush()
    }
    catch {
        Stop-RetroflectSession (New-RetroflectErrorRecord -Code 'E_ENGINE_NOT_RUNNING' -TargetObject $display -InnerException $_.Exception `
            -Message "The retroflect engine on $display closed the connection: $($_.Exception.Message)" `
            -Hint 'Check that the engine is still running with Get-Retroflect.')
    }

    while ($true) {
        $task = $Connection.Reader.ReadLineAsync()
        $completed = $false
        try {
            $completed = $task.Wait($Connection.ReplyTimeoutMs)
        }
        catch {
            Stop-RetroflectSession (New-RetroflectErrorRecord -Code 'E_ENGINE_NOT_RUNNING' -TargetObject $display -InnerException $_.Exception `
                -Message "Reading from the retroflect engine on $display failed: $($_.Exception.Message)" `
                -Hint 'Check that the engine is still running with Get-Retroflect.')
        }
        if (-not $completed) {
            Stop-RetroflectSession (New-RetroflectErrorRecord -Code 'E_TIMEOUT' -TargetObject $display `
                -Message "The retroflect engine on $display did not answer '$Method' within $($Connection.ReplyTimeoutMs) ms." `
                -Hint 'The engine may be busy or hung; check it with Get-Retroflect, or restart it with Stop-Retroflect and Start-Retroflect.')
        }
        $text = $task.Result
        if ($null -eq $text) {
            Stop-RetroflectSession (New-RetroflectErrorRecord -Code 'E_ENGINE_NOT_RUNNING' -TargetObject $display `
                -Message "The retroflect engine on $display closed the connection before answering '$Method'." `
                -Hint 'If you are not root/Administrator, run as root/Administrator; otherwise check the engine with Get-Retroflect.')
        }
        if ([string]::IsNullOrWhiteSpace($text)) { continue }
        try {
            $reply = ConvertFrom-Json -InputObject $text
        }
        catch {
            Stop-RetroflectSession (New-RetroflectErrorRecord -Code 'PS_PROTOCOL_ERROR' -TargetObject $display -InnerException $_.Exception `
                -Message "The process on $display sent a line that is not JSON; it is not a retroflect engine of this version." `
                -Hint 'Check -Pipe: it must name a retroflect engine.')
        }
        if ($null -eq $reply.PSObject.Properties['id']) {
            # A notification. A capture connection keeps those that come before its reply (the pcapng header).
            if ($null -ne $Connection.PSObject.Properties['Notifications']) { $Connection.Notifications.Add($reply) }
            continue
        }
        if ($null -ne $reply.PSObject.Properties['error']) {
            if ($null -ne $reply.id -and [string]$reply.id -ne [string]$id) { continue }
            Stop-RetroflectSession (ConvertFrom-RetroflectWireError -WireError $reply.error -TargetObject $TargetObject)
        }
        if ([string]$reply.id -ne [string]$id) {
            Stop-RetroflectSession (New-RetroflectErrorRecord -Code 'PS_PROTOCOL_ERROR' -TargetObject $display `
                -Message "The engine on $display answered request $($reply.id) while request $id was expected." `
                -Hint 'This is a bug in the engine or the module; report it with the engine version (Get-Retroflect).')
        }
        return $reply.result
    }
}

function Invoke-RetroflectRequest {
    # One connection, hello, one method, close. For cmdlets that send a single request.
    param(
        [string]$Pipe,
        [string]$Method,
        [System.Collections.IDictionary]$Params,
        [object]$TargetObject,
        [int]$ConnectTimeoutMs = $script:DefaultConnectTimeoutMs
    )
    $connection = Connect-RetroflectEngine -Pipe $Pipe -ConnectTimeoutMs $ConnectTimeoutMs
    try {
        return (Invoke-RetroflectMethod -Connection $connection -Method $Method -Params $Params -TargetObject $TargetObject)
    }
    finally {
        Disconnect-RetroflectEngine -Connection $connection
    }
}
