// pwsh.exe for Wine: PowerShell's own console entry point with this process's arguments, as the real pwsh.exe does.
// Exit code: what PowerShell returns (the script's `exit N`, or 1 for an unhandled error).
public static class Program
{
    public static int Main(string[] args) => Microsoft.PowerShell.UnmanagedPSEntry.Start(args, args.Length);
}
