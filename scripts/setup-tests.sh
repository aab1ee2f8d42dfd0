#!/usr/bin/env bash
# Everything `npm test` uses beyond `npm ci`, installed and built idempotently (run as root; CI runs it too):
#   Debian packages (scripts/install-deps.sh), pwsh 7.6.9 + Pester 5.7.1 from NuGet (scripts/install-pwsh.sh),
#   the Windows node.exe, koffi binary and a Wine prefix (test/wine/setup.ts), a Windows pwsh.exe built from NuGet
#   packages (test/wine/windows-pwsh.ts), and both executables (npm run build -- --windows).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/install-pwsh.sh
[[ -d node_modules ]] || npm ci --no-audit --no-fund
node --import tsx test/wine/setup.ts
node --import tsx test/wine/windows-pwsh.ts
npm run build -- --windows
