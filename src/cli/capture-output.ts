/**
 * Where `retroflect capture -w` writes, opened so that root writes only where it was asked to, and written so that a
 * slow or vanished reader costs packets (counted), never memory or the end of the capture.
 *
 * Opening (nothing is written to a destination that is refused):
 *  - a path that does not exist: created (O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600: packets are private);
 *  - an existing regular file: overwritten only when it is the caller's own, has one link, and is the file that was
 *    looked at (checked on the opened descriptor, so it cannot be swapped in between);
 *  - a FIFO: written when a reader has it open (waiting for one until the capture ends);
 *  - '-': stdout;
 *  - anything else (a symbolic link, a device, a directory, a socket, another user's file): E_OUTPUT_REFUSED.
 * Writing: a failure (full disk, reader gone) is E_OUTPUT_FAILED (exit 11).
 */
import { close, constants, createWriteStream, fstat, ftruncate, open, promises as fsp } from 'node:fs';
import type { Stats, WriteStream } from 'node:fs';
import net from 'node:net';
import { promisify } from 'node:util';
import { ErrorCode, RetroflectError } from '../errors.ts';
import { whenOutputFails } from './output.ts';

/** Bytes waiting to be written above which packets are no longer queued but counted as dropped. */
export const MAX_PENDING_OUTPUT_BYTES = 4 * 1024 * 1024;
/** How long the last bytes may take to be written once the capture ended, before the output is given up. */
export const OUTPUT_CLOSE_GRACE_MS = 3000;
/** How often a FIFO without a reader is tried again. */
const FIFO_RETRY_MS = 100;
const NEW_FILE_MODE = 0o600;

// Plain descriptors, not FileHandles: a stream or socket takes each over and closes it (a FileHandle would close it
// again when collected).
const openFd = promisify(open) as (path: string, flags: number, mode?: number) => Promise<number>;
const fstatFd = promisify(fstat) as (fd: number) => Promise<Stats>;
const truncateFd = promisify(ftruncate) as (fd: number, len: number) => Promise<void>;
const closeFd = promisify(close) as (fd: number) => Promise<void>;

export function outputRefused(path: string, why: string, hint: string): RetroflectError {
  const message = `Not writing to ${path}: ${why}. Nothing was written.`;
  return new RetroflectError(ErrorCode.OUTPUT_REFUSED, message, { hint, details: { path } });
}

export function outputFailed(what: string, err: unknown): RetroflectError {
  const e = err as NodeJS.ErrnoException | undefined;
  const reason = e?.code ? `${e.message.replace(/^[A-Z]+: /, '')}` : String(e?.message ?? err);
  return new RetroflectError(ErrorCode.OUTPUT_FAILED, `Writing ${what} failed: ${reason}.`, {
    hint: 'Free space or choose another place (-w), or keep the reader of the pipe running until the capture ends.',
    details: { output: what, ...(e?.code ? { errno: e.code } : {}) },
  });
}

export class CaptureOutput {
  /** The first write failure (null: none). */
  failure: RetroflectError | null = null;
  private readonly failed: Promise<void>;

  private constructor(
    /** The path, or null for stdout. */
    readonly path: string | null,
    private readonly stream: NodeJS.WritableStream & { writableLength: number; destroy(): void },
  ) {
    const what = path ?? 'stdout';
    this.failed = new Promise<void>((resolve) => {
      const fail = (err: unknown): void => {
        this.failure ??= outputFailed(what, err);
        resolve();
      };
      if (path === null) void whenOutputFails().then(() => fail(new Error('the reader of stdout went away')));
      stream.on('error', fail);
    });
  }

  static stdout(): CaptureOutput {
    return new CaptureOutput(null, process.stdout);
  }

  /**
   * Open `path` as described at the top. A FIFO without a reader is waited for until `ended` resolves (then
   * E_OUTPUT_FAILED: no reader came).
   */
  static async open(path: string, ended: Promise<unknown>): Promise<CaptureOutput> {
    const seen = await fsp.lstat(path).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return null;
      throw outputFailed(path, err);
    });
    if (seen === null) return new CaptureOutput(path, await createNew(path));
    if (seen.isSymbolicLink()) {
      const hint = 'Name the file itself, or a new file in a directory only you can write to.';
      throw outputRefused(path, 'it is a symbolic link', hint);
    }
    if (seen.isFIFO()) return new CaptureOutput(path, await openFifo(path, ended));
    if (!seen.isFile()) {
      throw outputRefused(path, 'it is not a regular file or a FIFO', "Name a new file, a FIFO, or '-' for stdout.");
    }
    return new CaptureOutput(path, await overwriteOwn(path, seen));
  }

  /** Bytes queued but not yet written. */
  pending(): number {
    return this.stream.writableLength;
  }

  /** Whether more may be queued now (false while too much waits: drop and count instead). */
  ready(): boolean {
    return this.failure === null && this.pending() <= MAX_PENDING_OUTPUT_BYTES;
  }

  write(bytes: Buffer): void {
    if (this.failure === null && bytes.length > 0) this.stream.write(bytes);
  }

  /** Resolves at the first write failure. */
  whenFailed(): Promise<void> {
    return this.failed;
  }

  /** Write what is queued (at most OUTPUT_CLOSE_GRACE_MS) and close; throws E_OUTPUT_FAILED if that failed. */
  async close(): Promise<void> {
    if (this.path !== null && this.failure === null) {
      const done = new Promise<void>((resolve) => this.stream.end(() => resolve()));
      const timedOut = delay(OUTPUT_CLOSE_GRACE_MS).then(() => true);
      const gaveUp = await Promise.race([done.then(() => false), this.failed.then(() => false), timedOut]);
      const late = `${this.pending()} bytes were not taken ${OUTPUT_CLOSE_GRACE_MS / 1000} s after the capture ended`;
      if (gaveUp) this.failure ??= outputFailed(this.path, new Error(late));
    } else if (this.path === null && this.failure === null && this.pending() > 0) {
      const drained = new Promise((resolve) => process.stdout.once('drain', resolve));
      await Promise.race([drained, this.failed, delay(OUTPUT_CLOSE_GRACE_MS)]);
    }
    if (this.path !== null) this.stream.destroy();
    if (this.failure) throw this.failure;
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

async function createNew(path: string): Promise<WriteStream> {
  const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
  const fd = await openFd(path, flags, NEW_FILE_MODE).catch((err: NodeJS.ErrnoException) => {
    // Created by someone else between the look and the open: refuse rather than guess what it is now.
    if (err.code === 'EEXIST' || err.code === 'ELOOP') {
      throw outputRefused(path, 'it appeared while being created', 'Try again, in a directory only you can write to.');
    }
    throw outputFailed(path, err);
  });
  return createWriteStream('', { fd, autoClose: true });
}

async function overwriteOwn(path: string, seen: Stats): Promise<WriteStream> {
  const fd = await openFd(path, constants.O_WRONLY | constants.O_NOFOLLOW).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ELOOP') throw outputRefused(path, 'it became a symbolic link', 'Name the file itself.');
    throw outputFailed(path, err);
  });
  const st = await fstatFd(fd);
  const uid = process.geteuid?.() ?? st.uid;
  let why: string | null = null;
  if (st.dev !== seen.dev || st.ino !== seen.ino || !st.isFile()) why = 'it was replaced while being opened';
  else if (st.uid !== uid) why = `it belongs to another user (uid ${st.uid})`;
  else if (st.nlink !== 1) why = `it has ${st.nlink} hard links (writing would change another name's file too)`;
  if (why !== null) {
    await closeFd(fd);
    throw outputRefused(path, why, 'Name a new file, or remove this one first.');
  }
  await truncateFd(fd, 0);
  return createWriteStream('', { fd, autoClose: true });
}

/** A FIFO opened without blocking (a reader must have it open), written through a non-blocking socket. */
async function openFifo(path: string, ended: Promise<unknown>): Promise<net.Socket> {
  let over = false;
  void ended.then(() => (over = true));
  for (;;) {
    const flags = constants.O_WRONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW;
    const fd = await openFd(path, flags).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENXIO') return null; // no reader yet
      if (err.code === 'ELOOP') throw outputRefused(path, 'it became a symbolic link', 'Name the FIFO itself.');
      throw outputFailed(path, err);
    });
    if (fd !== null) {
      if (!(await fstatFd(fd)).isFIFO()) {
        await closeFd(fd);
        throw outputRefused(path, 'it was replaced while being opened', 'Name the FIFO itself.');
      }
      // The socket takes over the descriptor (a pipe handle: non-blocking writes, back-pressure via writableLength).
      return new net.Socket({ fd, readable: false, writable: true });
    }
    if (over) throw outputFailed(path, new Error('no program opened the FIFO for reading before the capture ended'));
    await Promise.race([delay(FIFO_RETRY_MS), ended]);
  }
}
