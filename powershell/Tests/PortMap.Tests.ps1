# Port maps across the address cmdlets: Add-ReflectAddress -PortMap, Get-ReflectAddress's typed PortMap,
# Remove-ReflectAddress -PortMap (docs/port-mapping.md).
BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $script:Config = New-TestPath 'portmap-config.json'
    $script:Pipe = Start-TestEngine -ConfigPath $script:Config
}
AfterAll { Stop-TestEngine $script:Pipe }

Describe 'Port maps' {
    It 'Add-ReflectAddress -PortMap takes a hashtable and a spec string; Get-ReflectAddress shows typed PortMap objects' {
        $a = Add-ReflectAddress '203.0.113.40' -PortMap @{80 = 8080}, '443=8443/tcp' -Pipe $script:Pipe -Confirm:$false -PassThru
        $a.Added | Should -BeTrue
        $a.PortMap.Count | Should -Be 3
        $got = Get-ReflectAddress '203.0.113.40' -Pipe $script:Pipe
        $got.PortMap.Count | Should -Be 3
        $got.PortMap[0].PSTypeNames | Should -Contain 'Retroflect.PortMap'
        $got.PortMap[0].Port | Should -BeOfType [int]
        ($got.PortMap | ForEach-Object { '{0}={1}/{2}' -f $_.Port, $_.Target, $_.Protocol }) | Should -Be @('80=8080/tcp', '80=8080/udp', '443=8443/tcp')
    }
    It 'refuses a conflicting map with Retroflect.PortMapConflict and changes nothing' {
        Add-ReflectAddress '203.0.113.40' -PortMap @{80 = 9090} -Pipe $script:Pipe -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable err
        $err[0].FullyQualifiedErrorId | Should -BeLike 'Retroflect.PortMapConflict*'
        (Get-ReflectAddress '203.0.113.40' -Pipe $script:Pipe).PortMap.Count | Should -Be 3
    }
    It 'Remove-ReflectAddress -PortMap removes only that map; the address stays' {
        $gone = Remove-ReflectAddress '203.0.113.40' -PortMap 80 -PassThru -Pipe $script:Pipe -Confirm:$false
        @($gone).Count | Should -Be 2
        $left = Get-ReflectAddress '203.0.113.40' -Pipe $script:Pipe
        ($left.PortMap | ForEach-Object { "$_" }) | Should -Be @('443=8443/tcp')
        Remove-ReflectAddress '203.0.113.40' -Pipe $script:Pipe -Confirm:$false
    }
    It 'Export-Csv writes PortMap as -PortMap takes it (80=8080;443=8443/tcp), the property stays typed, and Import-Csv rows add it back' {
        $a = Add-ReflectAddress '203.0.113.41' -PortMap @{80 = 8080}, '443=8443/tcp' -Temporary -Pipe $script:Pipe -Confirm:$false -PassThru
        $a.PortMap -is [array] | Should -BeTrue
        $a.PortMap[0].Port | Should -BeOfType [int]
        $csv = New-TestPath 'portmaps.csv'
        Get-ReflectAddress '203.0.113.41' -Pipe $script:Pipe | Export-Csv -LiteralPath $csv -NoTypeInformation
        $row = Import-Csv -LiteralPath $csv
        $row.PortMap | Should -Be '80=8080;443=8443/tcp'
        (Get-ReflectAddress '203.0.113.41' -Pipe $script:Pipe | ConvertTo-Csv -NoTypeInformation)[1] | Should -Match ([regex]::Escape('"80=8080;443=8443/tcp"'))
        # The round trip an admin writes to move addresses to another engine.
        Remove-ReflectAddress '203.0.113.41' -Pipe $script:Pipe -Confirm:$false
        $row | ForEach-Object { Add-ReflectAddress $_.IPAddress -PortMap $_.PortMap -Temporary -Pipe $script:Pipe -Confirm:$false }
        ((Get-ReflectAddress '203.0.113.41' -Pipe $script:Pipe).PortMap | ForEach-Object { "$_" }) | Should -Be @('80=8080/tcp', '80=8080/udp', '443=8443/tcp')
        Remove-ReflectAddress '203.0.113.41' -Pipe $script:Pipe -Confirm:$false
    }
    It 'Import-Csv | Add-ReflectAddress keeps each row''s PortMap column (issue 21)' {
        $csv = New-TestPath 'rows.csv'
        Set-Content -LiteralPath $csv -Value @('IPAddress,PortMap', '203.0.113.45,80=8080;443=8443/tcp', '203.0.113.46,', '203.0.113.47,53=5353/udp')
        Import-Csv -LiteralPath $csv | Add-ReflectAddress -Temporary -Pipe $script:Pipe -Confirm:$false
        ((Get-ReflectAddress '203.0.113.45' -Pipe $script:Pipe).PortMap | ForEach-Object { "$_" }) | Should -Be @('80=8080/tcp', '80=8080/udp', '443=8443/tcp')
        @((Get-ReflectAddress '203.0.113.46' -Pipe $script:Pipe).PortMap).Count | Should -Be 0
        ((Get-ReflectAddress '203.0.113.47' -Pipe $script:Pipe).PortMap | ForEach-Object { "$_" }) | Should -Be @('53=5353/udp')
        '203.0.113.45', '203.0.113.46', '203.0.113.47' | Remove-ReflectAddress -Temporary -Pipe $script:Pipe -Confirm:$false
    }
    It 'Remove-ReflectAddress -PortMap takes the PortMap objects Get-ReflectAddress gives; a port=target string is refused with a hint, before anything changes' {
        Add-ReflectAddress '203.0.113.42' -PortMap @{80 = 8080; 443 = 8443} -Temporary -Pipe $script:Pipe -Confirm:$false
        $a = Get-ReflectAddress '203.0.113.42' -Pipe $script:Pipe
        $gone = Remove-ReflectAddress '203.0.113.42' -PortMap ($a.PortMap | Where-Object { $_.Port -eq 80 -and $_.Protocol -eq 'udp' }) -Temporary -PassThru -Pipe $script:Pipe -Confirm:$false
        ($gone | ForEach-Object { "$_" }) | Should -Be '80=8080/udp'
        { Remove-ReflectAddress '203.0.113.42' -PortMap '443=8443' -Temporary -Pipe $script:Pipe -Confirm:$false } |
            Should -Throw -ErrorId 'Retroflect.InvalidPort*'
        $left = (Get-ReflectAddress '203.0.113.42' -Pipe $script:Pipe).PortMap | ForEach-Object { "$_" }
        $left | Should -Be @('80=8080/tcp', '443=8443/tcp', '443=8443/udp')
        Remove-ReflectAddress '203.0.113.42' -Pipe $script:Pipe -Confirm:$false
    }
}
