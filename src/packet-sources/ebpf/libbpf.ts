/**
 * The few libbpf calls the ebpf backend needs, bound with koffi: open the program object from memory, size its maps,
 * load it into the kernel, attach it to a tc (clsact) hook, and read and write its maps. libbpf1 is the shared library
 * iproute2 already depends on, so the backend adds no runtime dependency; no bpftool, no helper process per change.
 * Loaded lazily, per thread (the main thread loads and attaches; the worker only reads its packet socket).
 *
 * libbpf >= 1.0 reports errors as a negative errno (or NULL with errno set); both become RetroflectErrors here.
 */
import koffi from 'koffi';
import { ErrorCode, RetroflectError } from '../../errors.ts';

/** The library name the dynamic loader finds (Debian: libbpf1). RETROFLECT_LIBBPF names another file (tests use it
 *  to make loading fail, and so check the fallback to TUN). */
export const LIBBPF_SONAME = 'libbpf.so.1';

/** enum bpf_tc_attach_point (libbpf.h). */
export const BPF_TC_INGRESS = 1;
export const BPF_TC_EGRESS = 2;
/** bpf_map_update_elem flags (linux/bpf.h). */
export const BPF_ANY = 0;
export const BPF_NOEXIST = 1;
export const BPF_EXIST = 2;

/** `struct bpf_tc_hook { size_t sz; int ifindex; enum bpf_tc_attach_point attach_point; __u32 parent; }`: 24 bytes. */
const TC_HOOK_SIZE = 24;
/** `struct bpf_tc_opts { size_t sz; int prog_fd; __u32 flags, prog_id, handle, priority; }`: 32 bytes. */
const TC_OPTS_SIZE = 32;

export interface Libbpf {
  /** Opens (does not load) an object from its bytes; returns an opaque handle. */
  openObject(bytes: Buffer, name: string): unknown;
  setMaxEntries(obj: unknown, map: string, entries: number): void;
  loadObject(obj: unknown): void;
  closeObject(obj: unknown): void;
  programFd(obj: unknown, program: string): number;
  mapFd(obj: unknown, map: string): number;
  /** Creates the clsact qdisc of `ifindex` (EEXIST is fine) and attaches `progFd` at `point`; returns the filter's
   *  handle, priority and the attached program's id (what queryTc looks for). */
  attachTc(ifindex: number, point: number, progFd: number): TcFilter;
  /** The id of the program attached at `point` of `ifindex` as filter `handle`/`priority`; 0 when there is none (no
   *  such device, qdisc or filter). */
  queryTc(ifindex: number, point: number, handle: number, priority: number): number;
  /** Removes the clsact qdisc of `ifindex` with every filter on it; a device without one is fine. */
  destroyTcHook(ifindex: number): void;
  /** bpf_map_update_elem; throws on failure. */
  update(fd: number, key: Buffer, value: Buffer, flags: number): void;
  /** bpf_map_lookup_elem; false when the key is absent. */
  lookup(fd: number, key: Buffer, value: Buffer): boolean;
  /** bpf_map_delete_elem; false when the key was absent. */
  remove(fd: number, key: Buffer): boolean;
  /** bpf_map_get_next_key (key null: the first); false at the end. */
  nextKey(fd: number, key: Buffer | null, next: Buffer): boolean;
  /** How many per-CPU copies a per-CPU map value has. */
  possibleCpus(): number;
  /**
   * BPF_PROG_TEST_RUN (bpf_prog_test_run_opts): run the program `repeat` times on a copy of `frame` in the kernel,
   * without a device; the last run's packet is written to `out`. For the benchmark and the program's tests.
   */
  testRun(progFd: number, frame: Buffer, out: Buffer, repeat: number): TestRunResult;
  /**
   * ring_buffer__new over a BPF_MAP_TYPE_RINGBUF map: `onRecord(pointer, size)` is called for each record from
   * within `consume`, on this thread (the pointer is valid only during the call). Throws on failure.
   */
  openRingBuffer(mapFd: number, onRecord: (data: bigint, size: number) => void): RingBufferHandle;
}

export interface TestRunResult {
  /** The program's return value (a TC_ACT_* verdict). */
  verdict: number;
  /** Bytes of `out` the packet fills. */
  size: number;
  /** Nanoseconds per run, averaged by the kernel. */
  durationNs: number;
}

/** `struct bpf_test_run_opts` (libbpf 1.x): 80 bytes; offsets of the fields used. */
const TEST_RUN_OPTS = { SIZE: 80, DATA_IN: 8, DATA_OUT: 16, SIZE_IN: 24, SIZE_OUT: 28, RETVAL: 56, REPEAT: 60,
  DURATION: 64 } as const;

export interface TcFilter {
  handle: number;
  priority: number;
  programId: number;
}

/** A libbpf ring_buffer: its epoll fd (readable when records wait), consume (every waiting record; their count),
 *  free. */
export interface RingBufferHandle {
  readonly epollFd: number;
  consume(): number;
  free(): void;
}

const ENOENT = 2;
const EEXIST = 17;
const ENODEV = 19;
const EINVAL = 22;

let cached: Libbpf | undefined;

function fail(what: string, err: number): never {
  const errno = Math.abs(err);
  throw new RetroflectError(ErrorCode.BACKEND_FAILED, `libbpf: ${what} failed (errno ${errno}).`, {
    details: { errno },
  });
}

export function libbpf(): Libbpf {
  if (cached) return cached;
  let lib: ReturnType<typeof koffi.load>;
  const file = process.env.RETROFLECT_LIBBPF || LIBBPF_SONAME;
  try {
    lib = koffi.load(file);
  } catch (err) {
    const why = `The libbpf library (${file}) could not be loaded: ${(err as Error).message}`;
    throw new RetroflectError(ErrorCode.BACKEND_UNAVAILABLE, why, {
      hint: 'Install libbpf1 (Debian: apt-get install libbpf1) or run with --backend tun.',
    });
  }
  const errno = (): number => koffi.errno() as number;
  const setPrint = lib.func('void *libbpf_set_print(void *fn)');
  const openMem = lib.func('void *bpf_object__open_mem(const void *buf, size_t size, const void *opts)');
  const load = lib.func('int bpf_object__load(void *obj)');
  const close = lib.func('void bpf_object__close(void *obj)');
  const findMap = lib.func('void *bpf_object__find_map_by_name(void *obj, const char *name)');
  const findProg = lib.func('void *bpf_object__find_program_by_name(void *obj, const char *name)');
  const setMax = lib.func('int bpf_map__set_max_entries(void *map, uint32_t n)');
  const mapFd = lib.func('int bpf_map__fd(void *map)');
  const progFd = lib.func('int bpf_program__fd(void *prog)');
  const hookCreate = lib.func('int bpf_tc_hook_create(void *hook)');
  const hookDestroy = lib.func('int bpf_tc_hook_destroy(void *hook)');
  const tcAttach = lib.func('int bpf_tc_attach(void *hook, void *opts)');
  const tcQuery = lib.func('int bpf_tc_query(void *hook, void *opts)');
  const update = lib.func('int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)');
  const lookup = lib.func('int bpf_map_lookup_elem(int fd, const void *key, void *value)');
  const remove = lib.func('int bpf_map_delete_elem(int fd, const void *key)');
  const nextKey = lib.func('int bpf_map_get_next_key(int fd, const void *key, void *next)');
  const cpus = lib.func('int libbpf_num_possible_cpus(void)');
  const testRun = lib.func('int bpf_prog_test_run_opts(int fd, void *opts)');
  const sampleFn = koffi.proto('int retroflect_ring_sample(void *ctx, void *data, size_t size)');
  const ringNew = lib.func('void *ring_buffer__new(int fd, retroflect_ring_sample *cb, void *ctx, const void *opts)');
  const ringConsume = lib.func('int ring_buffer__consume(void *rb)');
  const ringEpollFd = lib.func('int ring_buffer__epoll_fd(void *rb)');
  const ringFree = lib.func('void ring_buffer__free(void *rb)');
  // libbpf prints its own diagnostics to stderr by default; the engine reports failures itself.
  setPrint(null);

  const hook = (ifindex: number, point: number): Buffer => {
    const b = Buffer.alloc(TC_HOOK_SIZE);
    b.writeBigUInt64LE(BigInt(TC_HOOK_SIZE), 0);
    b.writeInt32LE(ifindex, 8);
    b.writeUInt32LE(point, 12);
    return b;
  };
  const map = (obj: unknown, name: string): unknown => {
    const m = findMap(obj, name);
    if (!m) throw new RetroflectError(ErrorCode.INTERNAL, `The eBPF object has no map ${name}.`);
    return m;
  };
  cached = {
    openObject(bytes, name) {
      // No options: libbpf names the object after the buffer; `name` is for the error only.
      const obj = openMem(bytes, bytes.length, null);
      if (!obj) fail(`opening the program object ${name}`, errno());
      return obj;
    },
    setMaxEntries(obj, name, entries) {
      const err = setMax(map(obj, name), entries) as number;
      if (err < 0) fail(`sizing map ${name}`, err);
    },
    loadObject(obj) {
      const err = load(obj) as number;
      if (err < 0) fail('loading the program into the kernel', err);
    },
    closeObject(obj) {
      close(obj);
    },
    programFd(obj, name) {
      const p = findProg(obj, name);
      if (!p) throw new RetroflectError(ErrorCode.INTERNAL, `The eBPF object has no program ${name}.`);
      return progFd(p) as number;
    },
    mapFd(obj, name) {
      return mapFd(map(obj, name)) as number;
    },
    attachTc(ifindex, point, fd) {
      const h = hook(ifindex, point);
      let err = hookCreate(h) as number;
      if (err < 0 && -err !== EEXIST) fail('creating the clsact qdisc', err);
      const opts = Buffer.alloc(TC_OPTS_SIZE);
      opts.writeBigUInt64LE(BigInt(TC_OPTS_SIZE), 0);
      opts.writeInt32LE(fd, 8);
      err = tcAttach(h, opts) as number;
      if (err < 0) fail('attaching the tc program', err);
      return { programId: opts.readUInt32LE(16), handle: opts.readUInt32LE(20), priority: opts.readUInt32LE(24) };
    },
    queryTc(ifindex, point, handle, priority) {
      const opts = Buffer.alloc(TC_OPTS_SIZE);
      opts.writeBigUInt64LE(BigInt(TC_OPTS_SIZE), 0);
      opts.writeUInt32LE(handle, 20);
      opts.writeUInt32LE(priority, 24);
      const err = tcQuery(hook(ifindex, point), opts) as number;
      if (err < 0 && -err !== ENOENT && -err !== ENODEV && -err !== EINVAL) fail('querying the tc program', err);
      return err === 0 ? opts.readUInt32LE(16) : 0;
    },
    destroyTcHook(ifindex) {
      const err = hookDestroy(hook(ifindex, BPF_TC_INGRESS | BPF_TC_EGRESS)) as number;
      // No such device (ENODEV) or no clsact qdisc on it (ENOENT, EINVAL) is what we wanted.
      if (err < 0 && -err !== ENOENT && -err !== ENODEV && -err !== EINVAL) fail('removing the clsact qdisc', err);
    },
    update(fd, key, value, flags) {
      const err = update(fd, key, value, flags) as number;
      if (err < 0) fail('updating a map', err);
    },
    lookup(fd, key, value) {
      const err = lookup(fd, key, value) as number;
      if (err < 0 && -err !== ENOENT) fail('reading a map', err);
      return err === 0;
    },
    remove(fd, key) {
      const err = remove(fd, key) as number;
      if (err < 0 && -err !== ENOENT) fail('deleting from a map', err);
      return err === 0;
    },
    nextKey(fd, key, next) {
      const err = nextKey(fd, key, next) as number;
      if (err < 0 && -err !== ENOENT) fail('walking a map', err);
      return err === 0;
    },
    possibleCpus() {
      const n = cpus() as number;
      if (n <= 0) fail('counting CPUs', n);
      return n;
    },
    testRun(progFd, frame, out, repeat) {
      const o = TEST_RUN_OPTS;
      const opts = Buffer.alloc(o.SIZE);
      opts.writeBigUInt64LE(BigInt(o.SIZE), 0);
      opts.writeBigUInt64LE(koffi.address(frame) as bigint, o.DATA_IN);
      opts.writeBigUInt64LE(koffi.address(out) as bigint, o.DATA_OUT);
      opts.writeUInt32LE(frame.length, o.SIZE_IN);
      opts.writeUInt32LE(out.length, o.SIZE_OUT);
      opts.writeInt32LE(repeat, o.REPEAT);
      const err = testRun(progFd, opts) as number;
      if (err < 0) fail('test-running the program', err);
      return {
        verdict: opts.readUInt32LE(o.RETVAL),
        size: opts.readUInt32LE(o.SIZE_OUT),
        durationNs: opts.readUInt32LE(o.DURATION),
      };
    },
    openRingBuffer(fd, onRecord) {
      // Registered (not transient): libbpf keeps the pointer for the ring's lifetime. A throw inside would reach C
      // as 0 ("go on"), so the callback never throws.
      const cb = koffi.register((_ctx: unknown, data: bigint, size: number | bigint): number => {
        onRecord(data, Number(size));
        return 0;
      }, koffi.pointer(sampleFn));
      const rb = ringNew(fd, cb, null, null);
      if (!rb) {
        koffi.unregister(cb);
        fail('opening the capture ring buffer', errno());
      }
      let open = true;
      return {
        epollFd: ringEpollFd(rb) as number,
        consume() {
          const n = ringConsume(rb) as number;
          if (n < 0) fail('reading the capture ring buffer', n);
          return n;
        },
        free() {
          if (!open) return;
          open = false;
          ringFree(rb);
          koffi.unregister(cb);
        },
      };
    },
  };
  return cached;
}
