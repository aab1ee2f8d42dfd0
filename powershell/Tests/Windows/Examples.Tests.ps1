# The Intune examples (powershell/examples) as Intune runs them on Windows: the detection script, the remediation
# (deployment) script when detection fails, detection again. Everything is real: the copy to C:\Program Files, the
# module imported from there, the service Retroflect in Wine's service manager and the engine it runs, the pipe, the
# config file.

BeforeAll {
    $env:PSModulePath = (Join-Path $PSScriptRoot 'StandIns') + [IO.Path]::PathSeparator + $env:PSModulePath
    Remove-Module ScheduledTasks, NetSecurity, Retroflect -ErrorAction SilentlyContinue
    Remove-Item Env:WINDIVERT_DOUBLE_INJECT_FILE, Env:WINDIVERT_DOUBLE_SENT_FILE -ErrorAction SilentlyContinue
    $script:Examples = Join-Path $PSScriptRoot '..\..\examples'
    # What an Intune package holds next to the scripts: the module folder, retroflect.exe and WinDivert (here the
    # TEST DOUBLE as WinDivert.dll and a placeholder WinDivert64.sys).
    $script:Package = Join-Path $env:RETROFLECT_TEST_DIR 'intune-package'
    $null = New-Item -ItemType Directory -Path $script:Package -Force
    Copy-Item -Path (Join-Path $PSScriptRoot '..\..\Retroflect') -Destination $script:Package -Recurse -Force
    Copy-Item -LiteralPath $env:RETROFLECT_TEST_ENGINE_EXE -Destination $script:Package -Force
    Copy-Item -Path (Join-Path $env:RETROFLECT_TEST_WINDIVERT_DIR '*') -Destination $script:Package -Force
    # Detection has its expected values written in (Intune passes no parameters); an admin edits them, and so does
    # this test: 192.0.2.1 may be on this host's own subnet, so the tests use 203.0.113.77.
    $detect = Get-Content -LiteralPath (Join-Path $script:Examples 'Detect-Retroflect.ps1') -Raw
    $edited = $detect.Replace("`$ExpectedAddresses = @('192.0.2.1')", "`$ExpectedAddresses = @('203.0.113.77')")
    if ($edited -eq $detect) { throw 'Detect-Retroflect.ps1 no longer has the line $ExpectedAddresses = @(''192.0.2.1''): update this test' }
    $script:Detect = Join-Path $script:Package 'Detect-Retroflect.ps1'
    [System.IO.File]::WriteAllText($script:Detect, $edited)
    $script:Installed = Join-Path $env:ProgramFiles 'Retroflect'
    # A machine without retroflect (an earlier, interrupted run may have left some).
    Remove-Item -LiteralPath $script:Installed -Recurse -Force -ErrorAction SilentlyContinue
    Remove-Item -LiteralPath 'C:\ProgramData\Retroflect\config.json' -Force -ErrorAction SilentlyContinue

    function Invoke-Example {
        # Runs an example script in this session as Intune would run it in its own: returns its exit code and
        # what it wrote to STDOUT and STDERR (the scripts write STDERR with [Console]::Error).
        param([string]$Name, [hashtable]$Parameters = @{})
        $stderr = New-Object System.IO.StringWriter
        $previous = [Console]::Error
        [Console]::SetError($stderr)
        try {
            $global:LASTEXITCODE = $null
            $path = Join-Path $script:Examples $Name
            if ($Name -eq 'Detect-Retroflect.ps1') { $path = $script:Detect }
            $stdout = & $path @Parameters 6>$null
            $code = $global:LASTEXITCODE
        }
        finally {
            [Console]::SetError($previous)
        }
        [pscustomobject]@{ ExitCode = $code; StdOut = (@($stdout) -join "`n"); StdErr = $stderr.ToString() }
    }
}

AfterAll {
    if (Get-Command Uninstall-Retroflect -ErrorAction SilentlyContinue) { Uninstall-Retroflect -RemoveConfig -Confirm:$false -ErrorAction SilentlyContinue }
    Remove-Module ScheduledTasks, NetSecurity, Retroflect -ErrorAction SilentlyContinue   # the copy imported from Program Files
    Remove-Item -LiteralPath $script:Installed -Recurse -Force -ErrorAction SilentlyContinue
}

Describe 'Intune: Detect-Retroflect.ps1, Deploy-Retroflect.ps1' {
    It 'detection fails on a machine without retroflect: exit 1, nothing on STDOUT, the reason on STDERR' {
        $r = Invoke-Example 'Detect-Retroflect.ps1'
        $r.ExitCode | Should -Be 1
        $r.StdOut | Should -BeNullOrEmpty
        $r.StdErr | Should -Match 'not compliant: the Retroflect module is not installed'
    }
    It 'remediation installs to C:\Program Files\Retroflect, registers the service, starts the engine and exits 0' {
        $r = Invoke-Example 'Deploy-Retroflect.ps1' @{ Source = $script:Package; Address = @('203.0.113.77'); ShieldPort = @('8080/tcp') }
        $r.StdErr | Should -BeNullOrEmpty
        $r.ExitCode | Should -Be 0
        Test-Path -LiteralPath 'C:\Program Files\Retroflect\Retroflect\retroflect.exe' | Should -BeTrue
        (Get-Service -Name Retroflect).Status | Should -Be 'Running'
        (Get-ItemProperty -LiteralPath 'HKLM:\SYSTEM\CurrentControlSet\Services\Retroflect').ImagePath | Should -Match '^"C:\\Program Files\\Retroflect\\Retroflect\\retroflect\.exe" run --service '
        $status = Get-Retroflect
        $status.RunsAs | Should -Be 'Service'
        @($status.ReflectAddresses | ForEach-Object { $_.ToString() }) | Should -Be @('203.0.113.77')
        @($status.ShieldPorts | ForEach-Object { '{0}/{1}' -f $_.Port, $_.Protocol }) | Should -Be @('8080/tcp')
    }
    It 'detection then passes: exit 0 and one line on STDOUT' {
        $r = Invoke-Example 'Detect-Retroflect.ps1'
        $r.StdErr | Should -BeNullOrEmpty
        $r.ExitCode | Should -Be 0
        $r.StdOut | Should -Match '^retroflect \S+ running \(pid \d+\): 203\.0\.113\.77; shield 8080/tcp$'
    }
    It 'remediation again on a compliant machine changes nothing and exits 0' {
        $pidBefore = (Get-Retroflect).ProcessId
        $r = Invoke-Example 'Deploy-Retroflect.ps1' @{ Source = $script:Package; Address = @('203.0.113.77'); ShieldPort = @('8080/tcp') }
        $r.StdErr | Should -BeNullOrEmpty
        $r.ExitCode | Should -Be 0
        (Get-Retroflect).ProcessId | Should -Be $pidBefore
    }
    It 'remediation with a changed binary stops the engine, replaces the file and starts the engine again' {
        $pidBefore = (Get-Retroflect).ProcessId
        $dll = Join-Path $script:Package 'WinDivert.dll'
        [System.IO.File]::AppendAllText($dll, 'changed')   # bytes after the PE image: still loads, another hash
        $r = Invoke-Example 'Deploy-Retroflect.ps1' @{ Source = $script:Package; Address = @('203.0.113.77'); ShieldPort = @('8080/tcp') }
        $r.StdErr | Should -BeNullOrEmpty
        $r.ExitCode | Should -Be 0
        (Get-FileHash -LiteralPath 'C:\Program Files\Retroflect\Retroflect\WinDivert.dll').Hash | Should -Be (Get-FileHash -LiteralPath $dll).Hash
        Get-Process -Id $pidBefore -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        (Get-Retroflect).ProcessId | Should -Not -Be $pidBefore
        (Get-Service -Name Retroflect).Status | Should -Be 'Running'
    }
    It 'detection fails when the engine is stopped, naming why' {
        Stop-Retroflect -Confirm:$false
        $r = Invoke-Example 'Detect-Retroflect.ps1'
        $r.ExitCode | Should -Be 1
        $r.StdOut | Should -BeNullOrEmpty
        $r.StdErr | Should -Match 'not compliant: the engine is not running'
    }
}
