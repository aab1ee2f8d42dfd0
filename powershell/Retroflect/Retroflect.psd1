@{
    RootModule           = 'Retroflect.psm1'
    ModuleVersion        = '0.1.0'
    GUID                 = '6f1d7c0e-3b2a-4c55-9a8e-2f4b71d0c9a3'
    Author               = 'retroflect contributors'
    CompanyName          = 'retroflect'
    Copyright            = '(c) retroflect contributors. MIT License.'
    Description          = 'Controls the retroflect engine, which reflects traffic this host sends to chosen reflect addresses back into this host as inbound, so sandboxed (UWP) clients reach local servers; and shields local ports from other hosts. Start, stop, install at boot, manage reflect addresses and shield ports, read stats and flows.'
    CompatiblePSEditions = @('Desktop', 'Core')
    PowerShellVersion    = '5.1'
    FormatsToProcess     = @('Retroflect.Format.ps1xml')
    FunctionsToExport    = @(
        'Add-ReflectAddress'
        'Add-ShieldPort'
        'Get-ReflectAddress'
        'Get-ReflectFlow'
        'Get-ReflectStats'
        'Get-Retroflect'
        'Get-ShieldPort'
        'Install-Retroflect'
        'Remove-ReflectAddress'
        'Remove-ShieldPort'
        'Save-ReflectCapture'
        'Set-ReflectAddress'
        'Set-ShieldPort'
        'Start-Retroflect'
        'Stop-Retroflect'
        'Test-ReflectAddress'
        'Test-Retroflect'
        'Uninstall-Retroflect'
        'Watch-ReflectTraffic'
    )
    DscResourcesToExport = @('RetroflectReflectAddress', 'RetroflectShieldPort')
    CmdletsToExport      = @()
    VariablesToExport    = @()
    AliasesToExport      = @()
    PrivateData          = @{
        PSData = @{
            Tags       = @('network', 'loopback', 'UWP', 'WinDivert', 'reflect', 'firewall', 'Windows', 'Linux')
            LicenseUri = 'https://opensource.org/licenses/MIT'
        }
    }
}
