BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $script:Pipe = New-TestPath 'start.sock'
    $script:LogDir = '/var/lib/retroflect/logs'
    $script:LogName = [System.IO.Path]::GetFileNameWithoutExtension($script:Pipe)
    # A link planted where the log goes: an elevated Start-Retroflect must not write through it.
    $script:Victim = New-TestPath 'victim.txt'
    Set-Content -LiteralPath $script:Victim -Value 'untouched'
    $null = New-Item -ItemType Directory -Path $script:LogDir -Force
    $script:Planted = Join-Path $script:LogDir ($script:LogName + '.out.log')
    $null = New-Item -ItemType SymbolicLink -Path $script:Planted -Target $script:Victim -Force
    $script:Status = Start-Retroflect -Path $script:Exe -NoConfig -Pipe $script:Pipe -Address '203.0.113.10' -ShieldPort '9090/tcp' -TimeoutSeconds 60 -Confirm:$false -PassThru
}
AfterAll {
    Stop-TestEngine $script:Pipe
    Remove-Item -LiteralPath $script:Planted -Force -ErrorAction SilentlyContinue
}

Describe 'Start-Retroflect' {
    It '-PassThru returns a typed running status with the start-up entries' {
        $script:Status.PSTypeNames | Should -Contain 'Retroflect.Status'
        $script:Status.State | Should -Be 'running'
        $script:Status.ReflectAddresses.IPAddressToString | Should -Contain '203.0.113.10'
        ($script:Status.ShieldPorts | ForEach-Object { '{0}/{1}' -f $_.Port, $_.Protocol }) | Should -Contain '9090/tcp'
        ($script:Status.ShieldPorts | Where-Object Port -eq 9090).Persisted | Should -BeFalse
    }
    It 'runs the engine detached: its own session, standard handles on /dev/null and the log files' {
        $enginePid = $script:Status.ProcessId
        $engineSid = (Get-Content -LiteralPath "/proc/$enginePid/stat" -Raw).Split(')')[1].Trim().Split(' ')[3]
        $mySid = (Get-Content -LiteralPath "/proc/$PID/stat" -Raw).Split(')')[1].Trim().Split(' ')[3]
        $engineSid | Should -Be $enginePid   # a session leader
        $engineSid | Should -Not -Be $mySid
        (Get-Item "/proc/$enginePid/fd/0").LinkTarget | Should -Be '/dev/null'
        (Get-Item "/proc/$enginePid/fd/1").LinkTarget | Should -Be (Join-Path $script:LogDir ($script:LogName + '.out.log'))
        (Get-Item "/proc/$enginePid/fd/2").LinkTarget | Should -Be (Join-Path $script:LogDir ($script:LogName + '.err.log'))
    }
    It 'writes its logs in the admin-only data folder and never through a link' {
        Get-Content -LiteralPath $script:Victim -Raw | Should -Match '^untouched'
        (Get-Item -LiteralPath $script:Planted -Force).LinkType | Should -BeNullOrEmpty
        (& stat -c '%a %U' $script:LogDir) | Should -Be '700 root'
    }
    It 'is idempotent: a second start returns the same engine and adds its entries for this run' {
        Start-Retroflect -Path $script:Exe -Pipe $script:Pipe -Address 203.0.113.11 -Confirm:$false | Should -BeNullOrEmpty
        $again = Start-Retroflect -Pipe $script:Pipe -Confirm:$false -PassThru
        $again.ProcessId | Should -Be $script:Status.ProcessId
        $again.ReflectAddresses.IPAddressToString | Should -Contain '203.0.113.11'
    }
    It 'warns that -ConfigPath/-NoConfig cannot apply to an engine that already runs' {
        Start-Retroflect -Pipe $script:Pipe -ConfigPath (New-TestPath 'other.json') -Confirm:$false -WarningVariable warn -WarningAction SilentlyContinue
        $warn | Should -Not -BeNullOrEmpty
        "$warn" | Should -Match '-ConfigPath'
        Start-Retroflect -Pipe $script:Pipe -NoConfig -Confirm:$false -WarningVariable warn2 -WarningAction SilentlyContinue
        "$warn2" | Should -Match '-NoConfig'
    }
    It '-WhatIf shows the command even when the executable does not exist, and starts nothing' {
        $pipe = New-TestPath 'whatif.sock'
        { Start-Retroflect -Path (New-TestPath 'nope') -Pipe $pipe -WhatIf } | Should -Not -Throw
        Get-Retroflect -Pipe $pipe -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
    }
    It 'a missing executable is Retroflect.ExecutableNotFound' {
        { Start-Retroflect -Path (New-TestPath 'nope') -Pipe (New-TestPath 'x.sock') -Confirm:$false } |
            Should -Throw -ErrorId 'Retroflect.ExecutableNotFound*'
    }
    It 'a bad shield port is refused before anything starts, by the same parser as Add-ShieldPort' {
        { Start-Retroflect -Path $script:Exe -NoConfig -Pipe (New-TestPath 'p.sock') -ShieldPort '8080/sctp' -Confirm:$false } |
            Should -Throw -ErrorId 'Retroflect.InvalidPort*'
    }
    It 'an engine that fails at start-up is reported with the code the engine gave (a second engine on the host)' {
        { Start-Retroflect -Path $script:Exe -NoConfig -Pipe (New-TestPath 'second.sock') -TimeoutSeconds 60 -Confirm:$false } |
            Should -Throw -ErrorId 'Retroflect.AlreadyRunning*'
        $err = $null
        try { Start-Retroflect -Path $script:Exe -NoConfig -Pipe (New-TestPath 'second2.sock') -TimeoutSeconds 60 -Confirm:$false } catch { $err = $_ }
        $engineCode = [regex]::Match($err.Exception.Message, '\[(E_[A-Z_]+)\]').Groups[1].Value
        $err.Exception.Data['RetroflectCode'] | Should -Be $engineCode
    }
    It 'a caller that reads its output through pipes is not held by the engine (Intune, CI)' {
        Stop-TestEngine $script:Pipe   # one engine per host on Linux
        $pipe = New-TestPath 'detached.sock'
        $r = Invoke-TestScript -TimeoutSeconds 90 -Text (@'
$ErrorActionPreference = 'Stop'
Import-Module $env:RETROFLECT_TEST_MODULE
Start-Retroflect -Path '{0}' -NoConfig -Pipe '{1}' -Confirm:$false
'started'
'@ -f $script:Exe, $pipe)
        try {
            $r.TimedOut | Should -BeFalse
            $r.ExitCode | Should -Be 0 -Because $r.Output
            $r.Output | Should -Match 'started'
            (Get-Retroflect -Pipe $pipe).State | Should -Be 'running'   # and it outlived the script
        }
        finally { Stop-Retroflect -Pipe $pipe -Confirm:$false }
    }
}
