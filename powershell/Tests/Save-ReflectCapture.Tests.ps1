# Pester 5 tests of Save-ReflectCapture against a real engine (environment: see TestHelpers.ps1); tshark,
# when installed, reads the file back.

BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $script:Reflect = '203.0.113.21'
    $script:Pipe = Start-TestEngine -Address $script:Reflect
}
AfterAll { Stop-TestEngine $script:Pipe }

Describe 'Save-ReflectCapture' {
    It 'writes a pcapng file of the traffic and returns its FileInfo' {
        $path = Join-Path $script:Dir 'save.pcapng'
        $file = Invoke-WithTestTraffic $script:Reflect { Save-ReflectCapture -Path $path -Pipe $script:Pipe -Address $script:Reflect -Count 4 -Duration '00:01:00' -Confirm:$false }
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
    It 'refuses an existing file without -Force, and replaces it with -Force' {
        $path = Join-Path $script:Dir 'existing.pcapng'
        Set-Content -LiteralPath $path -Value 'keep me' -NoNewline
        { Save-ReflectCapture -Path $path -Pipe $script:Pipe -Port 1 -Duration '00:00:01' -Confirm:$false } |
            Should -Throw -ErrorId 'Retroflect.OutputRefused*'
        Get-Content -LiteralPath $path -Raw | Should -Be 'keep me'
        $file = Save-ReflectCapture -Path $path -Pipe $script:Pipe -Port 1 -Duration '00:00:01' -Force -Confirm:$false
        $file.FullName | Should -Be $path
        [System.BitConverter]::ToUInt32([System.IO.File]::ReadAllBytes($path), 0) | Should -Be 0x0A0D0D0A
    }
    It 'refuses a symbolic link (even a dangling one), with or without -Force; the target is untouched' {
        $target = Join-Path $script:Dir 'link-target.txt'
        Set-Content -LiteralPath $target -Value 'secret' -NoNewline
        $link = Join-Path $script:Dir 'link.pcapng'
        $dangling = Join-Path $script:Dir 'dangling.pcapng'
        New-Item -ItemType SymbolicLink -Path $link -Target $target | Out-Null
        New-Item -ItemType SymbolicLink -Path $dangling -Target (Join-Path $script:Dir 'nothing-here') | Out-Null
        foreach ($force in @($false, $true)) {
            foreach ($p in @($link, $dangling)) {
                $err = $null
                $save = @{ Path = $p; Pipe = $script:Pipe; Port = 1; Duration = '00:00:01'; Force = $force }
                try { Save-ReflectCapture @save -Confirm:$false } catch { $err = $_ }
                $err.FullyQualifiedErrorId | Should -BeLike 'Retroflect.OutputRefused*'
                $err.Exception.Message | Should -Match 'symbolic link'
            }
        }
        Get-Content -LiteralPath $target -Raw | Should -Be 'secret'
        Test-Path -LiteralPath (Join-Path $script:Dir 'nothing-here') | Should -BeFalse
    }
    It 'refuses devices, FIFOs, folders and files with other names, with or without -Force' -Skip:(-not $IsLinux) {
        $fifo = Join-Path $script:Dir 'capture.fifo'
        & mkfifo $fifo
        $first = Join-Path $script:Dir 'one-name.pcapng'
        Set-Content -LiteralPath $first -Value 'shared' -NoNewline
        $second = Join-Path $script:Dir 'other-name.pcapng'
        & ln $first $second
        foreach ($force in @($false, $true)) {
            foreach ($p in @('/dev/null', $fifo, $script:Dir)) {
                $save = @{ Path = $p; Pipe = $script:Pipe; Port = 1; Duration = '00:00:01'; Force = $force }
                { Save-ReflectCapture @save -Confirm:$false } |
                    Should -Throw -ErrorId 'Retroflect.OutputRefused*'
            }
        }
        { Save-ReflectCapture -Path $second -Pipe $script:Pipe -Port 1 -Duration '00:00:01' -Force -Confirm:$false } |
            Should -Throw -ErrorId 'Retroflect.OutputRefused*'
        Get-Content -LiteralPath $first -Raw | Should -Be 'shared'
    }
    It 'completes -Address with the running engine''s reflect addresses, as Get-ReflectAddress does' {
        $line = "Save-ReflectCapture -Pipe '$($script:Pipe)' -Address 203.0.113."
        (TabExpansion2 -inputScript $line -cursorColumn $line.Length).CompletionMatches.CompletionText | Should -Contain $script:Reflect
    }
}
