#!/usr/bin/env bash
# Installs the Debian packages retroflect's build, tests and benchmarks use (run as root). Idempotent.
#   iproute2, nftables      the Linux backend's routes and shield rules
#   iperf3, sockperf        npm run bench (throughput and latency)
#   tcpdump, dnsutils, curl, iputils-ping   regenerating and checking the packet fixtures
#   gcc, make, gcc-mingw-w64-x86-64         the WinDivert test double (native/), for Linux and for Wine
#   wine, wine64            running the Windows build (node.exe, koffi, the test double DLL) in tests
#   tshark                  reading the pcapng files `retroflect capture` writes, in tests
#   clang, llvm, libbpf-dev, linux-libc-dev   compiling the ebpf backend's tc program (native/reflect_tc.bpf.c);
#                           at run time it needs only libbpf1, which iproute2 already depends on
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
pkgs=(iproute2 nftables iperf3 sockperf tcpdump dnsutils curl iputils-ping procps gcc make libc6-dev
      gcc-mingw-w64-x86-64 wine wine64 python3 tshark clang llvm libbpf-dev linux-libc-dev libbpf1)
missing=()
for p in "${pkgs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
if ((${#missing[@]})); then
  apt-get update -qq
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
