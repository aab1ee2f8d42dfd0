/**
 * Replacing a file atomically: the new content goes to a temp file in the same directory, is fsynced, renamed over
 * the old file, and the directory is fsynced, so after a crash the file is either the old or the new version, never
 * a mix. Also finds the file a symlinked path names, and removes the temp files a killed save left behind.
 */
import { closeSync, fsyncSync, lstatSync, mkdirSync, openSync, readdirSync, readlinkSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join, resolve } from 'node:path';

/** Hooks for tests that prove atomicity by failing at a chosen step. Never set outside tests. */
export interface SaveFaults {
  /** Called after the temp file was written and before it is renamed over the target. Throw to simulate a crash. */
  beforeRename?: (tempPath: string) => void;
}

/** Most symlinks followed to find the file a path names (the kernel's own limit is 40). */
const MAX_LINK_HOPS = 40;

/**
 * The file a save must replace. A path that is a symlink (an admin keeping the config elsewhere, or in a managed
 * location) is written through: the link stays, its target gets the new content, atomically in the target's own
 * directory. Renaming over the link itself would turn it into a plain file and leave the target stale.
 * Follows dangling links too (the target may not exist yet).
 */
export function writeTarget(path: string): string {
  let current = resolve(path);
  for (let hops = 0; hops < MAX_LINK_HOPS; hops++) {
    let isLink: boolean;
    try {
      isLink = lstatSync(current).isSymbolicLink();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return current;
      throw err;
    }
    if (!isLink) return current;
    current = resolve(dirname(current), readlinkSync(current));
  }
  throw Object.assign(new Error(`too many levels of symbolic links at ${path}`), { code: 'ELOOP' });
}

/** Name of a temp file of ours: `.<name>.<pid>.<8 hex>.tmp` beside the file. */
function tempFileName(target: string): string {
  return `.${basename(target)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
}

/** What tempFileName makes for `target`, with the pid captured. */
function tempFilePattern(target: string): RegExp {
  const name = basename(target).replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`^\\.${name}\\.(\\d+)\\.[0-9a-f]{8}\\.tmp$`);
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Remove temp files our own saves left beside `path` when the process was killed between creating the temp file
 * and renaming it (SIGKILL, power loss). Only files named exactly as writeFileAtomically names them, and only those
 * of processes that no longer run (a live engine may be saving right now). Returns the paths removed; a file that
 * cannot be removed is left (it harms nothing but disk space).
 */
export function removeOrphanTempFiles(path: string): string[] {
  let target: string;
  try {
    target = writeTarget(path);
  } catch {
    return [];
  }
  const dir = dirname(target);
  const pattern = tempFilePattern(target);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    const m = pattern.exec(name);
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || processAlive(pid)) continue;
    const file = join(dir, name);
    try {
      if (!lstatSync(file).isFile()) continue;
      unlinkSync(file);
      removed.push(file);
    } catch {
      /* gone already, or not ours to remove */
    }
  }
  return removed;
}

/**
 * Write `text` to `path` atomically (temp file in the same directory → write → fsync → rename → fsync directory),
 * keeping the permissions the old file had. On failure the old file is untouched, the temp file removed, and the
 * error rethrown. A symlinked path is written through to its target (writeTarget).
 */
export function writeFileAtomically(path: string, text: string, faults: SaveFaults = {}): void {
  let temp = '';
  let fd: number | undefined;
  try {
    const target = writeTarget(path);
    const dir = dirname(target);
    temp = join(dir, tempFileName(target));
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    let mode = 0o644;
    try {
      mode = statSync(target).mode & 0o777; // keep the permissions an admin gave the file
    } catch {
      /* new file */
    }
    // 'wx': never follow or overwrite something already at the temp name.
    fd = openSync(temp, 'wx', mode);
    const data = Buffer.from(text, 'utf8');
    let off = 0;
    while (off < data.length) off += writeSync(fd, data, off, data.length - off);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    faults.beforeRename?.(temp);
    renameSync(temp, target);
    if (process.platform !== 'win32') {
      // Make the rename itself durable. Windows cannot open a directory for fsync; NTFS journals the rename.
      const dfd = openSync(dir, 'r');
      try {
        fsyncSync(dfd);
      } finally {
        closeSync(dfd);
      }
    }
  } catch (err) {
    if (fd !== undefined) {
      try {
        closeSync(fd);
      } catch {
        /* already failing */
      }
    }
    try {
      if (temp) unlinkSync(temp);
    } catch {
      /* not created, or already renamed */
    }
    throw err;
  }
}
