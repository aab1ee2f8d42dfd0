/**
 * `retroflect run --log-file <path>`: the engine's own log, an admin can read without any tool. Size capped: when a
 * line would take the file past its cap, the file becomes `<path>.1` (older ones move to `.2`, `.3`; the oldest goes)
 * and a new file starts. Writing never fails the engine: a full disk, a deleted folder or a file another program
 * locked loses lines (counted, and said in the next line that gets through), nothing else. Writes are synchronous
 * and rare (events, not packets), so a line is on disk before the engine goes on, even when it dies next.
 */
import { closeSync, fstatSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

/** Cap of one log file in bytes: DEFAULT unless `--log-size` says otherwise, within MIN..MAX. */
export const DEFAULT_LOG_FILE_BYTES = 10 * 1024 * 1024;
export const MIN_LOG_FILE_BYTES = 16 * 1024;
export const MAX_LOG_FILE_BYTES = 1024 * 1024 * 1024;
/** Rotated files kept beside the current one (`<path>.1` newest ... `<path>.3` oldest). */
export const ROTATED_LOG_FILES = 3;

const EOL = process.platform === 'win32' ? '\r\n' : '\n';

export class LogFile {
  private fd: number | null = null;
  private size = 0;
  /** Lines lost since the last line that was written. */
  private lost = 0;

  constructor(
    readonly path: string,
    readonly maxBytes: number = DEFAULT_LOG_FILE_BYTES,
  ) {}

  /** Append one line (a timestamp is the caller's business). Never throws. */
  write(line: string): void {
    const lines = this.lost === 1 ? 'line was' : 'lines were';
    const why = 'the log file could not be written';
    const lostNote = this.lost ? `(${this.lost} earlier log ${lines} lost: ${why})${EOL}` : '';
    const bytes = Buffer.from(lostNote + line + EOL, 'utf8');
    try {
      this.open();
      if (this.size > 0 && this.size + bytes.length > this.maxBytes) this.rotate();
      let done = 0;
      while (done < bytes.length) done += writeSync(this.fd!, bytes, done, bytes.length - done);
      this.size += bytes.length;
      this.lost = 0;
    } catch {
      // Full disk, folder gone, file locked: drop the line, and reopen at the next one (the cause may be gone).
      this.lost++;
      this.closeQuietly();
    }
  }

  close(): void {
    this.closeQuietly();
  }

  private open(): void {
    if (this.fd !== null) return;
    mkdirSync(dirname(this.path), { recursive: true });
    this.fd = openSync(this.path, 'a');
    this.size = fstatSync(this.fd).size;
  }

  /** `<path>` → `<path>.1` → ... → `<path>.N`, the oldest removed. Windows cannot rename a file we hold open. */
  private rotate(): void {
    this.closeQuietly();
    rmSync(`${this.path}.${ROTATED_LOG_FILES}`, { force: true });
    for (let i = ROTATED_LOG_FILES - 1; i >= 1; i--) {
      try {
        renameSync(`${this.path}.${i}`, `${this.path}.${i + 1}`);
      } catch {
        // not there yet
      }
    }
    try {
      renameSync(this.path, `${this.path}.1`);
      this.fd = openSync(this.path, 'a');
    } catch {
      // Cannot move it aside (another program holds it without sharing delete): start it over rather than grow.
      this.fd = openSync(this.path, 'w');
    }
    this.size = 0;
  }

  private closeQuietly(): void {
    if (this.fd === null) return;
    try {
      closeSync(this.fd);
    } catch {
      // already unusable
    }
    this.fd = null;
  }
}
