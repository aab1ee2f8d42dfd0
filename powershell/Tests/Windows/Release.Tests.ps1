# The Windows release archive as an admin (or Intune) uses it: retroflect-<v>-win-x64.zip, made by
# scripts/package.mjs with the WinDivert TEST DOUBLE as its WinDivert.dll, unpacked with Expand-Archive, then
# Install.ps1, Detect.ps1 and Uninstall.ps1 run for real in this elevated Wine session: files land in the Wine
# prefix's Program Files and ProgramData, and the engine runs as the service Retroflect in Wine's service manager.
# Wine's sc.exe has no failureflag, so Install-Retroflect warns there that recovery applies only to crashes.
# test/wine/powershell.test.ts sets RETROFLECT_TEST_RELEASE_ZIP (the archive) and RETROFLECT_TEST_RELEASE_VERSION.
# The scripts end with `exit`; run with & they return here with $LASTEXITCODE set, as a -File run hands it back.

BeforeAll {
    $env:PSModulePath = (Join-Path $PSScriptRoot 'StandIns') + [IO.Path]::PathSeparator + $env:PSModulePath
    Remove-Module ScheduledTasks, NetSecurity, Retroflect -ErrorAction SilentlyContinue
    Remove-Item Env:WINDIVERT_DOUBLE_INJECT_FILE, Env:WINDIVERT_DOUBLE_SENT_FILE -ErrorAction SilentlyContinue
    $script:Version = $env:RETROFLECT_TEST_RELEASE_VERSION
    $script:Unpacked = Join-Path $env:RETROFLECT_TEST_DIR 'release-unpacked'
    Remove-Item -LiteralPath $script:Unpacked -Recurse -Force -ErrorAction SilentlyContinue
    Expand-Archive -LiteralPath $env:RETROFLECT_TEST_RELEASE_ZIP -DestinationPath $script:Unpacked
    $script:Release = $script:Unpacked   # the archive has its files at its top level
    $script:AppDir = Join-Path $env:ProgramFiles 'Retroflect'
    $script:ModuleRoot = Join-Path $env:ProgramFiles 'WindowsPowerShell\Modules\Retroflect'
    $script:DataDir = Join-Path $env:ProgramData 'Retroflect'
    foreach ($dir in @($script:AppDir, $script:ModuleRoot, $script:DataDir)) { Remove-Item -LiteralPath $dir -Recurse -Force -ErrorAction SilentlyContinue }

    function Invoke-ReleaseScript([string]$Name, [hashtable]$Parameters = @{}) {
        $global:LASTEXITCODE = $null
        $out = & (Join-Path $script:Release $Name) @Parameters
        [pscustomobject]@{ Code = $LASTEXITCODE; Output = @($out | ForEach-Object { "$_" }) }
    }
}

AfterAll {
    if (Get-Command Stop-Retroflect -ErrorAction SilentlyContinue) { Stop-Retroflect -Confirm:$false -ErrorAction SilentlyContinue }
    Remove-Module ScheduledTasks, NetSecurity -ErrorAction SilentlyContinue
}

Describe 'The Windows release archive: Install.ps1, Detect.ps1, Uninstall.ps1' {
    It 'Detect.ps1 finds nothing before the install: exit 1, no stdout' {
        $r = Invoke-ReleaseScript 'Detect.ps1'
        $r.Code | Should -Be 1
        $r.Output | Should -BeNullOrEmpty
    }
    It 'Install.ps1 installs to Program Files, registers and starts the service, and exits 0' {
        # 'a,b' as one string: what powershell.exe -File (Intune's install command) hands over for -Address a,b.
        $r = Invoke-ReleaseScript 'Install.ps1' @{ Address = '203.0.113.77,203.0.113.78' }
        $r.Code | Should -Be 0
        $r.Output | Should -Match "^retroflect $([regex]::Escape($script:Version)) installed and running \(pid \d+\)"
        $exe = Join-Path $script:AppDir "$($script:Version)\retroflect.exe"
        foreach ($f in 'retroflect.exe', 'WinDivert.dll', 'WinDivert64.sys', 'WinDivert-LICENSE.txt', 'LICENSE', 'Uninstall.ps1', 'Deployment.ps1') {
            Test-Path -LiteralPath (Join-Path $script:AppDir "$($script:Version)\$f") -PathType Leaf | Should -BeTrue -Because $f
        }
        $moduleDir = Join-Path $script:ModuleRoot ($script:Version -replace '[-+].*$', '')
        Test-Path -LiteralPath (Join-Path $moduleDir 'Retroflect.psd1') | Should -BeTrue
        Get-Content -LiteralPath (Join-Path $moduleDir 'InstalledEngine.txt') -Raw | Should -Be $exe
        $service = Get-Service -Name Retroflect
        $service.Status | Should -Be 'Running'
        $service.StartType | Should -Be 'Automatic'
        $command = '"{0}" run --service --config {1}' -f $exe, (Join-Path $script:DataDir 'config.json')
        (Get-ItemProperty -LiteralPath 'HKLM:\SYSTEM\CurrentControlSet\Services\Retroflect').ImagePath | Should -Be $command
        $status = Get-Retroflect
        $status.RunsAs | Should -Be 'Service'
        $status.Version | Should -Be $script:Version
        $status.Backend | Should -Be 'windivert'
        $status.ConfigPath | Should -Be (Join-Path $script:DataDir 'config.json')
        @($status.ReflectAddresses | ForEach-Object { $_.ToString() }) | Should -Be @('203.0.113.77', '203.0.113.78')
        $script:EnginePid = $status.ProcessId
        $logs = Join-Path $script:DataDir 'logs'
        @(Get-ChildItem -LiteralPath $logs -Filter 'retroflect-install-*.log').Count | Should -Be 1
    }
    It 'Detect.ps1 then exits 0 with one line naming the version and the engine''s pid' {
        $r = Invoke-ReleaseScript 'Detect.ps1'
        $r.Code | Should -Be 0
        $r.Output.Count | Should -Be 1
        $r.Output[0] | Should -Be "retroflect $($script:Version) installed and running (pid $($script:EnginePid))"
    }
    It 'Install.ps1 again repairs a damaged installation: exits 0, keeps the config and runs the same version anew' {
        $config = Get-Content -LiteralPath (Join-Path $script:DataDir 'config.json') -Raw
        $moduleDir = Join-Path $script:ModuleRoot ($script:Version -replace '[-+].*$', '')
        Add-Content -LiteralPath (Join-Path $moduleDir 'Retroflect.psm1') -Value '# damaged'
        $r = Invoke-ReleaseScript 'Install.ps1'
        $r.Code | Should -Be 0
        Get-Content -LiteralPath (Join-Path $script:DataDir 'config.json') -Raw | Should -Be $config
        $shipped = Join-Path $script:Release "Retroflect\$($script:Version -replace '[-+].*$', '')\Retroflect.psm1"
        $repaired = (Get-FileHash -LiteralPath (Join-Path $moduleDir 'Retroflect.psm1')).Hash
        $repaired | Should -Be (Get-FileHash -LiteralPath $shipped).Hash
        $status = Get-Retroflect
        $status.Version | Should -Be $script:Version
        $status.ProcessId | Should -Not -Be $script:EnginePid
        $script:EnginePid = $status.ProcessId
        @(Get-ChildItem -LiteralPath $script:AppDir -Name) | Should -Be @($script:Version)
    }
    It 'Uninstall.ps1 stops the engine, removes service, engine, module and data; keeps config and deploy logs' {
        $r = Invoke-ReleaseScript 'Uninstall.ps1'
        $r.Code | Should -Be 0
        $r.Output | Should -Be 'retroflect removed.'
        Get-Module Retroflect | Should -BeNullOrEmpty -Because 'its files are gone'
        Import-Module (Join-Path $PSScriptRoot '..\..\Retroflect\Retroflect.psd1') -Force   # the source tree's, to ask the pipe
        Get-Retroflect -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        Get-Process -Id $script:EnginePid -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        Get-Service -Name Retroflect -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        Test-Path -LiteralPath $script:AppDir | Should -BeFalse
        Test-Path -LiteralPath $script:ModuleRoot | Should -BeFalse
        @(Get-ChildItem -LiteralPath $script:DataDir -Force -Name | Sort-Object) | Should -Be @('config.json', 'logs')
        @(Get-ChildItem -LiteralPath (Join-Path $script:DataDir 'logs') -Name | Sort-Object) |
            Should -Be @(('retroflect-install-{0}.log' -f (Get-Date -Format 'yyyyMMdd')),
                ('retroflect-uninstall-{0}.log' -f (Get-Date -Format 'yyyyMMdd')))
        (Invoke-ReleaseScript 'Detect.ps1').Code | Should -Be 1
    }
    It 'Uninstall.ps1 a second time changes nothing and exits 0' {
        $r = Invoke-ReleaseScript 'Uninstall.ps1'
        $r.Code | Should -Be 0
        @(Get-ChildItem -LiteralPath $script:DataDir -Force -Name | Sort-Object) | Should -Be @('config.json', 'logs')
    }
}
