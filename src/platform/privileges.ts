/**
 * Is this process allowed to change routes, firewall rules and packet capture?
 *  - Linux: effective uid 0 (root). A process with only CAP_NET_ADMIN would also do, but we keep the check simple
 *    and say "root" in the error.
 *  - Windows: shell32's IsUserAnAdmin(), bound with koffi — true when the process token is elevated and in the
 *    Administrators group (what WinDivert needs to load its driver). No `net session` or child process.
 */
export async function isAdministrator(platform: NodeJS.Platform = process.platform): Promise<boolean> {
  if (platform === 'win32') {
    const { default: koffi } = await import('koffi');
    const shell32 = koffi.load('shell32.dll');
    const isUserAnAdmin = shell32.func('__stdcall', 'IsUserAnAdmin', 'bool', []);
    return Boolean(isUserAnAdmin());
  }
  return typeof process.geteuid === 'function' && process.geteuid() === 0;
}
