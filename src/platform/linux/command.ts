/**
 * Runs the host tools the Linux backend needs (`ip`, `nft`) with argument arrays — never through a shell — and turns
 * a failure into a RetroflectError that names the exact command and what the tool printed.
 */
import { execFile } from 'node:child_process';
import { ErrorCode, RetroflectError } from '../../errors.ts';

export interface CommandResult {
  stdout: string;
  stderr: string;
}

/** One command the backend runs; also what `plan()` lists for `--dry-run`. */
export interface HostCommand {
  file: string;
  args: string[];
  /** Text written to the command's stdin (an `nft -f -` script). */
  input?: string;
}

/** Human-readable form of a command, for plans and error messages (not for execution). */
export function describeCommand(cmd: HostCommand): string {
  const line = [cmd.file, ...cmd.args].join(' ');
  return cmd.input === undefined ? line : `${line} <<EOF\n${cmd.input.trimEnd()}\nEOF`;
}

/**
 * How long one helper may run. `ip` and `nft` finish in milliseconds; one that hangs (a wedged netlink socket, a
 * stuck kernel lock, a broken wrapper script) would otherwise stall every later change queued behind it and delay a
 * clean stop until it returns. RETROFLECT_HELPER_TIMEOUT_MS overrides it (tests shorten it).
 */
export const HELPER_TIMEOUT_MS = 10_000;

function helperTimeoutMs(): number {
  const v = Number(process.env.RETROFLECT_HELPER_TIMEOUT_MS);
  return Number.isFinite(v) && v > 0 ? v : HELPER_TIMEOUT_MS;
}

/**
 * Run a command; reject with E_BACKEND_FAILED (or E_BACKEND_UNAVAILABLE when the tool is missing). A command that
 * runs past the timeout is killed (SIGKILL) and rejected at once, without waiting for its output pipes to close
 * (a grandchild may hold them).
 */
export function runCommand(cmd: HostCommand, timeoutMs = helperTimeoutMs()): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const child = execFile(cmd.file, cmd.args, { encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      clearTimeout(timer);
      if (settled) return;
      settled = true;
      if (!err) {
        resolve({ stdout, stderr });
        return;
      }
      const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
      reject(
        new RetroflectError(
          missing ? ErrorCode.BACKEND_UNAVAILABLE : ErrorCode.BACKEND_FAILED,
          missing
            ? `The '${cmd.file}' program was not found.`
            : `'${describeCommand({ file: cmd.file, args: cmd.args })}' failed: ${stderr.trim() || err.message}`,
          {
            hint: missing
              ? `Install it (Debian: apt-get install ${cmd.file === 'nft' ? 'nftables' : 'iproute2'}).`
              : 'Check that you run as root and that the kernel supports TUN and nftables.',
            details: { command: cmd.file, args: cmd.args, stderr: stderr.trim(), exitCode: (err as { code?: unknown }).code },
            cause: err,
          },
        ),
      );
    });
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      child.kill('SIGKILL');
      reject(
        new RetroflectError(ErrorCode.BACKEND_FAILED, `'${describeCommand({ file: cmd.file, args: cmd.args })}' did not finish within ${timeoutMs} ms and was killed.`, {
          hint: `Something on the host is holding up '${cmd.file}'; the change was not made. Check the host (dmesg, other firewall tools) and try again.`,
          details: { command: cmd.file, args: cmd.args, timedOut: true, timeoutMs },
        }),
      );
    }, timeoutMs);
    // Not unref'd: a pending helper is real work the engine waits for.
    child.stdin?.on('error', () => undefined); // a helper that dies before reading its script: reported via its exit
    if (cmd.input !== undefined) child.stdin?.end(cmd.input);
  });
}
