/**
 * `retroflect run` as a command-line definition. The engine and its platform code load only when `run` is chosen
 * (run-engine.ts), so client commands and `--help` never load the FFI layer.
 */
import type { Command } from 'commander';
import type { RunOptions } from './run-engine.ts';
import { DEFAULT_DEVICE, WINDIVERT_PRIORITY } from '../packet-sources/registry.ts';

export function registerRunCommand(program: Command): void {
  program
    .command('run')
    .description('Run the reflection engine in the foreground (as root / Administrator).')
    .option('-r, --reflect <address...>', 'reflect address(es) for this run, added to the config file\'s')
    .option('-s, --shield <port...>', 'shield port(s) for this run: 8080 (TCP and UDP), 8080/tcp, 53/udp')
    .option('-c, --config <path>', 'config file (default: %ProgramData%\\Retroflect\\config.json or /etc/retroflect/config.json)')
    .option('--no-config', 'use no config file: only the command line, and nothing is persisted')
    .option('--policy <path>', 'managed policy file, read-only, config.json layout (default: /etc/retroflect/policy.json; Windows: HKLM\\SOFTWARE\\Policies\\Retroflect)')
    .option('-p, --pipe <name>', 'control pipe name (or socket path on Linux)')
    .option('-n, --dry-run', 'print what would be done (addresses, ports, routes, rules, WinDivert filter) and change nothing')
    .option('--device <name>',
      `Linux: the engine's device (default: ${DEFAULT_DEVICE.ebpf} on ebpf, its veth; ${DEFAULT_DEVICE.tun} on tun, ` +
        'the TUN device)')
    .option('--backend <kind>', 'Linux: auto (default: ebpf where it loads, else tun), ebpf (in the kernel), or tun')
    .option('--windivert-dir <dir>', 'Windows: folder holding WinDivert.dll and WinDivert64.sys')
    .option('--log-file <path>', 'also append the engine\'s events to this file (size capped, rotated to .1 .. .3)')
    .option('--log-size <size>', 'cap of the log file before it rotates (bytes, or K/M/G; default 10M)')
    .option('--service', 'Windows: run as the service Retroflect (Install-Retroflect registers it)')
    .option('--priority <n>', `Windows: WinDivert priority (${WINDIVERT_PRIORITY.MIN}..${WINDIVERT_PRIORITY.MAX}, default ${WINDIVERT_PRIORITY.DEFAULT}; higher sees packets first)`)
    .action(async (opts: RunOptions) => {
      const { runEngine } = await import('./run-engine.ts');
      const { runService } = await import('./service-host.ts');
      const code = opts.service ? await runService(opts) : await runEngine(opts);
      // Exit now: the engine's cleanup is done, and a natural exit first closes Node's signal handles, which would
      // let a signal that arrives meanwhile kill us (exit 143) after a clean stop. Our writes are synchronous.
      if (!opts.dryRun) process.exit(code);
      process.exitCode = code;
    });
}

