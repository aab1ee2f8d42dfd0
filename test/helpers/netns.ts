/**
 * Network namespaces for tests and benchmarks: every test that touches devices, routes or firewall rules runs in
 * namespaces it creates here and removes afterwards — in its `after` hook, and on process exit as a last resort —
 * so the host's own network is never changed.
 *
 * Names are `rft-<tag>-<pid>-<n>`: unique per test file (tag) and process (pid), as test files run in parallel.
 * Only documentation ranges are used: 198.51.100.0/24 and 2001:db8:1::/64 on the veth link.
 */
import { execFile, spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';

export interface RunResult {
  stdout: string;
  stderr: string;
  code: number;
}

const live = new Set<NetNs>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Synchronous last-resort cleanup: the process is going away, async work would never finish.
  process.on('exit', () => {
    for (const ns of live) ns.destroySync();
  });
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      for (const ns of live) ns.destroySync();
      process.exit(130);
    });
  }
}

/** Run a program (no shell) and collect its output; never rejects on a non-zero exit. */
export function run(
  file: string, args: string[], opts: { input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<RunResult> {
  return new Promise((resolve) => {
    const timeout = opts.timeoutMs ?? 30_000;
    const options = { encoding: 'utf8', timeout, maxBuffer: 16 * 1024 * 1024, env: opts.env } as const;
    const child = execFile(file, args, options, (err, stdout, stderr) => {
      const exit = (err as { code?: unknown } | null)?.code;
      const code = err ? (typeof exit === 'number' ? exit : 1) : 0;
      resolve({ stdout, stderr, code });
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** Like `run`, but rejects with the command and its stderr when it fails. */
export async function must(file: string, args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<string> {
  const r = await run(file, args, opts);
  if (r.code !== 0) throw new Error(`${file} ${args.join(' ')} failed (${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

let counter = 0;

export class NetNs {
  readonly name: string;
  private readonly children = new Set<ChildProcess>();
  private destroyed = false;

  private constructor(name: string) {
    this.name = name;
  }

  /** Create a namespace with loopback up. */
  static async create(tag: string): Promise<NetNs> {
    installExitHook();
    const ns = new NetNs(`rft-${tag}-${process.pid}-${counter++}`);
    await must('ip', ['netns', 'add', ns.name]);
    live.add(ns);
    await ns.must('ip', ['link', 'set', 'lo', 'up']);
    return ns;
  }

  /** Run a program inside the namespace (`ip netns exec`, argument array). */
  run(file: string, args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<RunResult> {
    return run('ip', ['netns', 'exec', this.name, file, ...args], opts);
  }

  must(file: string, args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<string> {
    return must('ip', ['netns', 'exec', this.name, file, ...args], opts);
  }

  /** Start a long-running program inside the namespace; it is killed when the namespace is destroyed. */
  spawn(file: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', this.name, file, ...args], { stdio: ['pipe', 'pipe', 'pipe'], ...opts });
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    return child;
  }

  /** `ip -j ...` inside the namespace, parsed. */
  async ipJson<T = unknown>(args: string[]): Promise<T> {
    const out = await this.must('ip', ['-j', ...args]);
    return JSON.parse(out || '[]') as T;
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    for (const child of this.children) child.kill('SIGKILL');
    await Promise.all([...this.children].map((c) => new Promise((r) => (c.exitCode !== null || c.signalCode !== null ? r(null) : c.once('exit', r)))));
    await run('ip', ['netns', 'del', this.name]);
    this.destroyed = true;
    live.delete(this);
  }

  destroySync(): void {
    if (this.destroyed) return;
    for (const child of this.children) child.kill('SIGKILL');
    spawnSync('ip', ['netns', 'del', this.name]);
    this.destroyed = true;
    live.delete(this);
  }
}

/** Host side ("a", where retroflect runs) and remote side ("b") of one veth link. */
export interface Topology {
  a: NetNs;
  b: NetNs;
  /** Interface names inside a and b. */
  aIf: string;
  bIf: string;
  a4: string;
  b4: string;
  a6: string;
  b6: string;
  destroy(): Promise<void>;
}

/**
 * Two namespaces joined by a veth pair: a (198.51.100.2/24, 2001:db8:1::2/64) and b (198.51.100.1/24,
 * 2001:db8:1::1/64), with a's default routes via b — the shape of an ordinary host behind a router. The kernel here
 * has no `dummy` link type, hence veth.
 */
export async function createTopology(tag: string): Promise<Topology> {
  const a = await NetNs.create(tag);
  let b: NetNs | undefined;
  try {
    b = await NetNs.create(tag);
    const aIf = 'veth-a';
    const bIf = 'veth-b';
    await must('ip', ['link', 'add', aIf, 'netns', a.name, 'type', 'veth', 'peer', 'name', bIf, 'netns', b.name]);
    const t: Topology = {
      a,
      b,
      aIf,
      bIf,
      a4: '198.51.100.2',
      b4: '198.51.100.1',
      a6: '2001:db8:1::2',
      b6: '2001:db8:1::1',
      destroy: async () => {
        await a.destroy();
        await b!.destroy();
      },
    };
    // nodad: the address is usable at once instead of after duplicate address detection.
    await a.must('ip', ['addr', 'add', `${t.a4}/24`, 'dev', aIf]);
    await a.must('ip', ['addr', 'add', `${t.a6}/64`, 'dev', aIf, 'nodad']);
    await b.must('ip', ['addr', 'add', `${t.b4}/24`, 'dev', bIf]);
    await b.must('ip', ['addr', 'add', `${t.b6}/64`, 'dev', bIf, 'nodad']);
    await a.must('ip', ['link', 'set', aIf, 'up']);
    await b.must('ip', ['link', 'set', bIf, 'up']);
    // Carrier comes up asynchronously; until it does, libuv (os.networkInterfaces) does not list the addresses.
    for (const [ns, ifname] of [[a, aIf], [b, bIf]] as const) {
      await waitFor(`${ifname} carrier`, async () => (await ns.ipJson<{ operstate: string }[]>(['link', 'show', 'dev', ifname]))[0]?.operstate === 'UP');
    }
    await a.must('ip', ['-4', 'route', 'add', 'default', 'via', t.b4]);
    await a.must('ip', ['-6', 'route', 'add', 'default', 'via', t.b6]);
    return t;
  } catch (err) {
    await a.destroy();
    await b?.destroy();
    throw err;
  }
}

/** Wait until `check` returns true, polling; throws after timeoutMs with `what` in the message. */
export async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Reads a child's stdout as JSON lines; `next(pred)` resolves with the first (later) line matching `pred`. */
export class JsonLines {
  private readonly lines: Record<string, unknown>[] = [];
  private readonly waiters: { pred: (o: Record<string, unknown>) => boolean; resolve: (o: Record<string, unknown>) => void }[] = [];
  private buf = '';
  stderr = '';

  constructor(readonly child: ChildProcess) {
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => {
      this.buf += chunk;
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl).trim();
        this.buf = this.buf.slice(nl + 1);
        if (!line.startsWith('{')) continue;
        const obj = JSON.parse(line) as Record<string, unknown>;
        const w = this.waiters.findIndex((x) => x.pred(obj));
        if (w >= 0) this.waiters.splice(w, 1)[0].resolve(obj);
        else this.lines.push(obj);
      }
    });
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (d: string) => (this.stderr += d));
  }

  next(pred: (o: Record<string, unknown>) => boolean = () => true, timeoutMs = 20_000): Promise<Record<string, unknown>> {
    const i = this.lines.findIndex(pred);
    if (i >= 0) return Promise.resolve(this.lines.splice(i, 1)[0]);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no matching line within ${timeoutMs} ms; stderr: ${this.stderr.slice(-2000)}`)), timeoutMs);
      this.waiters.push({ pred, resolve: (o) => (clearTimeout(timer), resolve(o)) });
    });
  }

  send(obj: unknown): void {
    this.child.stdin!.write(JSON.stringify(obj) + '\n');
  }
}
