# Help fits an 80-column console (issue 21): Get-Help -Full of every exported cmdlet and about_Retroflect, rendered
# at 80 columns as a console of that width shows them, has no longer line, and the formatter had to cut no word to
# get there. PowerShell keeps the line breaks of comment-based help and cuts a line too long for the console
# mid-word ("packet b" / "ackend"), so the words at 80 columns differ from those of a 400-column rendering exactly
# when some help line is too long. The SYNTAX section is left out of that comparison: PowerShell writes it from the
# parameters and cuts it the same way for its own cmdlets (Get-Help Get-ChildItem). No engine is needed.
BeforeDiscovery {
    Import-Module (Join-Path $PSScriptRoot '..\Retroflect\Retroflect.psd1') -Force
    $script:Topics = @(Get-Command -Module Retroflect | Sort-Object Name | ForEach-Object { @{ Topic = $_.Name } })
    $script:Topics += @{ Topic = 'about_Retroflect' }
}

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot '..\Retroflect\Retroflect.psd1') -Force
    function Get-RenderedHelp([string]$Topic, [int]$Width) {
        # Out-String -Width is the console width Get-Help is formatted for; the lines end at the formatter's breaks.
        @((Get-Help $Topic -Full | Out-String -Width $Width) -split '\r?\n' | ForEach-Object { $_.TrimEnd() })
    }
    function Get-Word([string[]]$Lines) {
        # The words outside SYNTAX (from its heading to the next heading, which starts in column 1). Separator lines
        # (---- EXAMPLE 1 ----) are drawn to a fixed width and are no words.
        $inSyntax = $false
        foreach ($line in $Lines) {
            if ($line -match '^\S') { $inSyntax = ($line -ceq 'SYNTAX') }
            if ($inSyntax -or $line -match '^\s*-{5,}') { continue }
            $line -split '\s+' | Where-Object { $_ }
        }
    }
}

Describe 'Get-Help <Topic> -Full at 80 columns' -ForEach $Topics {
    It 'has no line longer than 80 columns' {
        $long = @(Get-RenderedHelp $Topic 80 | Where-Object { $_.Length -gt 80 } |
                ForEach-Object { "[$($_.Length)] $_" })
        $long | Should -BeNullOrEmpty -Because "every line of the help of $Topic fits 80 columns"
    }

    It 'cuts no word to fit (the words equal those of a 400-column rendering)' {
        $narrow = Get-Word (Get-RenderedHelp $Topic 80)
        $wide = Get-Word (Get-RenderedHelp $Topic 400)
        $narrow.Count | Should -BeGreaterThan 20 -Because 'the help was rendered'
        $firstCut = $null
        for ($i = 0; $i -lt [Math]::Min($narrow.Count, $wide.Count); $i++) {
            if ($narrow[$i] -cne $wide[$i]) {
                $firstCut = "word $i is '$($narrow[$i])' at 80 columns, '$($wide[$i])' at 400"
                break
            }
        }
        $firstCut | Should -BeNullOrEmpty
        $narrow.Count | Should -Be $wide.Count
    }
}
