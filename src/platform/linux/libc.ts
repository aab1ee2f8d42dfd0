/**
 * The few libc calls the Linux backend needs, bound with koffi. Loaded lazily so that importing this module on
 * Windows (or in a test that never touches a device) costs nothing. Both the main thread (open/ioctl/eventfd) and
 * the worker thread (poll/read/write) load their own binding; file descriptors are process-wide, so an fd opened in
 * one thread is valid in the other.
 */
import koffi from 'koffi';

/** open(2) flags and errno values for Linux x86_64/aarch64 (asm-generic/fcntl.h, asm-generic/errno-base.h). */
export const O_RDWR = 0o2;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;
export const EINTR = 4;
export const EAGAIN = 11;
export const ENOBUFS = 105;

/** socket(2) constants (linux/socket.h, linux/netlink.h): a netlink socket to the kernel's netfilter subsystem. */
export const AF_NETLINK = 16;
export const SOCK_RAW = 3;
export const SOCK_NONBLOCK = O_NONBLOCK;
export const SOCK_CLOEXEC = O_CLOEXEC;
export const NETLINK_NETFILTER = 12;

/** poll(2) event bits (asm-generic/poll.h). */
export const POLLIN = 0x001;
export const POLLERR = 0x008;
export const POLLHUP = 0x010;
export const POLLNVAL = 0x020;

/** eventfd(2) flags: EFD_NONBLOCK = O_NONBLOCK, EFD_CLOEXEC = O_CLOEXEC. */
export const EFD_NONBLOCK = O_NONBLOCK;
export const EFD_CLOEXEC = O_CLOEXEC;

/** `struct pollfd { int fd; short events; short revents; }`: 8 bytes, revents at offset 6. */
export const POLLFD_SIZE = 8;

export interface Libc {
  open(path: string, flags: number): number;
  close(fd: number): number;
  /** ioctl with a pointer argument (a Buffer the kernel reads or fills). */
  ioctlPtr(fd: number, request: number, arg: Buffer): number;
  /** ioctl with a plain integer argument (TUNSETOFFLOAD takes the flags by value). */
  ioctlInt(fd: number, request: number, arg: number): number;
  poll(fds: Buffer, nfds: number, timeoutMs: number): number;
  read(fd: number, buf: Buffer, count: number): number;
  write(fd: number, buf: Buffer, count: number): number;
  eventfd(initval: number, flags: number): number;
  socket(domain: number, type: number, protocol: number): number;
  /** bind(2) with the address as raw bytes (a sockaddr the caller laid out). */
  bind(fd: number, addr: Buffer, addrlen: number): number;
  /** setsockopt(2) with the option value as raw bytes. */
  setsockopt(fd: number, level: number, name: number, value: Buffer): number;
  /** getsockname(2) into `addr` (a sockaddr buffer); `addrlen` holds its size as a 4-byte socklen_t. */
  getsockname(fd: number, addr: Buffer, addrlen: Buffer): number;
  strerror(errnum: number): string;
  errno(): number;
}

let cached: Libc | undefined;

export function libc(): Libc {
  if (cached) return cached;
  const lib = koffi.load('libc.so.6');
  const open = lib.func('int open(const char *path, int flags)');
  const close = lib.func('int close(int fd)');
  const ioctl = lib.func('int ioctl(int fd, unsigned long request, ...)');
  const poll = lib.func('int poll(void *fds, unsigned long nfds, int timeout)');
  const read = lib.func('long read(int fd, void *buf, unsigned long count)');
  const write = lib.func('long write(int fd, const void *buf, unsigned long count)');
  const eventfd = lib.func('int eventfd(unsigned int initval, int flags)');
  const strerror = lib.func('const char *strerror(int errnum)');
  const socket = lib.func('int socket(int domain, int type, int protocol)');
  const bind = lib.func('int bind(int fd, const void *addr, unsigned int addrlen)');
  const setsockopt = lib.func('int setsockopt(int fd, int level, int name, const void *value, unsigned int len)');
  const getsockname = lib.func('int getsockname(int fd, void *addr, void *addrlen)');
  cached = {
    open: (path, flags) => open(path, flags) as number,
    close: (fd) => close(fd) as number,
    ioctlPtr: (fd, request, arg) => ioctl(fd, request, 'void *', arg) as number,
    ioctlInt: (fd, request, arg) => ioctl(fd, request, 'unsigned long', arg) as number,
    poll: (fds, nfds, timeoutMs) => poll(fds, nfds, timeoutMs) as number,
    read: (fd, buf, count) => Number(read(fd, buf, count)),
    write: (fd, buf, count) => Number(write(fd, buf, count)),
    eventfd: (initval, flags) => eventfd(initval, flags) as number,
    socket: (domain, type, protocol) => socket(domain, type, protocol) as number,
    bind: (fd, addr, addrlen) => bind(fd, addr, addrlen) as number,
    setsockopt: (fd, level, name, value) => setsockopt(fd, level, name, value, value.length) as number,
    getsockname: (fd, addr, addrlen) => getsockname(fd, addr, addrlen) as number,
    strerror: (errnum) => strerror(errnum) as string,
    errno: () => koffi.errno(),
  };
  return cached;
}
