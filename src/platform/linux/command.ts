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

/** Run a command; reject with E_BACKEND_FAILED (or E_BACKEND_UNAVAILABLE when the tool is missing). */
export function runCommand(cmd: HostCommand): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd.file, cmd.args, { encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
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
    if (cmd.input !== undefined) child.stdin?.end(cmd.input);
  });
}
