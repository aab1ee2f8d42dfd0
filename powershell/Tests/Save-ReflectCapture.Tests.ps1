# Pester 5 tests of Save-ReflectCapture against a real engine (environment: see Invoke-RetroflectTests.ps1); tshark,
# when installed, reads the file back.

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot '..\Retroflect\Retroflect.psd1') -Force
    $script:Dir = $env:RETROFLECT_TEST_DIR
    $script:Pipe = Join-Path $script:Dir 'save.sock'
    $script:Reflect = '203.0.113.21'
    Start-Retroflect -Path $env:RETROFLECT_TEST_ENGINE_EXE -NoConfig -Pipe $script:Pipe -Address $script:Reflect -TimeoutSeconds 60 -Confirm:$false | Out-Null
    function Start-TestTraffic {
        Start-Job -ArgumentList $script:Reflect -ScriptBlock {
            param($Address)
            for ($i = 0; $i -lt 150; $i++) { & curl -s -m 1 "http://${Address}:9/" | Out-Null; Start-Sleep -Milliseconds 200 }
        }
    }
}

AfterAll {
    Stop-Retroflect -Pipe $script:Pipe -Confirm:$false
}

Describe 'Save-ReflectCapture' {
    It 'writes a pcapng file of the traffic and returns its FileInfo' {
        $path = Join-Path $script:Dir 'save.pcapng'
        $job = Start-TestTraffic
        try {
            $file = Save-ReflectCapture -Path $path -Pipe $script:Pipe -Address $script:Reflect -Count 4 -Duration '00:01:00' -Confirm:$false
        }
        finally {
            $job | Stop-Job -PassThru | Remove-Job
        }
        $file | Should -BeOfType [System.IO.FileInfo]
        $file.FullName | Should -Be $path
        $bytes = [System.IO.File]::ReadAllBytes($path)
        [System.BitConverter]::ToUInt32($bytes, 0) | Should -Be 0x0A0D0D0A   # Section Header Block
        $tshark = Get-Command tshark -ErrorAction SilentlyContinue
        if ($tshark) {
            $rows = @(& $tshark.Source -r $path -T fields -e ip.src -e tcp.port -e frame.comment 2>$null)
            $rows.Count | Should -Be 4
            $rows | ForEach-Object { $_ | Should -Match '^203\.0\.113\.21\t.*\bverdict=reflected original=' }
        }
    }
    It '-WhatIf writes nothing' {
        $path = Join-Path $script:Dir 'whatif.pcapng'
        $r = Save-ReflectCapture -Path $path -Pipe $script:Pipe -Duration '00:00:01' -WhatIf
        $r | Should -BeNullOrEmpty
        Test-Path -LiteralPath $path | Should -BeFalse
    }
    It '-Duration ends it; an empty capture is still a valid file' {
        $path = Join-Path $script:Dir 'empty.pcapng'
        $file = Save-ReflectCapture -Path $path -Pipe $script:Pipe -Port 1 -Duration '00:00:01' -Confirm:$false
        $file.Length | Should -BeGreaterThan 0
        [System.BitConverter]::ToUInt32([System.IO.File]::ReadAllBytes($path), 0) | Should -Be 0x0A0D0D0A
    }
    It 'a bad filter fails before any file is written' {
        $path = Join-Path $script:Dir 'bad.pcapng'
        { Save-ReflectCapture -Path $path -Pipe $script:Pipe -Verdict malformed -Address '192.0.2.999' -Duration '00:00:01' -Confirm:$false } |
            Should -Throw -ErrorId 'Retroflect.InvalidAddress*'
        Test-Path -LiteralPath $path | Should -BeFalse
    }
}
