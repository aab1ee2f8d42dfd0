// The Linux kernel data path of the ebpf backend (src/packet-sources/ebpf/): a tc (clsact) egress program on the
// engine's own veth device, which the reflect addresses are routed into. Every packet it sees was sent by this host.
// For the common packet to a reflect address it does what engine/dataplane.ts does, without a copy: swap source and
// destination in place (sum-neutral: every checksum stays valid, partial/offloaded ones too), count it per address
// and protocol, record its flow, and redirect it to the same device's ingress, where the host receives it "from" the
// reflect address. Everything else it hands to user space unchanged (TC_ACT_OK: out of the veth to its peer, where
// the engine's packet socket reads it and the TypeScript data plane decides, counts and re-injects it exactly as for
// the TUN backend): not to a reflect address, malformed or truncated, IPv4 fragments, IPv6 extension headers,
// protocols other than TCP/UDP/ICMP/ICMPv6, on addresses with a port allow list the TCP/UDP packets that list does not
// allow (REFLECT_PORT_LIST: user space refuses them), and on addresses with port maps the packets those maps may
// concern (REFLECT_PORT_MAPS) unless they belong to a mapped flow the user-space mapper has handed to the kernel
// (mapped_flows: then the program also rewrites the port, with an incremental checksum update).
// While a capture runs, a packet it reflects that some capture might want (a union of the captures' filters) is also
// copied, up to the longest snap length, into a BPF ring buffer; the engine's worker reads it
// (src/packet-sources/ebpf/ring-buffer.ts) and offers it to the taps, which match each one exactly. With no capture
// that costs one (inlined) array lookup per packet.
// ICMP/ICMPv6 errors are reflected here with the packet they carry (its addresses swapped too, as packet/icmp-error.ts
// does): the client's socket recognises the error by that packet, which must read as the client sent it.
// Keeping those in one place (the user-space data plane) is what keeps counters and verdicts meaning the same.
//
// Map layouts are mirrored in src/packet-sources/ebpf/maps.ts (mapped_flows' in mapped-flows.ts); change both together.

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// Stats protocol index (engine/counters.ts StatsProto): tcp, udp, icmp (ICMPv6 too), other.
#define PROTO_TCP 0
#define PROTO_UDP 1
#define PROTO_ICMP 2
#define STATS_PROTOS 4

// reflect_value.flags. REFLECT_PORT_LIST: it has a port allow list (allowed_ports); a TCP/UDP packet the list does not
// allow goes to the user-space data plane, which refuses it (port_list_refuses). REFLECT_PORT_MAPS: it has port maps;
// a TCP/UDP packet with a port some map names (port_roles) goes to the user-space data plane, where
// engine/port-mapper.ts keeps the mapped flows, unless its flow is in mapped_flows (then it is rewritten and
// reflected here), and so does every ICMP error; the rest is reflected here. A flow's ports are the same both ways,
// so a flow no map names never splits.
#define REFLECT_PORT_LIST 1
#define REFLECT_PORT_MAPS 2

// Flow states, as engine/flow-table.ts names them: active (not TCP), open, closed (FIN or RST seen).
#define FLOW_ACTIVE 0
#define FLOW_OPEN 1
#define FLOW_CLOSED 2

// What the program reads must sit in the linear part of the packet. The stack's own packets carry their headers
// there; only when they do not is the packet pulled (bpf_skb_pull_data may copy), and only as far as needed:
// Ethernet + the IP header (with IPv4 options) + the transport header's fixed part, or for an ICMP error the
// 8-byte ICMP header and the embedded IP header (IPv4 with options, or IPv6).
#define TCP_FIXED 20
#define ICMP_HEADER 8

// read_transport results.
#define L4_PUNT 0
#define L4_OK 1
#define L4_ICMP_ERROR 2

// Reflect addresses, IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d). Size set by the loader (MAX_REFLECT_ADDRESSES).
struct reflect_key {
	__u8 addr[16];
};
struct reflect_value {
	__u32 slot;  // index into addr_counts (slot * STATS_PROTOS + proto)
	__u32 flags; // REFLECT_*
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, struct reflect_key);
	__type(value, struct reflect_value);
} reflect_addrs SEC(".maps");

// [0 * 65536 + port] for TCP, [1 * 65536 + port] for UDP: non-zero when some port map (on any address) names the port,
// as its mapped port or its target. An array: the verifier inlines the lookup.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * 65536);
	__type(key, __u32);
	__type(value, __u8);
} port_roles SEC(".maps");

// The port allow lists of addresses with REFLECT_PORT_LIST, as packet/allowed-ports.ts keeps them: per reflect slot
// four 65536-bit sets (tcp open, tcp reply, udp open, udp reply) of ALLOWED_WORDS u64 words each, port p being bit
// p % 64 of word p / 64; the set's word w of a slot sits at (slot * ALLOWED_SETS + set) * ALLOWED_WORDS + w. `open`:
// the ports a client may open a flow to (the list and the address's port maps); `reply`: the ports the local server
// answers from (those and the maps' targets). An array: the verifier inlines the lookup. Size set by the loader.
#define ALLOWED_SETS 4
#define ALLOWED_WORDS 1024
#define ALLOWED_TCP_OPEN 0
#define ALLOWED_UDP_OPEN 2 // each `open` set's `reply` set follows it
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} allowed_ports SEC(".maps");

struct counts {
	__u64 packets;
	__u64 bytes;
};
// Per reflect-address slot and protocol, per CPU (no atomics on the hot path). Size set by the loader.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counts);
} addr_counts SEC(".maps");

// One conversation through a reflect address, keyed as engine/flow-table.ts keys it: both directions are packets
// this host sends to R, so (family, protocol, R, L, low port, high port) needs no swapping.
struct flow_key {
	__u8 family;
	__u8 protocol;
	__u16 low_port;  // host order; the ICMP echo identifier for echo messages
	__u16 high_port;
	__u16 pad;
	__u8 reflect[16];
	__u8 local[16];
};
// Per CPU: a flow's two directions are usually handled on different CPUs, so a shared value would bounce between
// their caches with every packet (and need atomics). User space (maps.ts) merges the copies: first seen the earliest,
// last seen the latest, packets and bytes summed, ports from a copy that saw the SYN, state closed if any saw the end.
// A copy with packets == 0 is one this CPU has not written yet (the kernel zeroes the others on insert).
struct flow_value {
	__u64 first_ns; // bpf_ktime_get_coarse_ns (CLOCK_MONOTONIC, tick resolution)
	__u64 last_ns;
	__u64 packets;
	__u64 bytes;
	__u16 client_port;
	__u16 server_port;
	__u8 state;    // FLOW_*
	__u8 syn_seen; // this copy saw the opening SYN (or a cached mapped flow's entry): its ports say who is the client
	__u16 mapped_port; // a port-mapped flow: the port the client used (engine/flow-table.ts mappedFrom); else 0
};
struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct flow_key);
	__type(value, struct flow_value);
} flows SEC(".maps");

// Port-mapped flows the user-space mapper (engine/port-mapper.ts) handed to the kernel: a cache of its decisions,
// never a second authority. The mapper alone creates, ends and forgets mapped flows; it adds a flow's two entries
// (one per direction) only once the server has answered (so its eviction, which takes unanswered flows only, never
// meets a cached flow) and deletes them whenever it forgets the flow (finished, idle, its map or address removed).
// Keyed by the packet as this host sends it: the client's L:c -> R:P and the server's L:T -> R:c.
struct mapped_key {
	__u8 family;
	__u8 protocol;
	__u16 src_port; // host order
	__u16 dst_port;
	__u16 pad;
	__u8 reflect[16];
	__u8 local[16];
};
struct mapped_value {
	__u16 src_port;    // the ports the packet leaves with (host order): one of them differs from the key's
	__u16 dst_port;
	__u16 client_port; // the flow as the local server sees it (c, T) and the port the client used (P)
	__u16 server_port;
	__u16 mapped_port;
	__u16 pad;
	__u32 pad2;
	__u64 last_ns; // bpf_ktime_get_coarse_ns when the program last rewrote a packet by this entry (0: never)
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, struct mapped_key);
	__type(value, struct mapped_value);
} mapped_flows SEC(".maps");

// Settings the engine changes live. An array lookup is inlined by the verifier: no helper call per packet.
// While captures run, a reflected packet some capture might want is copied into the capture ring: wanted = reflected
// packets wanted, protocol in protocols, and (any_address or an address in capture_addrs) and (any_port or a TCP/UDP
// port in capture_ports). A superset of what the captures match.
struct settings {
	__u32 capture;     // 1: at least one capture runs and wants reflected packets
	__u32 protocols;   // bits: 1 tcp, 2 udp, 4 icmp (capture/filter.ts CAPTURE_PROTOCOLS order)
	__u32 any_address; // 1: some capture has no address filter
	__u32 any_port;    // 1: some capture has no port filter
	__u32 snaplen;     // bytes of IP packet to copy at most (the captures' longest snap length)
};
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct settings);
} settings SEC(".maps");

// Addresses (as reflect_key) and ports the running captures filter on. Sizes set by the loader.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, struct reflect_key);
	__type(value, __u8);
} capture_addrs SEC(".maps");
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u16);
	__type(value, __u8);
} capture_ports SEC(".maps");

// The capture ring: one record per copied packet, a capture_record then cap_len bytes of the IP packet as reflected.
// Its size is set by the loader (KERNEL_CAPTURE_RING_BYTES in maps.ts).
#define MAX_CAPTURE 65536
struct capture_record {
	__u64 time_ns;  // bpf_ktime_get_ns
	__u32 wire_len; // the IP packet's length
	__u32 cap_len;  // bytes that follow
	__u16 src_port; // after reflection (TCP/UDP; 0 otherwise)
	__u16 dst_port;
	__u8 family;
	__u8 protocol;
	__u16 pad;
};
struct capture_scratch {
	struct capture_record head;
	__u8 data[MAX_CAPTURE];
};
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} capture_ring SEC(".maps");
// Where a record is assembled before it is copied into the ring (bpf_ringbuf_reserve takes constant sizes only): one
// entry per CPU (the loader sizes it), indexed by the current CPU. A tc program runs with bottom halves off, so
// nothing else on this CPU uses the entry meanwhile. (A per-CPU array's values are limited to 32 KiB.)
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct capture_scratch);
} capture_scratch SEC(".maps");
// Records the ring had no room for, per CPU: the captures count them as dropped.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} capture_lost SEC(".maps");

// Copy the (already reflected) packet into the capture ring.
static __always_inline void capture_copy(struct __sk_buff *skb, struct settings *s, struct flow_key *key, __u16 sport,
					 __u16 dport, __u32 ip_len)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct capture_scratch *c = bpf_map_lookup_elem(&capture_scratch, &cpu);
	if (!c)
		return;
	__u64 cap = ip_len < s->snaplen ? ip_len : s->snaplen;
	if (cap > MAX_CAPTURE - 1)
		cap = MAX_CAPTURE - 1;
	// The verifier must see the bound on the very register passed on: keep the compiler from dropping the mask.
	asm volatile("" : "+r"(cap));
	cap &= MAX_CAPTURE - 1;
	if (cap == 0)
		return;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, c->data, cap) < 0)
		return;
	c->head.time_ns = bpf_ktime_get_ns();
	c->head.wire_len = ip_len;
	c->head.cap_len = cap;
	c->head.src_port = sport; // only the addresses trade places
	c->head.dst_port = dport;
	c->head.family = key->family;
	c->head.protocol = key->protocol;
	if (bpf_ringbuf_output(&capture_ring, c, sizeof(c->head) + cap, 0) < 0) {
		__u32 zero = 0;
		__u64 *lost = bpf_map_lookup_elem(&capture_lost, &zero);
		if (lost)
			*lost += 1;
	}
}

static __always_inline int capture_wants(struct settings *s, struct flow_key *key, __u16 sport, __u16 dport)
{
	__u32 bit = key->protocol == IPPROTO_TCP ? 1 : key->protocol == IPPROTO_UDP ? 2 : 4;
	if (!(s->protocols & bit))
		return 0;
	if (!s->any_port) {
		if (bit == 4)
			return 0; // a port filter matches TCP and UDP only
		if (!bpf_map_lookup_elem(&capture_ports, &sport) && !bpf_map_lookup_elem(&capture_ports, &dport))
			return 0;
	}
	if (s->any_address)
		return 1;
	struct reflect_key a = {};
	if (key->family == 4) {
		a.addr[10] = 0xff;
		a.addr[11] = 0xff;
		__builtin_memcpy(&a.addr[12], key->reflect, 4);
		if (bpf_map_lookup_elem(&capture_addrs, &a))
			return 1;
		__builtin_memcpy(&a.addr[12], key->local, 4);
	} else {
		__builtin_memcpy(a.addr, key->reflect, 16);
		if (bpf_map_lookup_elem(&capture_addrs, &a))
			return 1;
		__builtin_memcpy(a.addr, key->local, 16);
	}
	return bpf_map_lookup_elem(&capture_addrs, &a) != 0;
}

static __always_inline void count(__u32 slot, __u32 proto, __u64 bytes)
{
	__u32 at = slot * STATS_PROTOS + proto;
	struct counts *c = bpf_map_lookup_elem(&addr_counts, &at);
	if (c) {
		c->packets += 1;
		c->bytes += bytes;
	}
}

static __always_inline void record_mapped(struct flow_value *f, struct mapped_value *m)
{
	f->client_port = m->client_port;
	f->server_port = m->server_port;
	f->mapped_port = m->mapped_port;
	f->syn_seen = 1;
}

// `m`: the packet belongs to a cached mapped flow (sport/dport are then the server side's, as the key's ports): its
// ports and mapped port come from the entry, since the opening SYN that would name the client went to user space.
static __always_inline void record_flow(struct flow_key *key, __u16 sport, __u16 dport, __u8 tcp_flags, __u64 bytes,
					struct mapped_value *m)
{
	// The coarse clock (CLOCK_MONOTONIC at tick resolution, a few ms) is enough for a flow's ages and costs about
	// 15% of the program's time less than the precise one (BPF_PROG_TEST_RUN: ~66 vs ~80 ns per packet).
	__u64 now = bpf_ktime_get_coarse_ns();
	int tcp = key->protocol == IPPROTO_TCP;
	int syn_only = tcp && (tcp_flags & 0x12) == 0x02;
	int ends = tcp && (tcp_flags & 0x05) != 0;
	struct flow_value *f = bpf_map_lookup_elem(&flows, key);
	if (f && f->packets != 0) {
		// This CPU's own copy: plain stores, no atomics.
		f->packets += 1;
		f->bytes += bytes;
		f->last_ns = now;
		if (syn_only) {
			f->client_port = sport;
			f->server_port = dport;
			f->syn_seen = 1;
			f->state = FLOW_OPEN;
		}
		if (ends)
			f->state = FLOW_CLOSED;
		if (m)
			record_mapped(f, m);
		return;
	}
	struct flow_value v = {
		.first_ns = now,
		.last_ns = now,
		.packets = 1,
		.bytes = bytes,
		.client_port = syn_only ? sport : key->high_port,
		.server_port = syn_only ? dport : key->low_port,
		.state = tcp ? (ends ? FLOW_CLOSED : FLOW_OPEN) : FLOW_ACTIVE,
		.syn_seen = syn_only,
	};
	if (!tcp && key->protocol != IPPROTO_UDP) {
		v.client_port = key->low_port;
		v.server_port = 0;
	}
	if (m)
		record_mapped(&v, m);
	if (f) {
		*f = v; // the entry exists (another CPU made it); this CPU's copy starts now
		return;
	}
	bpf_map_update_elem(&flows, key, &v, BPF_NOEXIST);
}

// Ports of a TCP/UDP header, the echo identifier of an ICMP echo (L4_OK); L4_ICMP_ERROR for an ICMP error (no
// identifier: one flow per address pair, as in flow-table.ts); L4_PUNT when the header cannot be decided here.
static __always_inline int read_transport(void *l4, void *end, __u8 proto, __u32 avail, int v6, struct flow_key *key,
					  __u16 *sport, __u16 *dport, __u8 *tcp_flags)
{
	if (proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;
		if ((void *)(th + 1) > end || avail < sizeof(*th))
			return L4_PUNT;
		__u32 doff = th->doff * 4;
		if (doff < sizeof(*th) || doff > avail)
			return L4_PUNT;
		*sport = bpf_ntohs(th->source);
		*dport = bpf_ntohs(th->dest);
		*tcp_flags = ((__u8 *)th)[13];
	} else if (proto == IPPROTO_UDP) {
		struct udphdr *uh = l4;
		if ((void *)(uh + 1) > end || avail < sizeof(*uh))
			return L4_PUNT;
		__u32 ulen = bpf_ntohs(uh->len);
		if (ulen < sizeof(*uh) || ulen > avail)
			return L4_PUNT;
		*sport = bpf_ntohs(uh->source);
		*dport = bpf_ntohs(uh->dest);
	} else if (proto == (v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP)) {
		__u8 *ih = l4;
		if ((void *)(ih + ICMP_HEADER) > end || avail < ICMP_HEADER)
			return L4_PUNT;
		__u8 type = ih[0];
		// The error types of packet/parse.ts: destination unreachable, packet too big (v6), time exceeded,
		// parameter problem. (IPv4 source quench and redirect are not errors there either.)
		if (v6 ? (type >= 1 && type <= 4) : (type == 3 || type == 11 || type == 12))
			return L4_ICMP_ERROR;
		int echo = v6 ? (type == 128 || type == 129) : (type == 0 || type == 8);
		key->low_port = echo ? ((__u16)ih[4] << 8 | ih[5]) : 0;
		return L4_OK;
	} else {
		return L4_PUNT; // other protocols are rare here; the user-space path counts them as "other"
	}
	key->low_port = *sport < *dport ? *sport : *dport;
	key->high_port = *sport < *dport ? *dport : *sport;
	return L4_OK;
}

// The packet inside an ICMP error, when its whole IP header is there and could have been sent (icmp-error.ts):
// swap its addresses. Both lie inside every checksum that covers them, so the swap keeps all sums valid.
static __always_inline void swap_embedded_v4(void *e, void *end, __u32 avail)
{
	struct iphdr *in = e;
	if ((void *)(in + 1) > end || avail < sizeof(*in))
		return;
	__u32 hlen = in->ihl * 4;
	if (in->version != 4 || hlen < sizeof(*in) || hlen > avail || bpf_ntohs(in->tot_len) < hlen)
		return;
	__u32 a = in->saddr;
	in->saddr = in->daddr;
	in->daddr = a;
}

static __always_inline void swap_embedded_v6(void *e, void *end, __u32 avail)
{
	struct ipv6hdr *in = e;
	if ((void *)(in + 1) > end || avail < sizeof(*in) || in->version != 6)
		return;
	struct in6_addr a = in->saddr;
	in->saddr = in->daddr;
	in->daddr = a;
}

static __always_inline __u32 stats_proto(__u8 proto)
{
	return proto == IPPROTO_TCP ? PROTO_TCP : proto == IPPROTO_UDP ? PROTO_UDP : PROTO_ICMP;
}

// Whether a packet to an address with port maps must go to the user-space path (see REFLECT_PORT_MAPS).
static __always_inline int maps_concern(int l4kind, __u8 proto, __u16 sport, __u16 dport)
{
	if (l4kind == L4_ICMP_ERROR)
		return 1; // its quoted packet may belong to a mapped flow, whose quoted port user space maps back
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;
	__u32 base = proto == IPPROTO_TCP ? 0 : 65536;
	__u32 k = base + sport;
	__u8 *role = bpf_map_lookup_elem(&port_roles, &k);
	if (role && *role)
		return 1;
	k = base + dport;
	role = bpf_map_lookup_elem(&port_roles, &k);
	return role && *role;
}

static __always_inline int port_allowed(__u32 slot, __u32 set, __u16 port)
{
	__u32 k = (slot * ALLOWED_SETS + set) * ALLOWED_WORDS + (port >> 6);
	__u64 *w = bpf_map_lookup_elem(&allowed_ports, &k);
	return w && ((*w >> (port & 63)) & 1);
}

// Whether a packet to an address with a port list must go to the user-space path, which refuses it (the rule of
// packet/allowed-ports.ts `allows`, decided on the ports the client used, before any port map): a TCP SYN without
// ACK must go to an `open` port; every other TCP segment and every UDP datagram is allowed when it goes to an `open`
// port or comes from a `reply` port. ICMP (echo and errors) names no port and is allowed, as engine/dataplane.ts
// allows it; other protocols never get here (the user-space path refuses them).
static __always_inline int port_list_refuses(__u32 slot, __u8 proto, __u16 sport, __u16 dport, __u8 tcp_flags)
{
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;
	__u32 open = proto == IPPROTO_TCP ? ALLOWED_TCP_OPEN : ALLOWED_UDP_OPEN;
	if (port_allowed(slot, open, dport))
		return 0;
	if (proto == IPPROTO_TCP && (tcp_flags & 0x12) == 0x02)
		return 1;
	return !port_allowed(slot, open + 1, sport);
}

// The cached mapped flow (mapped_flows) of a TCP/UDP packet on an address with port maps whose ports some map names;
// NULL sends it to the user-space path: no entry, or a TCP segment with SYN, FIN or RST (the mapper sees every change
// of a flow's state, and ends or restarts flows by them). A hit notes the time, for the mapper's idle expiry.
static __always_inline struct mapped_value *mapped_flow(struct flow_key *key, __u16 sport, __u16 dport, __u8 tcp_flags)
{
	if (key->protocol == IPPROTO_TCP && (tcp_flags & 0x07))
		return 0;
	if (key->protocol != IPPROTO_TCP && key->protocol != IPPROTO_UDP)
		return 0;
	struct mapped_key k = {.family = key->family, .protocol = key->protocol, .src_port = sport, .dst_port = dport};
	__builtin_memcpy(k.reflect, key->reflect, 16);
	__builtin_memcpy(k.local, key->local, 16);
	struct mapped_value *m = bpf_map_lookup_elem(&mapped_flows, &k);
	if (!m)
		return 0;
	__u64 now = bpf_ktime_get_coarse_ns();
	if (m->last_ns != now) // at most once per clock tick: the entry's cache line stays put between CPUs
		m->last_ns = now;
	return m;
}

// Set one port (at l4 + which: 0 source, 2 destination) from `from` to `to`. The checksum first, so a failure there
// leaves the packet as it was (1: take the user-space path). bpf_l4_csum_replace without BPF_F_PSEUDO_HDR (a port is
// data, not pseudo-header) updates a full checksum incrementally and leaves a partial (CHECKSUM_PARTIAL, offloaded)
// one alone: that field holds the pseudo-header sum only and the port is summed later with the data. For UDP,
// BPF_F_MARK_MANGLED_0 keeps a checksum 0 ("none") at 0 and writes a computed 0 as 0xffff, as packet/port-rewrite.ts
// does. -1: the checksum changed but the port could not be written: the packet must be dropped.
static __always_inline int rewrite_port(struct __sk_buff *skb, __u32 l4, __u8 proto, __u32 which, __u16 from, __u16 to)
{
	if (from == to)
		return 0;
	__u32 csum_at = l4 + (proto == IPPROTO_TCP ? 16 : 6);
	__u64 flags = sizeof(__u16) | (proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0);
	__be16 old_port = bpf_htons(from);
	__be16 new_port = bpf_htons(to);
	if (bpf_l4_csum_replace(skb, csum_at, old_port, new_port, flags) < 0)
		return 1;
	return bpf_skb_store_bytes(skb, l4 + which, &new_port, sizeof(new_port), 0) < 0 ? -1 : 0;
}

// Rewrite the packet's ports as its cached mapped flow says (transport header at byte l4 of the frame), and leave in
// *dport, with *sport, the ports the flow table and the captures know the packet by: the server side's (as the
// user-space mapper leaves ParsedPacket's: c -> T for the client's packets, T -> c for the server's), with the key's
// ports to match. 0 done, 1 untouched (user-space path), -1 drop (see rewrite_port).
static __always_inline int map_ports(struct __sk_buff *skb, __u32 l4, struct flow_key *key, __u16 *sport,
				     __u16 *dport, struct mapped_value *m)
{
	int r = rewrite_port(skb, l4, key->protocol, 0, *sport, m->src_port);
	if (r != 0)
		return r;
	r = rewrite_port(skb, l4, key->protocol, 2, *dport, m->dst_port);
	if (r != 0)
		return *sport != m->src_port ? -1 : r; // the source port was already rewritten: no way back
	*dport = m->dst_port;
	key->low_port = m->client_port < m->server_port ? m->client_port : m->server_port;
	key->high_port = m->client_port < m->server_port ? m->server_port : m->client_port;
	return 0;
}

// Make the first `need` bytes linear (and readable by direct access); < 0 when the packet is shorter or the pull
// failed. The common packet already has them: one comparison.
static __always_inline int linear(struct __sk_buff *skb, __u32 need)
{
	if (need > skb->len)
		return -1;
	if ((void *)(long)skb->data + need <= (void *)(long)skb->data_end)
		return 0;
	return bpf_skb_pull_data(skb, need);
}

// The fixed part of the transport headers read_transport reads; 0 for a protocol the program leaves to user space.
static __always_inline __u32 transport_fixed(__u8 proto, int v6)
{
	if (proto == IPPROTO_TCP)
		return TCP_FIXED;
	if (proto == IPPROTO_UDP || proto == (v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP))
		return ICMP_HEADER; // UDP's header is 8 bytes too
	return 0;
}

// Everything after the packet is known to be reflected here: the flow, the counters, the capture copy, the redirect.
static __always_inline int finish(struct __sk_buff *skb, struct settings *s, int wanted, __u32 slot,
				  struct flow_key *key, __u16 sport, __u16 dport, __u8 tcp_flags, __u32 ip_len,
				  struct mapped_value *m)
{
	record_flow(key, sport, dport, tcp_flags, ip_len, m);
	count(slot, stats_proto(key->protocol), ip_len);
	if (wanted)
		capture_copy(skb, s, key, sport, dport, ip_len);
	// The frame already carries this device's own address as destination (the device is NOARP), so its ingress
	// takes it as addressed to this host.
	return bpf_redirect(skb->ifindex, BPF_F_INGRESS);
}

static __always_inline int reflect_v4(struct __sk_buff *skb, struct settings *s)
{
	if (linear(skb, ETH_HLEN + sizeof(struct iphdr)) < 0)
		return TC_ACT_OK;
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	if ((void *)(ip + 1) > end || ip->version != 4 || ip->ihl < 5)
		return TC_ACT_OK;
	__u32 ip_len = skb->len - ETH_HLEN;
	// The packet must be exactly as long as its header says, and whole: the rest is the user-space parser's.
	if (bpf_ntohs(ip->tot_len) != ip_len || (ip->frag_off & bpf_htons(0x3fff)))
		return TC_ACT_OK;
	__u32 hlen = ip->ihl * 4;
	__u8 proto = ip->protocol;
	struct reflect_key rk = {};
	rk.addr[10] = 0xff;
	rk.addr[11] = 0xff;
	__builtin_memcpy(&rk.addr[12], &ip->daddr, 4);
	struct reflect_value *r = bpf_map_lookup_elem(&reflect_addrs, &rk);
	if (!r)
		return TC_ACT_OK;
	__u32 slot = r->slot;
	int has_maps = r->flags & REFLECT_PORT_MAPS;
	__u32 fixed = transport_fixed(proto, 0);
	if (!fixed || hlen > ip_len || linear(skb, ETH_HLEN + hlen + fixed) < 0)
		return TC_ACT_OK;
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	ip = data + ETH_HLEN;
	if ((void *)(ip + 1) > end)
		return TC_ACT_OK;
	struct flow_key key = {};
	__u16 sport = 0, dport = 0;
	__u8 tcp_flags = 0;
	key.family = 4;
	key.protocol = proto;
	int l4kind = read_transport((void *)ip + hlen, end, proto, ip_len - hlen, 0, &key, &sport, &dport, &tcp_flags);
	if (l4kind == L4_PUNT)
		return TC_ACT_OK;
	if ((r->flags & REFLECT_PORT_LIST) && port_list_refuses(slot, proto, sport, dport, tcp_flags))
		return TC_ACT_OK;
	__builtin_memcpy(key.reflect, &ip->daddr, 4);
	__builtin_memcpy(key.local, &ip->saddr, 4);
	struct mapped_value *m = 0;
	if (has_maps && maps_concern(l4kind, proto, sport, dport)) {
		m = mapped_flow(&key, sport, dport, tcp_flags);
		if (!m)
			return TC_ACT_OK;
		int mapped = map_ports(skb, ETH_HLEN + hlen, &key, &sport, &dport, m);
		if (mapped != 0)
			return mapped > 0 ? TC_ACT_OK : TC_ACT_SHOT;
	}
	int wanted = s->capture && capture_wants(s, &key, sport, dport);
	if (l4kind == L4_ICMP_ERROR && linear(skb, ETH_HLEN + hlen + ICMP_HEADER + sizeof(struct iphdr)) == 0) {
		data = (void *)(long)skb->data;
		end = (void *)(long)skb->data_end;
		swap_embedded_v4(data + ETH_HLEN + hlen + ICMP_HEADER, end, ip_len - hlen - ICMP_HEADER);
	}
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	ip = data + ETH_HLEN;
	if ((void *)(ip + 1) > end)
		return m ? TC_ACT_SHOT : TC_ACT_OK; // (cannot happen: the header was there; never hand on a mapped half)
	__u32 a = ip->saddr;
	ip->saddr = ip->daddr;
	ip->daddr = a;
	return finish(skb, s, wanted, slot, &key, sport, dport, tcp_flags, ip_len, m);
}

static __always_inline int reflect_v6(struct __sk_buff *skb, struct settings *s)
{
	if (linear(skb, ETH_HLEN + sizeof(struct ipv6hdr)) < 0)
		return TC_ACT_OK;
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ipv6hdr *ip6 = data + ETH_HLEN;
	if ((void *)(ip6 + 1) > end || ip6->version != 6)
		return TC_ACT_OK;
	__u32 ip_len = skb->len - ETH_HLEN;
	if (bpf_ntohs(ip6->payload_len) + sizeof(*ip6) != ip_len)
		return TC_ACT_OK;
	__u8 proto = ip6->nexthdr;
	struct reflect_key rk = {};
	__builtin_memcpy(rk.addr, &ip6->daddr, 16);
	struct reflect_value *r = bpf_map_lookup_elem(&reflect_addrs, &rk);
	if (!r)
		return TC_ACT_OK;
	__u32 slot = r->slot;
	int has_maps = r->flags & REFLECT_PORT_MAPS;
	// Extension headers (and any protocol the program does not know) go to the user-space path.
	__u32 fixed = transport_fixed(proto, 1);
	if (!fixed || linear(skb, ETH_HLEN + sizeof(*ip6) + fixed) < 0)
		return TC_ACT_OK;
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	ip6 = data + ETH_HLEN;
	if ((void *)(ip6 + 1) > end)
		return TC_ACT_OK;
	struct flow_key key = {};
	__u16 sport = 0, dport = 0;
	__u8 tcp_flags = 0;
	key.family = 6;
	key.protocol = proto;
	int l4kind = read_transport(ip6 + 1, end, proto, ip_len - sizeof(*ip6), 1, &key, &sport, &dport, &tcp_flags);
	if (l4kind == L4_PUNT)
		return TC_ACT_OK;
	if ((r->flags & REFLECT_PORT_LIST) && port_list_refuses(slot, proto, sport, dport, tcp_flags))
		return TC_ACT_OK;
	__builtin_memcpy(key.reflect, &ip6->daddr, 16);
	__builtin_memcpy(key.local, &ip6->saddr, 16);
	struct mapped_value *m = 0;
	if (has_maps && maps_concern(l4kind, proto, sport, dport)) {
		m = mapped_flow(&key, sport, dport, tcp_flags);
		if (!m)
			return TC_ACT_OK;
		int mapped = map_ports(skb, ETH_HLEN + sizeof(*ip6), &key, &sport, &dport, m);
		if (mapped != 0)
			return mapped > 0 ? TC_ACT_OK : TC_ACT_SHOT;
	}
	int wanted = s->capture && capture_wants(s, &key, sport, dport);
	if (l4kind == L4_ICMP_ERROR && linear(skb, ETH_HLEN + 2 * sizeof(*ip6) + ICMP_HEADER) == 0) {
		data = (void *)(long)skb->data;
		end = (void *)(long)skb->data_end;
		swap_embedded_v6(data + ETH_HLEN + sizeof(*ip6) + ICMP_HEADER, end, ip_len - sizeof(*ip6) - ICMP_HEADER);
	}
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	ip6 = data + ETH_HLEN;
	if ((void *)(ip6 + 1) > end)
		return m ? TC_ACT_SHOT : TC_ACT_OK; // (cannot happen: the header was there; never hand on a mapped half)
	struct in6_addr a = ip6->saddr;
	ip6->saddr = ip6->daddr;
	ip6->daddr = a;
	return finish(skb, s, wanted, slot, &key, sport, dport, tcp_flags, ip_len, m);
}

SEC("tc")
int reflect(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct settings *s = bpf_map_lookup_elem(&settings, &zero);
	if (!s)
		return TC_ACT_OK;
	// The stack sets skb->protocol from the frame's EtherType on this path; reading it needs no packet access.
	if (skb->protocol == bpf_htons(ETH_P_IP))
		return reflect_v4(skb, s);
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return reflect_v6(skb, s);
	return TC_ACT_OK;
}

// "Dual MIT/GPL": the project is MIT; the kernel accepts this string as GPL-compatible.
char LICENSE[] SEC("license") = "Dual MIT/GPL";
