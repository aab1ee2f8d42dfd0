// Which tier each test file belongs to: the one place that decides it (read by scripts/test.mjs, which runs a tier
// with `npm run test:<tier>` and fails on a test file no entry claims). An entry is a folder (ending in '/') or a
// file under test/; the longest entry that starts a file's path decides. A file goes in the tier of the heaviest
// thing it needs: Wine over pwsh over root.

/**
 * `bundled`: the tier's test files run bundled with plain node rather than through tsx (scripts/bundle.mjs
 * bundleTests), which saves most of a small test file's CPU; a filter that picks such files runs them bundled too.
 * @type {Record<string, { needs: string, paths: string[], bundled?: boolean }>}
 */
export const TIERS = {
  unit: {
    needs: 'nothing but Node, gcc (the WinDivert double) and tshark: no root, no namespaces, no Wine, no pwsh',
    bundled: true,
    paths: [
      'capture/interest.test.ts',
      'capture/ring.test.ts',
      'capture/windivert.test.ts',
      'cli/client-commands.test.ts',
      'cli/run-command.test.ts',
      'config/',
      'doctor/doctor-units.test.ts',
      'doctor/reflect-layer.test.ts',
      'control/server.test.ts',
      'engine/',
      'hardening/cli-output.test.ts',
      'hardening/config-edges.test.ts',
      'hardening/control-edges.test.ts',
      'hardening/packet-fuzz.test.ts',
      'packet/',
      'packet-sources/memory/',
      'packet-sources/windivert/',
      'service/log-file.test.ts',
      'structure/',
    ],
  },
  netns: {
    needs: 'root: network namespaces, TUN devices, nftables, routes, peers running as another user',
    paths: [
      'capture/',
      'cli/first-run.test.ts',
      'control/',
      'doctor/doctor-linux.test.ts',
      'dotnet/',
      'e2e/',
      'hardening/',
      'packet-sources/ebpf/',
      'packet-sources/tun/',
      'platform/validate-address.test.ts',
      'service/journald-run.test.ts',
    ],
  },
  pwsh: {
    needs: 'pwsh 7 and Pester (scripts/install-pwsh.sh), and root for the engine they drive',
    paths: [
      'doctor/doctor-pester.test.ts', 'powershell/', 'release/deploy-scripts.test.ts', 'service/systemd-unit.test.ts',
    ],
  },
  wine: {
    needs: 'Wine, the Windows node.exe and `npm run build -- --windows` (test/wine/setup.ts); some also pwsh',
    paths: ['doctor/doctor-windows-pester.test.ts', 'doctor/doctor-wine.test.ts', 'wine/', 'platform/privileges-wine.test.ts', 'platform/route-lookup-windows.test.ts', 'release/'],
  },
};

/** The tier of a test file (path relative to test/, '/'-separated), or undefined when no entry claims it. */
export function tierOf(file) {
  let best;
  for (const [tier, { paths }] of Object.entries(TIERS)) {
    for (const p of paths) {
      const claims = p.endsWith('/') ? file.startsWith(p) : file === p;
      if (claims && (!best || p.length > best.path.length)) best = { tier, path: p };
    }
  }
  return best?.tier;
}
