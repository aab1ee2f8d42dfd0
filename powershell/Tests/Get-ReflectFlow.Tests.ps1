BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $script:Pipe = Start-TestEngine -Address '203.0.113.20'
}
AfterAll { Stop-TestEngine $script:Pipe }

Describe 'Get-ReflectFlow' {
    It 'shows a reflected TCP connection, typed and sortable by Bytes' {
        $listener = [System.Net.Sockets.TcpListener]::new([ipaddress]::Any, 18080)
        $listener.Start()
        try {
            $client = [System.Net.Sockets.TcpClient]::new()
            $client.Connect('203.0.113.20', 18080)
            $server = $listener.AcceptTcpClient()
            ($server.Client.RemoteEndPoint).Address.ToString() | Should -Be '203.0.113.20'
            $client.Close(); $server.Close()
        }
        finally { $listener.Stop() }
        $flow = Get-ReflectFlow -Pipe $script:Pipe -Protocol tcp -ServerPort 18080 | Sort-Object Bytes -Descending |
            Where-Object { $_.ReflectAddress.ToString() -eq '203.0.113.20' } | Select-Object -First 1
        $flow | Should -Not -BeNullOrEmpty
        $flow.PSTypeNames | Should -Contain 'Retroflect.Flow'   # Select-Object -First keeps the object; its TypeNames are checked with -Contain
        $flow.ReflectAddress | Should -BeOfType [ipaddress]
        $flow.Bytes | Should -BeOfType [long]
        $flow.Bytes | Should -BeGreaterThan 0
        # It reads as the connection the client made, not as the class behind it.
        "$flow" | Should -Match ('^tcp \S+:\d+ -> ' + [regex]::Escape('203.0.113.20:18080') + '$')
    }
    It 'a flow through a port map says which port the client dialled (MappedFromPort), in the list view and as text' {
        Add-ReflectAddress '203.0.113.21' -PortMap '18082=18081/tcp' -Temporary -Pipe $script:Pipe -Confirm:$false
        $listener = [System.Net.Sockets.TcpListener]::new([ipaddress]::Any, 18081)
        $listener.Start()
        try {
            $client = [System.Net.Sockets.TcpClient]::new()
            $client.Connect('203.0.113.21', 18082)
            $server = $listener.AcceptTcpClient()
            $client.Close(); $server.Close()
        }
        finally {
            $listener.Stop()
        }
        try {
            $flow = Get-ReflectFlow -Pipe $script:Pipe -Protocol tcp -ServerPort 18081 | Select-Object -First 1
            $flow.MappedFromPort | Should -Be 18082
            ($flow | Format-List | Out-String) | Should -Match 'MappedFromPort\s*:\s*18082'
            "$flow" | Should -Match ([regex]::Escape('-> 203.0.113.21:18082') + '$')
        }
        finally {
            Remove-ReflectAddress '203.0.113.21' -Pipe $script:Pipe -Confirm:$false
        }
    }
    It 'filters out other protocols and ports' {
        Get-ReflectFlow -Pipe $script:Pipe -ServerPort 1 | Should -BeNullOrEmpty
    }
    It '-ErrorAction decides about a stopped engine' {
        { Get-ReflectFlow -Pipe (New-TestPath 'none.sock') -ErrorAction Ignore } | Should -Not -Throw
    }
}
