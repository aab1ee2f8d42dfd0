# Retroflect module: loads the private helpers, then one file per public function. The manifest's
# FunctionsToExport is the list of what is public; test/powershell/module.test.ts checks it matches Public/.

foreach ($folder in @('Private', 'Public')) {
    $dir = Join-Path $PSScriptRoot $folder
    foreach ($file in (Get-ChildItem -LiteralPath $dir -Filter '*.ps1' | Sort-Object Name)) {
        . $file.FullName
    }
}

Export-ModuleMember -Function (Get-ChildItem -LiteralPath (Join-Path $PSScriptRoot 'Public') -Filter '*.ps1').BaseName
