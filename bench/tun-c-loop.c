/*
 * Bench-only reference: the retroflect TUN packet loop written as plainly as possible in C, to show what the
 * design (one TUN device, read -> swap source/destination -> write back) can do on this machine without Node,
 * koffi or the data plane. bench/reflect-path.ts compiles it with gcc into .tmp/ and runs it in its namespace.
 *
 * Usage: tun-c-loop <device> <vnet|plain> [napi] [spin]
 *   vnet:  IFF_TUN | IFF_NO_PI | IFF_VNET_HDR and TUNSETOFFLOAD(CSUM | TSO4 | TSO6), like the engine's default.
 *   plain: IFF_TUN | IFF_NO_PI.
 *   napi:  also IFF_NAPI (written packets go through the device's NAPI context and GRO, not straight up the stack).
 *   spin:  when the device is empty, keep trying to read for SPIN_NS before sleeping in poll (busy polling).
 * Prints "ready" once the device exists; the caller brings the link up and adds routes. Runs until killed.
 * Every packet read is reflected (the caller routes only the reflect address into the device); packets that are
 * neither IPv4 nor IPv6 are dropped. Batch size is fixed at build time (-DBATCH=N, default 64, as in the engine).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

/* struct virtio_net_hdr: the default vnet header size of a TUN device. */
#define VNET_HDR_LEN 10
/* Largest IP packet (a GSO packet with TSO on) plus its vnet header. */
#define SLOT_SIZE (VNET_HDR_LEN + 65535)
/* Packets read before writing any back: the same batch size as the engine (TUN_BATCH_CAPACITY). */
#ifndef BATCH
#define BATCH 64
#endif

/* How long "spin" keeps reading an empty device before sleeping: a few round trips of the ping-pong test. */
#define SPIN_NS 50000

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static unsigned char slots[BATCH][SLOT_SIZE];
static ssize_t lengths[BATCH];

/* Swap the source and destination addresses in place (checksums stay valid: they are order-free sums). */
static int reflect(unsigned char *ip, ssize_t len) {
  unsigned char tmp[16];
  int version = len > 0 ? ip[0] >> 4 : 0;
  size_t off, size;
  if (version == 4 && len >= 20) off = 12, size = 4;
  else if (version == 6 && len >= 40) off = 8, size = 16;
  else return 0;
  memcpy(tmp, ip + off, size);
  memcpy(ip + off, ip + off + size, size);
  memcpy(ip + off + size, tmp, size);
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 3 || argc > 5) {
    fprintf(stderr, "usage: %s <device> <vnet|plain> [napi] [spin]\n", argv[0]);
    return 2;
  }
  int vnet = strcmp(argv[2], "vnet") == 0;
  int napi = 0, spin = 0;
  for (int a = 3; a < argc; a++) {
    if (strcmp(argv[a], "napi") == 0) napi = 1;
    else if (strcmp(argv[a], "spin") == 0) spin = 1;
    else return fprintf(stderr, "unknown option %s\n", argv[a]), 2;
  }
  size_t hdr = vnet ? VNET_HDR_LEN : 0;
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return perror("open /dev/net/tun"), 1;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strncpy(ifr.ifr_name, argv[1], IFNAMSIZ - 1);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (vnet ? IFF_VNET_HDR : 0) | (napi ? IFF_NAPI : 0);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) return perror("TUNSETIFF"), 1;
  if (vnet && ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) < 0) return perror("TUNSETOFFLOAD"), 1;
  printf("ready\n");
  fflush(stdout);

  struct pollfd pfd = {.fd = fd, .events = POLLIN};
  long long idle_since = 0;
  for (;;) {
    int n = 0;
    while (n < BATCH) {
      ssize_t got = read(fd, slots[n], SLOT_SIZE);
      if (got < 0) {
        if (errno == EAGAIN || errno == EINTR) break;
        return perror("read"), 1;
      }
      if ((size_t)got <= hdr) continue;
      lengths[n++] = got;
    }
    if (n == 0) {
      /* Empty: wait, like the engine (try the read first, poll only when the device is empty). */
      if (spin) {
        long long t = now_ns();
        if (idle_since == 0) idle_since = t;
        if (t - idle_since < SPIN_NS) continue;
      }
      idle_since = 0;
      if (poll(&pfd, 1, 50) < 0 && errno != EINTR) return perror("poll"), 1;
      continue;
    }
    idle_since = 0;
    for (int i = 0; i < n; i++) {
      if (reflect(slots[i] + hdr, lengths[i] - (ssize_t)hdr)) (void)write(fd, slots[i], (size_t)lengths[i]);
    }
  }
}
