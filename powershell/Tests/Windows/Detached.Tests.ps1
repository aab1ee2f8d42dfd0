# Start-Retroflect leaves the caller's handles alone (issue: a script that reads another script's output to its end
# hung until the engine stopped). Here for real under Wine: an outer process reads a child pwsh's stdout through a
# pipe until the end, and the child runs Start-Retroflect; the end must come when the child exits, while the engine
# it started keeps running.

BeforeAll {
    Remove-Module Retroflect -ErrorAction SilentlyContinue
    Import-Module (Join-Path $PSScriptRoot '..\..\Retroflect\Retroflect.psd1') -Force
    Remove-Item Env:WINDIVERT_DOUBLE_INJECT_FILE, Env:WINDIVERT_DOUBLE_SENT_FILE -ErrorAction SilentlyContinue
    $script:Pipe = 'rft-detached'
    $script:Inner = Join-Path $env:RETROFLECT_TEST_DIR 'inner-start.ps1'
    $manifest = Join-Path $PSScriptRoot '..\..\Retroflect\Retroflect.psd1'
    Set-Content -LiteralPath $script:Inner -Value @"
Import-Module '$manifest'
Start-Retroflect -Path '$($env:RETROFLECT_TEST_ENGINE_EXE)' -WinDivertPath '$($env:RETROFLECT_TEST_WINDIVERT_DIR)' ``
    -NoConfig -Address 203.0.113.77 -Pipe $($script:Pipe) -Confirm:`$false
'inner done'
"@
}

AfterAll {
    Stop-Retroflect -Pipe $script:Pipe -Confirm:$false -ErrorAction SilentlyContinue
}

Describe 'Start-Retroflect and the caller''s handles (Windows)' {
    It 'an outer reader of the inner script''s stdout gets its end when the inner script exits, not the engine' {
        $info = New-Object System.Diagnostics.ProcessStartInfo
        $info.FileName = Join-Path $PSHOME 'pwsh.exe'
        foreach ($a in @('-NoProfile', '-NonInteractive', '-File', $script:Inner)) { $info.ArgumentList.Add($a) }
        $info.UseShellExecute = $false
        $info.RedirectStandardOutput = $true
        $child = [System.Diagnostics.Process]::Start($info)
        $read = $child.StandardOutput.ReadToEndAsync()
        $ended = $read.Wait([TimeSpan]::FromSeconds(150))
        $status = Get-Retroflect -Pipe $script:Pipe -ErrorAction SilentlyContinue
        $ended | Should -BeTrue -Because 'the engine must not hold the pipe the outer script reads'
        $read.Result | Should -Match 'inner done'
        $status.State | Should -Be 'running'
        Get-Process -Id $status.ProcessId | Should -Not -BeNullOrEmpty
    }
}
