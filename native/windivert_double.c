/*
 * windivert_double: an ABI-compatible TEST DOUBLE of WinDivert.dll, for tests and benchmarks only. It models the
 * WinDivert 2.2 driver as its documentation describes it (docs/windows.md lists each behaviour, where it is
 * documented, and which test covers it). Written by us from the documentation; none of WinDivert's code is used.
 *
 * It exports the WinDivert functions retroflect binds, with the same names and argument layout, so the TypeScript
 * binding runs unchanged on Linux (libwindivert_double.so) and under Wine (a mingw WinDivert.dll). It never touches
 * a network. Its model:
 *  - The "stack" hands packets to the driver through WinDivertDouble_Inject (a test decides direction, loopback,
 *    interface, and with Impostor=1 that another driver injected it).
 *  - Every handle's filter is compiled at WinDivertOpen (network-layer language; what the real compiler refuses is
 *    refused with ERROR_INVALID_PARAMETER) and evaluated on every packet, on the headers the driver parses.
 *  - A packet goes to the matching handle of highest internal priority (see internal_priority(): among equal user
 *    priorities, normally the newest handle). A packet a handle sends (or that its close releases) is offered next
 *    only to matching handles of LOWER internal priority (older handles of equal user priority included). A packet no handle
 *    takes leaves the driver: it is appended to the "wire", a record the tests read (outbound: onto the network;
 *    inbound: delivered to the local stack).
 *  - Outbound fragments are offered one by one; inbound fragments are offered only to handles opened with
 *    WINDIVERT_FLAG_FRAGMENTS, and otherwise reassembled and offered as one packet. Inbound loopback packets are never
 *    offered (WinDivert sees loopback only on the outbound path).
 *  - WinDivertClose puts still-queued packets back unmodified (on to lower priorities, then the wire).
 *  - WinDivertSendEx injects packet by packet: a soft failure (WinDivertDouble_SetSendFailure, or an impostor whose
 *    TTL/hop limit runs out: ERROR_HOST_UNREACHABLE) loses that packet only; the call then returns FALSE with the
 *    last soft error and *pSendLen counts every packet. A malformed packet stops the batch there (hard error 87).
 *  - The REFLECT layer (doc §5.1, §5.2; driver: the reflect manager): a handle opened there with SNIFF | RECV_ONLY
 *    (NO_INSTALL allowed) and the filter "true" first receives one WINDIVERT_EVENT_REFLECT_OPEN per handle already
 *    open on another layer — Reflect.{Timestamp, ProcessId, Layer, Flags, Priority} in the address, the handle's
 *    filter object as the data (in the double the object is the filter text; WinDivertHelperFormatFilter turns it
 *    into text as the real helper does) — then a REFLECT_CLOSE for each later close in this process. After
 *    WinDivertShutdown, receiving ends with ERROR_NO_DATA once those are read. Handles of OTHER processes are seen
 *    through WINDIVERT_DOUBLE_DRIVER_DIR (below), the double's stand-in for the one driver all processes share;
 *    a record of a process that no longer runs is dropped, as the driver closes a dead process's handles.
 * Issue 19 facts: internal priorities (user priority << 16 | a per-open counter that wraps), a full queue drops its
 * oldest packets (length and bytes), SendEx recomputes IP/TCP/UDP checksums whose flag is 0, a send after
 * SHUTDOWN_SEND fails with 232, WINDIVERT_FLAG_DROP handles block what they match, IPv6 atomic fragments are never
 * re-indicated as reassembled.
 *  - The SOCKET layer (doc §5.1 "Remarks" of WINDIVERT_LAYER, WINDIVERT_DATA_SOCKET; driver: the ALE classify
 *    callouts): a handle opened there needs WINDIVERT_FLAG_RECV_ONLY (documented); the double models it only with
 *    SNIFF as well (blocking a socket operation is not modelled) and refuses DROP, SEND_ONLY and FRAGMENTS. The
 *    stack's socket operations are handed over by WinDivertDouble_SocketEvent (a test decides when, and so whether
 *    the event reaches user space before or after the flow's first packet, which a NETWORK handle receives: the two
 *    are separate handles, so their order at user space is not guaranteed). Every open SOCKET handle whose filter
 *    matches gets a copy (sniffed: Sniffed=1), with no packet data (RecvEx reports 0 bytes) and the event's
 *    Socket.{EndpointId, ParentEndpointId, ProcessId, LocalAddr, RemoteAddr, LocalPort, RemotePort, Protocol};
 *    IPv4 addresses are IPv4-mapped (word 0 the address in host order, word 1 0x0000FFFF). A handle sees only events
 *    after its open; its queue drops its oldest events when full, as the network layer's does. Filters there may use
 *    event (BIND, CONNECT, LISTEN, ACCEPT, CLOSE), processId, endpointId, parentEndpointId, loopback, ip, ipv6,
 *    icmp, icmpv6, tcp, udp, protocol, localAddr, localPort, remoteAddr, remotePort; packet fields are refused (87).
 * Not modelled: the queue time limit, overlapped I/O (lpOverlapped must be NULL), the flow layer, filters
 * on REFLECT-layer fields, CLOSE events of other processes' handles, and the filter fields retroflect never uses
 * (timestamp, event, random*, packet[]/payload[] arrays, local/remote*):
 * the double refuses those with 87 and says so in WinDivertDouble_LastOpenReason.
 *
 * Optional environment, read at the first successful open, to drive a whole `retroflect run` from files:
 *  WINDIVERT_DOUBLE_INJECT_FILE  records handed to the driver (as by WinDivertDouble_Inject) right after that open;
 *  WINDIVERT_DOUBLE_SENT_FILE    every packet that reaches the wire is appended as a record.
 *  WINDIVERT_DOUBLE_DRIVER_DIR   (read at every open) a folder shared by the processes of one test: each open handle
 *                                of another layer than REFLECT is a file <pid>-<handle>.handle there ("pid layer
 *                                priority flags timestamp" on the first line, the filter after it), removed at close.
 * A record is: uint32 little-endian packet length, the 80-byte address, the packet bytes.
 */
#include "windivert_abi.h"

#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <errno.h>
#include <time.h>
#ifndef _WIN32
#include <signal.h>
#include <unistd.h>
#endif

/* Handles are small numbers: HANDLE_BASE + slot index. A slot is never reused until WinDivertDouble_Reset. */
#define HANDLE_BASE 0x1000
#define MAX_HANDLES 4096
/* Longest filter kept for WinDivertDouble_LastFilter. */
#define MAX_FILTER 65536
/* The real limits. The DLL tokenizes into a table of 5 * 256 entries and refuses the filter once 1,278 entries are
 * taken before the end token (so at most 1,277 tokens); the driver refuses a compiled filter of 256 or more tests
 * (WINDIVERT_FILTER_MAXLEN = 256 objects, `length >= MAXLEN` is an error), so 255 is the ceiling. A token is shorter
 * than 40 characters. */
#define FILTER_MAX_TESTS 255
#define FILTER_TOKEN_TABLE (5 * 256)
#define FILTER_MAX_TOKENS 1277
#define TOKEN_MAX_LEN 40
/* Nesting depth the double's recursive parser accepts (the real one also bounds it). */
#define FILTER_MAX_DEPTH 64

typedef unsigned __int128 u128;

typedef struct Packet {
    uint32_t len;
    int64_t handle; /* the handle that sent or released it (wire records), 0 when none */
    uint8_t origin; /* wire records: WD_WIRE_* */
    WD_ADDRESS addr;
    uint8_t data[];
} Packet;

/* A growable FIFO ring of packet pointers. */
typedef struct {
    Packet **items;
    size_t head, count, cap;
} PacketQueue;

/* ---------------------------------------------------------------------------------------------------------------
 * Filter language: tokens, a tree of nodes, evaluation.
 */
enum {
    F_TRUE, F_FALSE, F_ZERO, F_INBOUND, F_OUTBOUND, F_IFIDX, F_SUBIFIDX, F_LOOPBACK, F_IMPOSTOR, F_FRAGMENT,
    F_IP, F_IPV6, F_ICMP, F_ICMPV6, F_TCP, F_UDP, F_PROTOCOL, F_LENGTH,
    F_IP_HDRLENGTH, F_IP_TOS, F_IP_LENGTH, F_IP_ID, F_IP_DF, F_IP_MF, F_IP_FRAGOFF, F_IP_TTL, F_IP_PROTOCOL,
    F_IP_CHECKSUM, F_IP_SRCADDR, F_IP_DSTADDR,
    F_IPV6_TRAFFICCLASS, F_IPV6_FLOWLABEL, F_IPV6_LENGTH, F_IPV6_NEXTHDR, F_IPV6_HOPLIMIT, F_IPV6_SRCADDR,
    F_IPV6_DSTADDR,
    F_ICMP_TYPE, F_ICMP_CODE, F_ICMP_CHECKSUM, F_ICMP_BODY,
    F_ICMPV6_TYPE, F_ICMPV6_CODE, F_ICMPV6_CHECKSUM, F_ICMPV6_BODY,
    F_TCP_SRCPORT, F_TCP_DSTPORT, F_TCP_SEQNUM, F_TCP_ACKNUM, F_TCP_HDRLENGTH, F_TCP_URG, F_TCP_ACK, F_TCP_PSH,
    F_TCP_RST, F_TCP_SYN, F_TCP_FIN, F_TCP_WINDOW, F_TCP_CHECKSUM, F_TCP_URGPTR, F_TCP_PAYLOADLENGTH,
    F_UDP_SRCPORT, F_UDP_DSTPORT, F_UDP_LENGTH, F_UDP_CHECKSUM, F_UDP_PAYLOADLENGTH,
    /* SOCKET-layer fields (at the network layer the double does not model them: refused there). */
    F_EVENT, F_PROCESSID, F_ENDPOINTID, F_PARENTENDPOINTID, F_LOCALADDR, F_REMOTEADDR, F_LOCALPORT, F_REMOTEPORT,
    F_UNMODELLED /* a real field the double does not model */
};

typedef struct {
    const char *name;
    int field;
} FieldName;

static const FieldName field_names[] = {
    {"true", F_TRUE}, {"false", F_FALSE}, {"zero", F_ZERO}, {"inbound", F_INBOUND}, {"outbound", F_OUTBOUND},
    {"ifIdx", F_IFIDX}, {"subIfIdx", F_SUBIFIDX}, {"loopback", F_LOOPBACK}, {"impostor", F_IMPOSTOR},
    {"fragment", F_FRAGMENT}, {"ip", F_IP}, {"ipv6", F_IPV6}, {"icmp", F_ICMP}, {"icmpv6", F_ICMPV6},
    {"tcp", F_TCP}, {"udp", F_UDP}, {"protocol", F_PROTOCOL}, {"length", F_LENGTH},
    {"ip.HdrLength", F_IP_HDRLENGTH}, {"ip.TOS", F_IP_TOS}, {"ip.Length", F_IP_LENGTH}, {"ip.Id", F_IP_ID},
    {"ip.DF", F_IP_DF}, {"ip.MF", F_IP_MF}, {"ip.FragOff", F_IP_FRAGOFF}, {"ip.TTL", F_IP_TTL},
    {"ip.Protocol", F_IP_PROTOCOL}, {"ip.Checksum", F_IP_CHECKSUM}, {"ip.SrcAddr", F_IP_SRCADDR},
    {"ip.DstAddr", F_IP_DSTADDR},
    {"ipv6.TrafficClass", F_IPV6_TRAFFICCLASS}, {"ipv6.FlowLabel", F_IPV6_FLOWLABEL},
    {"ipv6.Length", F_IPV6_LENGTH}, {"ipv6.NextHdr", F_IPV6_NEXTHDR}, {"ipv6.HopLimit", F_IPV6_HOPLIMIT},
    {"ipv6.SrcAddr", F_IPV6_SRCADDR}, {"ipv6.DstAddr", F_IPV6_DSTADDR},
    {"icmp.Type", F_ICMP_TYPE}, {"icmp.Code", F_ICMP_CODE}, {"icmp.Checksum", F_ICMP_CHECKSUM},
    {"icmp.Body", F_ICMP_BODY},
    {"icmpv6.Type", F_ICMPV6_TYPE}, {"icmpv6.Code", F_ICMPV6_CODE}, {"icmpv6.Checksum", F_ICMPV6_CHECKSUM},
    {"icmpv6.Body", F_ICMPV6_BODY},
    {"tcp.SrcPort", F_TCP_SRCPORT}, {"tcp.DstPort", F_TCP_DSTPORT}, {"tcp.SeqNum", F_TCP_SEQNUM},
    {"tcp.AckNum", F_TCP_ACKNUM}, {"tcp.HdrLength", F_TCP_HDRLENGTH}, {"tcp.Urg", F_TCP_URG},
    {"tcp.Ack", F_TCP_ACK}, {"tcp.Psh", F_TCP_PSH}, {"tcp.Rst", F_TCP_RST}, {"tcp.Syn", F_TCP_SYN},
    {"tcp.Fin", F_TCP_FIN}, {"tcp.Window", F_TCP_WINDOW}, {"tcp.Checksum", F_TCP_CHECKSUM},
    {"tcp.UrgPtr", F_TCP_URGPTR}, {"tcp.PayloadLength", F_TCP_PAYLOADLENGTH},
    {"udp.SrcPort", F_UDP_SRCPORT}, {"udp.DstPort", F_UDP_DSTPORT}, {"udp.Length", F_UDP_LENGTH},
    {"udp.Checksum", F_UDP_CHECKSUM}, {"udp.PayloadLength", F_UDP_PAYLOADLENGTH},
    /* Real fields of the network layer the double does not model (retroflect does not use them). */
    {"event", F_EVENT}, {"processId", F_PROCESSID}, {"endpointId", F_ENDPOINTID},
    {"parentEndpointId", F_PARENTENDPOINTID}, {"localAddr", F_LOCALADDR}, {"remoteAddr", F_REMOTEADDR},
    {"localPort", F_LOCALPORT}, {"remotePort", F_REMOTEPORT},
    {"timestamp", F_UNMODELLED}, {"random8", F_UNMODELLED}, {"random16", F_UNMODELLED},
    {"random32", F_UNMODELLED}, {"packet", F_UNMODELLED}, {"packet16", F_UNMODELLED}, {"packet32", F_UNMODELLED},
    {"tcp.Payload", F_UNMODELLED}, {"tcp.Payload16", F_UNMODELLED}, {"tcp.Payload32", F_UNMODELLED},
    {"udp.Payload", F_UNMODELLED}, {"udp.Payload16", F_UNMODELLED}, {"udp.Payload32", F_UNMODELLED},
};

/* Macros usable as values (the network layer's subset). */
static const struct { const char *name; uint32_t value; } macros[] = {
    {"TRUE", 1}, {"FALSE", 0}, {"TCP", 6}, {"UDP", 17}, {"ICMP", 1}, {"ICMPV6", 58}, {"PACKET", 0},
    {"BIND", 3}, {"CONNECT", 4}, {"LISTEN", 5}, {"ACCEPT", 6}, {"CLOSE", 7},
};

enum { T_END, T_OPEN, T_CLOSE, T_NOT, T_AND, T_OR, T_QUESTION, T_COLON, T_MINUS, T_EQ, T_NEQ, T_LT, T_LEQ, T_GT,
       T_GEQ, T_FIELD, T_NUMBER, T_OTHER };

typedef struct {
    int kind;
    int field;
    u128 value;
} Token;

enum { N_TEST, N_AND, N_OR, N_IF };
enum { OP_EQ, OP_NEQ, OP_LT, OP_LEQ, OP_GT, OP_GEQ };

typedef struct Node {
    int kind;
    /* N_TEST */
    int field, op, neg;
    u128 value;
    /* N_AND / N_OR: a, b. N_IF: a ? b : c */
    struct Node *a, *b, *c;
} Node;

typedef struct {
    Node *nodes;
    int count, cap;
    int tests;
} Filter;

typedef struct {
    const Token *toks;
    int pos;
    Filter *f;
    int error;
    const char *reason;
    int layer; /* WD_LAYER_NETWORK or WD_LAYER_SOCKET: which fields a test may use */
} Parser;

static int is_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }

static int parse_dec(const char *s, u128 *out) {
    u128 v = 0;
    if (!*s) return 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return 0;
        u128 next = v * 10 + (u128)(*s - '0');
        if (next / 10 != v) return 0; /* overflow */
        v = next;
    }
    *out = v;
    return 1;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int parse_hex(const char *s, u128 *out) {
    if (s[0] != '0' || s[1] != 'x' || !s[2]) return 0;
    u128 v = 0;
    int n = 0;
    for (s += 2; *s; s++, n++) {
        int d = hex_digit(*s);
        if (d < 0 || n >= 32) return 0;
        v = v << 4 | (u128)d;
    }
    *out = v;
    return 1;
}

/* Dotted IPv4 into 32 bits. */
static int parse_ipv4(const char *s, uint32_t *out) {
    uint32_t v = 0;
    for (int part = 0; part < 4; part++) {
        if (*s < '0' || *s > '9') return 0;
        uint32_t x = 0;
        int digits = 0;
        while (*s >= '0' && *s <= '9') {
            x = x * 10 + (uint32_t)(*s++ - '0');
            if (++digits > 3 || x > 255) return 0;
        }
        v = v << 8 | x;
        if (part < 3 && *s++ != '.') return 0;
    }
    if (*s) return 0;
    *out = v;
    return 1;
}

/* RFC 4291 text form (with "::" and an optional dotted IPv4 tail) into 128 bits. */
static int parse_ipv6(const char *s, u128 *out) {
    uint16_t head[8], tail[8];
    int nh = 0, nt = 0, gap = 0;
    if (s[0] == ':' && s[1] == ':') {
        gap = 1;
        s += 2;
    } else if (s[0] == ':') {
        return 0;
    }
    while (*s) {
        const char *start = s;
        int d, digits = 0;
        uint32_t v = 0;
        while ((d = hex_digit(*s)) >= 0 && digits < 5) {
            v = v << 4 | (uint32_t)d;
            s++;
            digits++;
        }
        if (*s == '.') { /* IPv4 tail */
            uint32_t v4;
            if (!parse_ipv4(start, &v4)) return 0;
            uint16_t *arr = gap ? tail : head;
            int *n = gap ? &nt : &nh;
            if (*n + 2 > 8) return 0;
            arr[(*n)++] = (uint16_t)(v4 >> 16);
            arr[(*n)++] = (uint16_t)v4;
            s = start + strlen(start);
            break;
        }
        if (digits == 0 || digits > 4) return 0;
        uint16_t *arr = gap ? tail : head;
        int *n = gap ? &nt : &nh;
        if (*n >= 8) return 0;
        arr[(*n)++] = (uint16_t)v;
        if (!*s) break;
        if (*s != ':') return 0;
        s++;
        if (*s == ':') {
            if (gap) return 0;
            gap = 1;
            s++;
            if (!*s) break;
        } else if (!*s) {
            return 0;
        }
    }
    if (gap ? nh + nt > 7 : nh != 8) return 0;
    uint16_t w[8] = {0};
    for (int i = 0; i < nh; i++) w[i] = head[i];
    for (int i = 0; i < nt; i++) w[8 - nt + i] = tail[i];
    u128 v = 0;
    for (int i = 0; i < 8; i++) v = v << 16 | w[i];
    *out = v;
    return 1;
}

/* Split `text` into tokens as the real compiler does. Returns the count, or -1 (error 87) with *reason set. */
static int tokenize(const char *text, Token *toks, int max, const char **reason) {
    int n = 0;
    size_t i = 0;
    for (;;) {
        if (n >= max - 1) {
            *reason = "too many tokens";
            return -1;
        }
        while (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r') i++;
        Token *t = &toks[n];
        memset(t, 0, sizeof *t);
        char c = text[i++];
        switch (c) {
        case '\0': t->kind = T_END; return n + 1;
        case '(': t->kind = T_OPEN; n++; continue;
        case ')': t->kind = T_CLOSE; n++; continue;
        case '-': t->kind = T_MINUS; n++; continue;
        case '?': t->kind = T_QUESTION; n++; continue;
        case '!':
            if (text[i] == '=') { i++; t->kind = T_NEQ; } else t->kind = T_NOT;
            n++;
            continue;
        case '=':
            if (text[i] == '=') i++;
            t->kind = T_EQ;
            n++;
            continue;
        case '<':
            if (text[i] == '=') { i++; t->kind = T_LEQ; } else t->kind = T_LT;
            n++;
            continue;
        case '>':
            if (text[i] == '=') { i++; t->kind = T_GEQ; } else t->kind = T_GT;
            n++;
            continue;
        case '&':
            if (text[i++] != '&') { *reason = "bad token '&'"; return -1; }
            t->kind = T_AND;
            n++;
            continue;
        case '|':
            if (text[i++] != '|') { *reason = "bad token '|'"; return -1; }
            t->kind = T_OR;
            n++;
            continue;
        case ':':
            if (text[i] != ':') { t->kind = T_COLON; n++; continue; }
            break; /* "::" starts an IPv6 address */
        default:
            break;
        }
        if (!(is_alnum(c) || c == '.' || c == ':' || c == '_')) {
            *reason = "bad character";
            return -1;
        }
        char word[TOKEN_MAX_LEN];
        size_t j = 0;
        word[j++] = c;
        while (j < TOKEN_MAX_LEN && (is_alnum(text[i]) || text[i] == '.' || text[i] == ':' || text[i] == '_')) word[j++] = text[i++];
        if (j >= TOKEN_MAX_LEN) {
            *reason = "token of 40 or more characters";
            return -1;
        }
        word[j] = 0;
        /* A single trailing colon belongs to a `? :` (as in "x ? a: b"), not to the word. */
        if (j >= 2 && word[j - 1] == ':' && word[j - 2] != ':') {
            word[--j] = 0;
            i--;
        }
        if (!strcmp(word, "and")) { t->kind = T_AND; n++; continue; }
        if (!strcmp(word, "or")) { t->kind = T_OR; n++; continue; }
        if (!strcmp(word, "not")) { t->kind = T_NOT; n++; continue; }
        int found = 0;
        for (size_t k = 0; k < sizeof field_names / sizeof field_names[0]; k++) {
            if (!strcmp(word, field_names[k].name)) {
                t->kind = T_FIELD;
                t->field = field_names[k].field;
                found = 1;
                break;
            }
        }
        for (size_t k = 0; !found && k < sizeof macros / sizeof macros[0]; k++) {
            if (!strcmp(word, macros[k].name)) {
                t->kind = T_NUMBER;
                t->value = macros[k].value;
                found = 1;
            }
        }
        uint32_t v4;
        if (!found && (parse_dec(word, &t->value) || parse_hex(word, &t->value))) {
            t->kind = T_NUMBER;
            found = 1;
        }
        if (!found && parse_ipv4(word, &v4)) {
            t->kind = T_NUMBER;
            t->value = (u128)0xFFFF << 32 | v4;
            found = 1;
        }
        if (!found && parse_ipv6(word, &t->value)) {
            t->kind = T_NUMBER;
            found = 1;
        }
        if (!found) {
            *reason = "unknown field or bad value";
            return -1;
        }
        n++;
    }
}

static Node *new_node(Parser *p, int kind) {
    Filter *f = p->f;
    if (f->count == f->cap) {
        p->error = 1;
        p->reason = "filter too long";
        return NULL;
    }
    Node *n = &f->nodes[f->count++];
    memset(n, 0, sizeof *n);
    n->kind = kind;
    return n;
}

static Node *parse_or(Parser *p, int depth);

/* Fields of the network layer that are valid at the SOCKET layer too (on the event's 5-tuple). */
static int socket_layer_field(int field) {
    switch (field) {
    case F_TRUE: case F_FALSE: case F_ZERO: case F_LOOPBACK: case F_IP: case F_IPV6: case F_ICMP: case F_ICMPV6:
    case F_TCP: case F_UDP: case F_PROTOCOL:
        return 1;
    default:
        return 0;
    }
}

/* TEST := not* FIELD [op [-] VALUE]. `not` flips the comparison (it applies to one test, never to a group). */
static Node *parse_test(Parser *p) {
    int not = 0;
    while (p->toks[p->pos].kind == T_NOT) {
        not = !not;
        p->pos++;
    }
    const Token *t = &p->toks[p->pos];
    if (t->kind != T_FIELD) {
        p->error = 1;
        p->reason = "unexpected token (a test must start with a field)";
        return NULL;
    }
    int socket_field = t->field >= F_EVENT && t->field <= F_REMOTEPORT;
    if (t->field == F_UNMODELLED || (socket_field && p->layer != WD_LAYER_SOCKET)) {
        p->error = 1;
        p->reason = "field not modelled by the test double";
        return NULL;
    }
    if (p->layer == WD_LAYER_SOCKET && !socket_field && !socket_layer_field(t->field)) {
        p->error = 1;
        p->reason = "field not valid at the SOCKET layer";
        return NULL;
    }
    Node *n = new_node(p, N_TEST);
    if (!n) return NULL;
    n->field = t->field;
    p->pos++;
    int kind = p->toks[p->pos].kind;
    if (kind < T_EQ || kind > T_GEQ) {
        n->op = not ? OP_EQ : OP_NEQ; /* FIELD alone means FIELD != 0 */
        n->value = 0;
    } else {
        static const int ops[] = {OP_EQ, OP_NEQ, OP_LT, OP_LEQ, OP_GT, OP_GEQ};
        static const int flipped[] = {OP_NEQ, OP_EQ, OP_GEQ, OP_GT, OP_LEQ, OP_LT};
        int op = ops[kind - T_EQ];
        n->op = not ? flipped[op] : op;
        p->pos++;
        if (p->toks[p->pos].kind == T_MINUS) {
            n->neg = 1;
            p->pos++;
        }
        if (p->toks[p->pos].kind != T_NUMBER) {
            p->error = 1;
            p->reason = "expected a value";
            return NULL;
        }
        n->value = p->toks[p->pos].value;
        p->pos++;
    }
    if (n->field != F_TRUE && n->field != F_FALSE) p->f->tests++;
    return n;
}

/* ARG := '(' FILTER ')' | '(' FILTER '?' FILTER ':' FILTER ')' | TEST */
static Node *parse_arg(Parser *p, int depth) {
    if (depth > FILTER_MAX_DEPTH) {
        p->error = 1;
        p->reason = "filter nested too deeply";
        return NULL;
    }
    if (p->toks[p->pos].kind != T_OPEN) return parse_test(p);
    p->pos++;
    Node *inner = parse_or(p, depth + 1);
    if (!inner) return NULL;
    if (p->toks[p->pos].kind == T_CLOSE) {
        p->pos++;
        return inner;
    }
    if (p->toks[p->pos].kind != T_QUESTION) {
        p->error = 1;
        p->reason = "expected ')'";
        return NULL;
    }
    p->pos++;
    Node *then = parse_or(p, depth + 1);
    if (!then) return NULL;
    if (p->toks[p->pos].kind != T_COLON) {
        p->error = 1;
        p->reason = "expected ':'";
        return NULL;
    }
    p->pos++;
    Node *other = parse_or(p, depth + 1);
    if (!other) return NULL;
    if (p->toks[p->pos].kind != T_CLOSE) {
        p->error = 1;
        p->reason = "expected ')'";
        return NULL;
    }
    p->pos++;
    Node *n = new_node(p, N_IF);
    if (!n) return NULL;
    n->a = inner;
    n->b = then;
    n->c = other;
    return n;
}

static Node *parse_and(Parser *p, int depth) {
    Node *left = parse_arg(p, depth);
    while (left && p->toks[p->pos].kind == T_AND) {
        p->pos++;
        Node *right = parse_arg(p, depth);
        if (!right) return NULL;
        Node *n = new_node(p, N_AND);
        if (!n) return NULL;
        n->a = left;
        n->b = right;
        left = n;
    }
    return left;
}

static Node *parse_or(Parser *p, int depth) {
    Node *left = parse_and(p, depth);
    while (left && p->toks[p->pos].kind == T_OR) {
        p->pos++;
        Node *right = parse_and(p, depth);
        if (!right) return NULL;
        Node *n = new_node(p, N_OR);
        if (!n) return NULL;
        n->a = left;
        n->b = right;
        left = n;
    }
    return left;
}

/* Compile `text`; on success *out holds the tree (root = the node returned). NULL + *reason on refusal. */
static Node *compile_filter(const char *text, int layer, Filter *out, const char **reason) {
    Token *toks = malloc(FILTER_TOKEN_TABLE * sizeof *toks);
    if (!toks) {
        *reason = "out of memory";
        return NULL;
    }
    int n = tokenize(text, toks, FILTER_MAX_TOKENS + 2, reason); /* room for 1,277 tokens and the end token */
    Node *root = NULL;
    if (n > 0) {
        out->cap = n * 2 + 2;
        out->nodes = calloc((size_t)out->cap, sizeof(Node));
        out->count = 0;
        out->tests = 0;
        Parser p = {toks, 0, out, 0, NULL, layer};
        root = out->nodes ? parse_or(&p, 0) : NULL;
        if (root && toks[p.pos].kind != T_END) {
            root = NULL;
            p.reason = "unexpected token after the filter";
        }
        if (root && out->tests > FILTER_MAX_TESTS) {
            root = NULL;
            p.reason = "256 or more tests";
        }
        if (!root) {
            *reason = p.reason ? p.reason : "bad syntax";
            free(out->nodes);
            out->nodes = NULL;
        }
    }
    free(toks);
    return root;
}

/* ---------------------------------------------------------------------------------------------------------------
 * The headers the driver parses before it evaluates a filter (driver facts: an IP length that disagrees with the
 * packet's size never matches; IPv6 extension headers, AH included, are walked up to the first fragment header; a
 * fragment at a non-zero offset has no transport header).
 */
typedef struct {
    const uint8_t *p;
    uint32_t len;
    const uint8_t *ip, *ipv6, *icmp, *icmpv6, *tcp, *udp;
    int fragment;
    uint8_t protocol;
    uint32_t header_len;
    /* IPv6 fragments: where the fragment header is, and the offset of the next-header byte that names it. */
    uint32_t frag_at, frag_prev_nh;
    uint16_t frag_off; /* in 8-byte units */
    int more_fragments;
} View;

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

static int parse_view(const uint8_t *p, uint32_t len, View *v) {
    memset(v, 0, sizeof *v);
    v->p = p;
    v->len = len;
    if (len < 20) return 0;
    uint32_t hl;
    uint8_t proto;
    if ((p[0] >> 4) == 4) {
        hl = (uint32_t)(p[0] & 0x0f) * 4;
        if (rd16(p + 2) != len || hl < 20 || hl > len) return 0;
        v->ip = p;
        v->frag_off = rd16(p + 6) & 0x1fff;
        v->more_fragments = (p[6] & 0x20) != 0;
        v->fragment = v->frag_off != 0 || v->more_fragments;
        proto = p[9];
    } else if ((p[0] >> 4) == 6) {
        if (len < 40 || 40u + rd16(p + 4) != len) return 0;
        v->ipv6 = p;
        hl = 40;
        proto = p[6];
        uint32_t nh_at = 6;
        while (v->frag_off == 0) {
            uint32_t ext = 0;
            if (proto == 44) { /* fragment header */
                if (v->fragment || hl + 8 > len) break;
                v->fragment = 1;
                v->frag_at = hl;
                v->frag_prev_nh = nh_at;
                v->frag_off = rd16(p + hl + 2) >> 3;
                v->more_fragments = p[hl + 3] & 1;
                ext = 8;
            } else if (proto == 51 || proto == 0 || proto == 60 || proto == 43 || proto == 135) {
                if (hl + 2 > len) break;
                ext = proto == 51 ? ((uint32_t)p[hl + 1] + 2) * 4 : ((uint32_t)p[hl + 1] + 1) * 8;
            } else {
                break;
            }
            if (hl + ext > len) break;
            proto = p[hl];
            nh_at = hl;
            hl += ext;
        }
    } else {
        return 0;
    }
    v->protocol = proto;
    v->header_len = hl;
    uint32_t left = len - hl;
    if (v->frag_off == 0) {
        if (proto == 1 && v->ip && left >= 8) { v->icmp = p + hl; v->header_len += 8; }
        else if (proto == 58 && v->ipv6 && left >= 8) { v->icmpv6 = p + hl; v->header_len += 8; }
        else if (proto == 6 && left >= 20 && (p[hl + 12] >> 4) >= 5) {
            v->tcp = p + hl;
            uint32_t th = (uint32_t)(p[hl + 12] >> 4) * 4;
            v->header_len += th > left ? left : th;
        } else if (proto == 17 && left >= 8) { v->udp = p + hl; v->header_len += 8; }
    }
    return 1;
}

static u128 addr6(const uint8_t *a) {
    u128 v = 0;
    for (int i = 0; i < 16; i++) v = v << 8 | a[i];
    return v;
}

/* An address of WINDIVERT_DATA_SOCKET (four host-order words, least significant first) as one 128-bit value, the
 * way the filter compiler writes address literals (IPv4: ::ffff:a.b.c.d). */
static u128 socket_addr(const uint32_t *w) {
    return (u128)w[3] << 96 | (u128)w[2] << 64 | (u128)w[1] << 32 | w[0];
}

/* A SOCKET-layer event's value of `field` (socket_layer_field() and the F_EVENT..F_REMOTEPORT fields). */
static int socket_field_value(int field, const WD_ADDRESS *a, u128 *out) {
    const uint32_t *l = a->Socket.LocalAddr;
    int v4 = l[1] == 0x0000FFFF && l[2] == 0 && l[3] == 0;
    uint8_t proto = a->Socket.Protocol;
    u128 x = 0;
    switch (field) {
    case F_TRUE: x = 1; break;
    case F_FALSE: case F_ZERO: x = 0; break;
    case F_LOOPBACK: x = a->Loopback; break;
    case F_IP: x = v4; break;
    case F_IPV6: x = !v4; break;
    case F_ICMP: x = v4 && proto == 1; break;
    case F_ICMPV6: x = !v4 && proto == 58; break;
    case F_TCP: x = proto == 6; break;
    case F_UDP: x = proto == 17; break;
    case F_PROTOCOL: x = proto; break;
    case F_EVENT: x = a->Event; break;
    case F_PROCESSID: x = a->Socket.ProcessId; break;
    case F_ENDPOINTID: x = a->Socket.EndpointId; break;
    case F_PARENTENDPOINTID: x = a->Socket.ParentEndpointId; break;
    case F_LOCALADDR: x = socket_addr(l); break;
    case F_REMOTEADDR: x = socket_addr(a->Socket.RemoteAddr); break;
    case F_LOCALPORT: x = a->Socket.LocalPort; break;
    case F_REMOTEPORT: x = a->Socket.RemotePort; break;
    default: return 0;
    }
    *out = x;
    return 1;
}

/* The field's value for this packet; 0 when the field is not relevant to it (then the test fails). */
static int field_value(int field, const View *v, const WD_ADDRESS *a, u128 *out) {
    if (a->Layer == WD_LAYER_SOCKET) return socket_field_value(field, a, out);
    const uint8_t *ip = v->ip, *ip6 = v->ipv6, *ic = v->icmp, *ic6 = v->icmpv6, *t = v->tcp, *u = v->udp;
    u128 x = 0;
    switch (field) {
    case F_TRUE: x = 1; break;
    case F_FALSE: case F_ZERO: x = 0; break;
    case F_INBOUND: x = !a->Outbound; break;
    case F_OUTBOUND: x = a->Outbound; break;
    case F_IFIDX: x = a->Network.IfIdx; break;
    case F_SUBIFIDX: x = a->Network.SubIfIdx; break;
    case F_LOOPBACK: x = a->Loopback; break;
    case F_IMPOSTOR: x = a->Impostor; break;
    case F_FRAGMENT: x = (u128)v->fragment; break;
    case F_IP: x = ip != NULL; break;
    case F_IPV6: x = ip6 != NULL; break;
    case F_ICMP: x = ic != NULL; break;
    case F_ICMPV6: x = ic6 != NULL; break;
    case F_TCP: x = t != NULL; break;
    case F_UDP: x = u != NULL; break;
    case F_PROTOCOL: x = v->protocol; break;
    case F_LENGTH: x = v->len; break;
    default:
        if (field >= F_IP_HDRLENGTH && field <= F_IP_DSTADDR) {
            if (!ip) return 0;
            switch (field) {
            case F_IP_HDRLENGTH: x = ip[0] & 0x0f; break;
            case F_IP_TOS: x = ip[1]; break;
            case F_IP_LENGTH: x = rd16(ip + 2); break;
            case F_IP_ID: x = rd16(ip + 4); break;
            case F_IP_DF: x = (ip[6] >> 6) & 1; break;
            case F_IP_MF: x = (ip[6] >> 5) & 1; break;
            case F_IP_FRAGOFF: x = rd16(ip + 6) & 0x1fff; break;
            case F_IP_TTL: x = ip[8]; break;
            case F_IP_PROTOCOL: x = ip[9]; break;
            case F_IP_CHECKSUM: x = rd16(ip + 10); break;
            case F_IP_SRCADDR: x = (u128)0xFFFF << 32 | rd32(ip + 12); break;
            case F_IP_DSTADDR: x = (u128)0xFFFF << 32 | rd32(ip + 16); break;
            }
        } else if (field >= F_IPV6_TRAFFICCLASS && field <= F_IPV6_DSTADDR) {
            if (!ip6) return 0;
            switch (field) {
            case F_IPV6_TRAFFICCLASS: x = (rd16(ip6) >> 4) & 0xff; break;
            case F_IPV6_FLOWLABEL: x = rd32(ip6) & 0xfffff; break;
            case F_IPV6_LENGTH: x = rd16(ip6 + 4); break;
            case F_IPV6_NEXTHDR: x = ip6[6]; break;
            case F_IPV6_HOPLIMIT: x = ip6[7]; break;
            case F_IPV6_SRCADDR: x = addr6(ip6 + 8); break;
            case F_IPV6_DSTADDR: x = addr6(ip6 + 24); break;
            }
        } else if (field >= F_ICMP_TYPE && field <= F_ICMPV6_BODY) {
            const uint8_t *h = field <= F_ICMP_BODY ? ic : ic6;
            if (!h) return 0;
            switch (field <= F_ICMP_BODY ? field - F_ICMP_TYPE : field - F_ICMPV6_TYPE) {
            case 0: x = h[0]; break;
            case 1: x = h[1]; break;
            case 2: x = rd16(h + 2); break;
            default: x = rd32(h + 4); break;
            }
        } else if (field >= F_TCP_SRCPORT && field <= F_TCP_PAYLOADLENGTH) {
            if (!t) return 0;
            switch (field) {
            case F_TCP_SRCPORT: x = rd16(t); break;
            case F_TCP_DSTPORT: x = rd16(t + 2); break;
            case F_TCP_SEQNUM: x = rd32(t + 4); break;
            case F_TCP_ACKNUM: x = rd32(t + 8); break;
            case F_TCP_HDRLENGTH: x = t[12] >> 4; break;
            case F_TCP_URG: x = (t[13] >> 5) & 1; break;
            case F_TCP_ACK: x = (t[13] >> 4) & 1; break;
            case F_TCP_PSH: x = (t[13] >> 3) & 1; break;
            case F_TCP_RST: x = (t[13] >> 2) & 1; break;
            case F_TCP_SYN: x = (t[13] >> 1) & 1; break;
            case F_TCP_FIN: x = t[13] & 1; break;
            case F_TCP_WINDOW: x = rd16(t + 14); break;
            case F_TCP_CHECKSUM: x = rd16(t + 16); break;
            case F_TCP_URGPTR: x = rd16(t + 18); break;
            case F_TCP_PAYLOADLENGTH: x = v->len - v->header_len; break;
            }
        } else if (field >= F_UDP_SRCPORT && field <= F_UDP_PAYLOADLENGTH) {
            if (!u) return 0;
            switch (field) {
            case F_UDP_SRCPORT: x = rd16(u); break;
            case F_UDP_DSTPORT: x = rd16(u + 2); break;
            case F_UDP_LENGTH: x = rd16(u + 4); break;
            case F_UDP_CHECKSUM: x = rd16(u + 6); break;
            case F_UDP_PAYLOADLENGTH: x = v->len - v->header_len; break;
            }
        } else {
            return 0;
        }
    }
    *out = x;
    return 1;
}

static int eval_node(const Node *n, const View *v, const WD_ADDRESS *a) {
    switch (n->kind) {
    case N_AND: return eval_node(n->a, v, a) && eval_node(n->b, v, a);
    case N_OR: return eval_node(n->a, v, a) || eval_node(n->b, v, a);
    case N_IF: return eval_node(n->a, v, a) ? eval_node(n->b, v, a) : eval_node(n->c, v, a);
    default: break;
    }
    u128 x;
    if (!field_value(n->field, v, a, &x)) return 0; /* a test on a field the packet lacks fails, `not` or not */
    int cmp = n->neg ? (x == 0 && n->value == 0 ? 0 : 1) : (x < n->value ? -1 : x > n->value ? 1 : 0);
    switch (n->op) {
    case OP_EQ: return cmp == 0;
    case OP_NEQ: return cmp != 0;
    case OP_LT: return cmp < 0;
    case OP_LEQ: return cmp <= 0;
    case OP_GT: return cmp > 0;
    default: return cmp >= 0;
    }
}

/* ---------------------------------------------------------------------------------------------------------------
 * Handles, queues, the wire.
 */
/* Offered to every handle: above any internal priority (they are 32-bit). */
#define NO_LIMIT ((int64_t)1 << 40)
#define FLAG_SNIFF 0x1
#define FLAG_DROP 0x2
#define FLAG_RECV_ONLY 0x4
#define FLAG_SEND_ONLY 0x8
#define FLAG_NO_INSTALL 0x10
#define FLAG_FRAGMENTS 0x20

typedef struct {
    int used, closed, shut_recv, shut_send;
    unsigned generation;
    int layer;
    int64_t opened_at;
    char *filter_text; /* what a REFLECT handle reports as the filter object */
    int16_t priority;
    uint32_t rank; /* the driver's internal priority: see internal_priority() */
    uint64_t queued_bytes;
    uint64_t flags;
    Filter filter;
    Node *root;
    uint64_t params[3]; /* queue length, time, size */
    PacketQueue queue;
} Slot;

/* An inbound datagram being reassembled from fragments no handle took. */
#define REASM_SLOTS 16
#define REASM_MAX 65535
typedef struct {
    int used, v6;
    uint8_t key[36];
    uint8_t header[REASM_MAX]; /* IPv4 header, or IPv6 header + extension headers before the fragment header */
    uint32_t header_len, prev_nh, have_first, total, covered;
    uint8_t next_header;
    WD_ADDRESS addr;
    uint8_t data[REASM_MAX];
    uint8_t seen[REASM_MAX];
} Reassembly;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static Slot slots[MAX_HANDLES];
static uint32_t slots_used;
static PacketQueue wire;
static int keep_wire = 1;
static uint64_t total_wire;
static uint32_t open_error;
static char last_filter[MAX_FILTER];
static const char *last_open_reason = "";
static int16_t last_priority;
static uint64_t last_flags;
static int last_layer = -1;
static int env_done;
static FILE *sent_file;
static Reassembly *reasm[REASM_SLOTS];
/* SendEx failure hook: packets at `fail_index` of a batch (-1: any) that match `fail_filter` (none: all) fail. */
static uint32_t fail_code;
static int32_t fail_index = -1;
static Filter fail_filter;
static Node *fail_root;

static uint32_t priority_counter;
static uint64_t queue_dropped; /* packets full queues dropped (oldest first) since the last reset */
/* Issue 19 driver facts, defined together below (before WinDivertSendEx). */
static uint32_t internal_priority(int16_t priority);
static int needs_checksums(const WD_ADDRESS *a);
static void fill_checksums(Packet *p);

static __thread uint32_t thread_last_error;

static void set_error(uint32_t code) {
    thread_last_error = code;
#ifdef _WIN32
    SetLastError(code);
#endif
}

WD_EXPORT uint32_t WinDivertDoubleGetLastError(void) { return thread_last_error; }

static int queue_push(PacketQueue *q, Packet *p) {
    if (q->count == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 256;
        Packet **items = malloc(cap * sizeof *items);
        if (!items) return 0;
        for (size_t i = 0; i < q->count; i++) items[i] = q->items[(q->head + i) % q->cap];
        free(q->items);
        q->items = items;
        q->head = 0;
        q->cap = cap;
    }
    q->items[(q->head + q->count) % q->cap] = p;
    q->count++;
    return 1;
}

static Packet *queue_peek(PacketQueue *q) { return q->count ? q->items[q->head] : NULL; }

static Packet *queue_pop(PacketQueue *q) {
    if (!q->count) return NULL;
    Packet *p = q->items[q->head];
    q->head = (q->head + 1) % q->cap;
    q->count--;
    return p;
}

static void queue_clear(PacketQueue *q) {
    for (Packet *p = queue_pop(q); p; p = queue_pop(q)) free(p);
    free(q->items);
    memset(q, 0, sizeof *q);
}

static Packet *packet_new(const void *data, uint32_t len, const WD_ADDRESS *addr) {
    Packet *p = malloc(sizeof *p + len);
    if (!p) return NULL;
    p->len = len;
    p->handle = 0;
    p->origin = 0;
    if (addr) p->addr = *addr;
    else memset(&p->addr, 0, sizeof p->addr);
    memcpy(p->data, data, len);
    return p;
}

/* The slot of an open handle, or NULL. Caller holds the lock. */
static Slot *slot_of(WD_HANDLE handle) {
    intptr_t v = (intptr_t)handle - HANDLE_BASE;
    if (v < 0 || v >= (intptr_t)slots_used) return NULL;
    Slot *s = &slots[v];
    return s->used && !s->closed ? s : NULL;
}

/* Length of the IP packet at p by its own header, or 0 when it cannot be one (fewer than `avail` bytes). */
static uint32_t ip_length(const uint8_t *p, uint32_t avail) {
    if (avail < 20) return 0;
    uint32_t len;
    if ((p[0] >> 4) == 4) len = (uint32_t)p[2] << 8 | p[3];
    else if ((p[0] >> 4) == 6 && avail >= 40) len = 40 + ((uint32_t)p[4] << 8 | p[5]);
    else return 0;
    return len >= 20 && len <= avail ? len : 0;
}

static void write_record(FILE *f, const Packet *p) {
    uint8_t hdr[4] = {p->len & 0xff, p->len >> 8 & 0xff, p->len >> 16 & 0xff, p->len >> 24 & 0xff};
    fwrite(hdr, 1, 4, f);
    fwrite(&p->addr, 1, sizeof p->addr, f);
    fwrite(p->data, 1, p->len, f);
    fflush(f);
}

/* The packet leaves the driver. Caller holds the lock; takes ownership of p. */
static void to_wire(Packet *p, int64_t handle, uint8_t origin) {
    p->handle = handle;
    p->origin = origin;
    total_wire++;
    if (sent_file) write_record(sent_file, p);
    if (!keep_wire || !queue_push(&wire, p)) free(p);
}

enum { WHO_ALL, WHO_FRAGMENT_HANDLES, WHO_REASSEMBLED_HANDLES };

/* The matching handle of highest internal priority below `below`, or NULL. Caller holds the lock. Internal
 * priorities order every handle (driver: the user priority in the high 16 bits, a per-open counter in the low 16),
 * so among equal user priorities the newest handle comes first — unless the counter wrapped in between. */
static Slot *choose(const View *v, const WD_ADDRESS *addr, int64_t below, int who) {
    Slot *best = NULL;
    for (uint32_t i = 0; i < slots_used; i++) {
        Slot *s = &slots[i];
        if (!s->used || s->closed || s->shut_recv || (int64_t)s->rank >= below || !s->root || s->layer == WD_LAYER_SOCKET) continue;
        if (who == WHO_FRAGMENT_HANDLES && !(s->flags & FLAG_FRAGMENTS)) continue;
        if (who == WHO_REASSEMBLED_HANDLES && (s->flags & FLAG_FRAGMENTS)) continue;
        if (best && s->rank < best->rank) continue;
        if (!eval_node(s->root, v, addr)) continue;
        best = s;
    }
    return best;
}

/* Queue p on a handle. A full queue (length or bytes, WINDIVERT_PARAM_QUEUE_LENGTH/SIZE) drops its OLDEST packets
 * until the new one fits (driver: "the queue is full; drop a packet & try again" removes the head). Queue time is
 * not modelled. Returns 0 (p not taken) only when out of memory. Caller holds the lock. */
static int enqueue(Slot *s, Packet *p) {
    if (s->flags & FLAG_DROP) { /* WINDIVERT_FLAG_DROP: a matching packet is blocked, never queued */
        free(p);
        return 1;
    }
    while (s->queue.count > 0 && (s->queue.count + 1 > s->params[WD_PARAM_QUEUE_LENGTH] ||
                                  s->queued_bytes + p->len > s->params[WD_PARAM_QUEUE_SIZE])) {
        Packet *old = queue_pop(&s->queue);
        s->queued_bytes -= old->len;
        free(old);
        queue_dropped++;
    }
    if (!queue_push(&s->queue, p)) return 0;
    s->queued_bytes += p->len;
    pthread_cond_broadcast(&changed);
    return 1;
}

/* Offer p to the handles; returns the slot that queued it (taking ownership), or NULL. Caller holds the lock. */
static Slot *offer(Packet *p, const View *v, int64_t below, int who) {
    Slot *best = choose(v, &p->addr, below, who);
    if (!best || !enqueue(best, p)) return NULL;
    return best;
}

static uint16_t ipv4_header_checksum(const uint8_t *h, uint32_t hl) {
    uint32_t sum = 0;
    for (uint32_t i = 0; i < hl; i += 2) if (i != 10) sum += (uint32_t)h[i] << 8 | h[i + 1];
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

static Packet *reassemble(Packet *frag, const View *v);

/* Route a packet the stack handed over (below = NO_LIMIT, origin UNCLAIMED) or a handle injected / released
 * (below = that handle's internal priority). Returns 1 when a handle queued it, 2 when it is held for reassembly,
 * 3 when a WINDIVERT_FLAG_DROP handle blocked it, 0 when it went to the wire. Caller holds the lock; takes ownership of p. */
static int route(Packet *p, int64_t below, int64_t from, uint8_t origin) {
    View v;
    int parsed = parse_view(p->data, p->len, &v);
    p->addr.IPv6 = parsed && v.ipv6 != NULL;
    /* Inbound loopback packets are never offered: WinDivert sees loopback traffic on the outbound path only. */
    if (!parsed || (p->addr.Loopback && !p->addr.Outbound)) {
        to_wire(p, from, origin);
        return 0;
    }
    if (v.fragment && !p->addr.Outbound) {
        Slot *taker = offer(p, &v, below, WHO_FRAGMENT_HANDLES);
        if (taker) return taker->flags & FLAG_DROP ? 3 : 1;
        if (v.ipv6 && v.frag_off == 0 && !v.more_fragments) {
            /* An IPv6 atomic fragment (RFC 6946: a fragment header, offset 0, M=0). The driver treats any fragment
             * header as a fragment, so handles without WINDIVERT_FLAG_FRAGMENTS never see it; whether Windows then
             * indicates a "reassembled" copy is not known. The double takes the worse case: it does not — the
             * packet goes straight to the stack, seen only by FRAGMENTS handles. */
            to_wire(p, from, origin);
            return 0;
        }
        Packet *whole = reassemble(p, &v);
        if (!whole) return 2;
        p = whole;
        parse_view(p->data, p->len, &v);
        if ((taker = offer(p, &v, below, WHO_REASSEMBLED_HANDLES))) return taker->flags & FLAG_DROP ? 3 : 1;
        to_wire(p, from, origin);
        return 0;
    }
    Slot *taker = offer(p, &v, below, WHO_ALL);
    if (taker) return taker->flags & FLAG_DROP ? 3 : 1;
    to_wire(p, from, origin);
    return 0;
}

/* route() for bytes the caller still owns: a copy is made only when a handle takes the packet or the wire keeps
 * it, so the benchmark's count-only wire costs no copy. Caller holds the lock. */
static int route_bytes(const uint8_t *data, uint32_t len, const WD_ADDRESS *addr, int64_t below, int64_t from, uint8_t origin) {
    View v;
    WD_ADDRESS a = *addr;
    int parsed = parse_view(data, len, &v);
    a.IPv6 = parsed && v.ipv6 != NULL;
    int inbound_fragment = parsed && v.fragment && !a.Outbound;
    int offered = parsed && !(a.Loopback && !a.Outbound) && !inbound_fragment;
    Slot *s = offered ? choose(&v, &a, below, WHO_ALL) : NULL;
    if (!s && offered && !keep_wire && !sent_file) {
        total_wire++;
        return 0;
    }
    Packet *p = packet_new(data, len, &a);
    if (!p) return 0;
    if (inbound_fragment || !parsed) return route(p, below, from, origin);
    if (s && enqueue(s, p)) return s->flags & FLAG_DROP ? 3 : 1;
    to_wire(p, from, origin);
    return 0;
}

/* Add an inbound fragment (freed here); returns the whole datagram once every byte has arrived, else NULL. */
static Packet *reassemble(Packet *frag, const View *v) {
    uint8_t key[36];
    int v6 = v->ipv6 != NULL;
    const uint8_t *p = frag->data;
    if (v6) {
        memcpy(key, p + 8, 32);
        memcpy(key + 32, p + v->frag_at + 4, 4);
    } else {
        memcpy(key, p + 12, 8);
        memcpy(key + 8, p + 4, 2);
        key[10] = p[9];
        memset(key + 11, 0, sizeof key - 11);
    }
    Reassembly *r = NULL;
    int free_slot = -1;
    for (int i = 0; i < REASM_SLOTS; i++) {
        if (reasm[i] && reasm[i]->used && reasm[i]->v6 == v6 && !memcmp(reasm[i]->key, key, sizeof key)) r = reasm[i];
        else if ((!reasm[i] || !reasm[i]->used) && free_slot < 0) free_slot = i;
    }
    if (!r) {
        if (free_slot < 0) free_slot = 0; /* all busy: the oldest slot gives way, as a stack's timeout would */
        if (!reasm[free_slot]) reasm[free_slot] = malloc(sizeof(Reassembly));
        r = reasm[free_slot];
        if (!r) {
            free(frag);
            return NULL;
        }
        memset(r, 0, offsetof(Reassembly, data));
        memset(r->seen, 0, sizeof r->seen);
        r->used = 1;
        r->v6 = v6;
        memcpy(r->key, key, sizeof key);
    }
    uint32_t payload_at = v6 ? v->frag_at + 8 : (uint32_t)(p[0] & 0x0f) * 4;
    uint32_t offset = (uint32_t)v->frag_off * 8, plen = frag->len - payload_at;
    if (offset + plen > REASM_MAX - 40) {
        free(frag);
        return NULL;
    }
    memcpy(r->data + offset, p + payload_at, plen);
    for (uint32_t i = offset; i < offset + plen; i++) {
        if (!r->seen[i]) { r->seen[i] = 1; r->covered++; }
    }
    if (!v->more_fragments) r->total = offset + plen;
    if (offset == 0) {
        r->have_first = 1;
        r->header_len = v6 ? v->frag_at : payload_at;
        memcpy(r->header, p, r->header_len);
        r->addr = frag->addr;
        if (v6) {
            r->prev_nh = v->frag_prev_nh;
            r->next_header = p[v->frag_at];
        }
    }
    free(frag);
    if (!r->have_first || !r->total || r->covered < r->total) return NULL;
    uint32_t len = r->header_len + r->total;
    Packet *whole = malloc(sizeof *whole + len);
    r->used = 0;
    if (!whole) return NULL;
    whole->len = len;
    whole->handle = 0;
    whole->origin = 0;
    whole->addr = r->addr;
    memcpy(whole->data, r->header, r->header_len);
    memcpy(whole->data + r->header_len, r->data, r->total);
    uint8_t *h = whole->data;
    if (v6) {
        h[r->prev_nh] = r->next_header;
        h[4] = (uint8_t)((len - 40) >> 8);
        h[5] = (uint8_t)(len - 40);
    } else {
        h[2] = (uint8_t)(len >> 8);
        h[3] = (uint8_t)len;
        h[6] &= 0x40; /* keep DF, clear MF and the offset */
        h[7] = 0;
        uint16_t c = ipv4_header_checksum(h, r->header_len);
        h[10] = (uint8_t)(c >> 8);
        h[11] = (uint8_t)c;
    }
    return whole;
}

static void load_env_files(void) {
    const char *in = getenv("WINDIVERT_DOUBLE_INJECT_FILE");
    const char *out = getenv("WINDIVERT_DOUBLE_SENT_FILE");
    if (out && *out) sent_file = fopen(out, "ab");
    if (!in || !*in) return;
    FILE *f = fopen(in, "rb");
    if (!f) return;
    for (;;) {
        uint8_t hdr[4];
        WD_ADDRESS addr;
        if (fread(hdr, 1, 4, f) != 4 || fread(&addr, 1, sizeof addr, f) != sizeof addr) break;
        uint32_t len = hdr[0] | hdr[1] << 8 | hdr[2] << 16 | (uint32_t)hdr[3] << 24;
        if (len > WD_MTU_MAX) break;
        Packet *p = malloc(sizeof *p + len);
        if (!p) break;
        p->len = len;
        p->handle = 0;
        p->origin = 0;
        p->addr = addr;
        if (fread(p->data, 1, len, f) != len) {
            free(p);
            break;
        }
        route(p, NO_LIMIT, 0, WD_WIRE_UNCLAIMED);
    }
    fclose(f);
}

/* ---------------------------------------------------------------------------------------------------------------
 * The REFLECT layer and the driver state shared by processes (WINDIVERT_DOUBLE_DRIVER_DIR).
 */
static int64_t now_ticks(void) {
#ifdef _WIN32
    LARGE_INTEGER li;
    QueryPerformanceCounter(&li);
    return li.QuadPart;
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
#endif
}

static uint32_t own_pid(void) {
#ifdef _WIN32
    return (uint32_t)GetCurrentProcessId();
#else
    return (uint32_t)getpid();
#endif
}

static int process_alive(uint32_t pid) {
#ifdef _WIN32
    HANDLE p = OpenProcess(0x1000 /* PROCESS_QUERY_LIMITED_INFORMATION */, FALSE, pid);
    if (!p) return 0;
    DWORD code = 0;
    int alive = GetExitCodeProcess(p, &code) && code == 259 /* STILL_ACTIVE */;
    CloseHandle(p);
    return alive;
#else
    return kill((pid_t)pid, 0) == 0 || errno == EPERM;
#endif
}

static const char *driver_dir(void) {
    const char *d = getenv("WINDIVERT_DOUBLE_DRIVER_DIR");
    return d && *d ? d : NULL;
}

static void driver_dir_path(char *out, size_t len, const char *dir, uint32_t pid, WD_HANDLE h) {
    snprintf(out, len, "%s/%u-%lld.handle", dir, pid, (long long)(intptr_t)h);
}

/* Record (open = 1) or forget (0) one of this process's handles in the shared folder. Caller holds the lock. */
static void driver_dir_note(WD_HANDLE h, const Slot *s, int open) {
    const char *dir = driver_dir();
    if (!dir) return;
    char path[4096];
    driver_dir_path(path, sizeof path, dir, own_pid(), h);
    if (!open) {
        remove(path);
        return;
    }
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fprintf(f, "%u %d %d %llu %lld\n%s", own_pid(), s->layer, s->priority, (unsigned long long)s->flags, (long long)s->opened_at,
            s->filter_text ? s->filter_text : "");
    fclose(f);
}

/* Queue one REFLECT event on a REFLECT handle: the data is the filter object (here: its text, NUL-terminated). */
static void reflect_queue(Slot *r, int event, uint32_t pid, int layer, int16_t priority, uint64_t flags, int64_t opened_at, const char *filter) {
    WD_ADDRESS a;
    memset(&a, 0, sizeof a);
    a.Timestamp = now_ticks();
    a.Layer = WD_LAYER_REFLECT;
    a.Event = (uint32_t)event;
    a.Sniffed = 1;
    a.Reflect.Timestamp = opened_at;
    a.Reflect.ProcessId = pid;
    a.Reflect.Layer = (uint32_t)layer;
    a.Reflect.Flags = flags;
    a.Reflect.Priority = priority;
    Packet *p = packet_new(filter ? filter : "", (uint32_t)strlen(filter ? filter : "") + 1, &a);
    if (p && !queue_push(&r->queue, p)) free(p);
}

/* A new REFLECT handle learns of every handle open on another layer: this process's, then the shared folder's. */
static void reflect_established(Slot *r) {
    for (uint32_t i = 0; i < slots_used; i++) {
        Slot *s = &slots[i];
        if (!s->used || s->closed || s->layer == WD_LAYER_REFLECT) continue;
        reflect_queue(r, WD_EVENT_REFLECT_OPEN, own_pid(), s->layer, s->priority, s->flags, s->opened_at, s->filter_text);
    }
    const char *dir = driver_dir();
    DIR *d = dir ? opendir(dir) : NULL;
    if (!d) return;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        size_t n = strlen(e->d_name);
        if (n < 8 || strcmp(e->d_name + n - 7, ".handle") != 0) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        unsigned pid = 0;
        int layer = 0, priority = 0;
        unsigned long long flags = 0;
        long long opened = 0;
        char filter[MAX_FILTER];
        size_t got = 0;
        int ok = fscanf(f, "%u %d %d %llu %lld", &pid, &layer, &priority, &flags, &opened) == 5 && fgetc(f) == '\n';
        if (ok) got = fread(filter, 1, sizeof filter - 1, f);
        fclose(f);
        filter[got] = 0;
        if (!ok || pid == own_pid()) continue;
        if (!process_alive(pid)) { /* the driver closed a dead process's handles */
            remove(path);
            continue;
        }
        reflect_queue(r, WD_EVENT_REFLECT_OPEN, pid, layer, (int16_t)priority, flags, opened, filter);
    }
    closedir(d);
}

/* A handle of this process closed: every open REFLECT handle of this process gets a CLOSE event. */
static void reflect_notify_close(const Slot *closed) {
    for (uint32_t i = 0; i < slots_used; i++) {
        Slot *r = &slots[i];
        if (!r->used || r->closed || r->layer != WD_LAYER_REFLECT || r->shut_recv) continue;
        reflect_queue(r, WD_EVENT_REFLECT_CLOSE, own_pid(), closed->layer, closed->priority, closed->flags, closed->opened_at, closed->filter_text);
    }
}

/* ---------------------------------------------------------------------------------------------------------------
 * The WinDivert API.
 */
WD_EXPORT WD_HANDLE WinDivertOpen(const char *filter, int layer, int16_t priority, uint64_t flags) {
    pthread_mutex_lock(&lock);
    snprintf(last_filter, sizeof last_filter, "%s", filter ? filter : "");
    last_priority = priority;
    last_flags = flags;
    last_layer = layer;
    last_open_reason = "";
    uint32_t err = open_error;
    if (err) last_open_reason = "forced by WinDivertDouble_SetOpenError";
    int reflect = layer == WD_LAYER_REFLECT;
    int socket = layer == WD_LAYER_SOCKET;
    if (!err && (layer != WD_LAYER_NETWORK && layer != WD_LAYER_NETWORK_FORWARD && !reflect && !socket)) {
        err = WD_ERROR_INVALID_PARAMETER;
        last_open_reason = "layer not modelled by the test double";
    }
    if (!err && (priority > WD_PRIORITY_MAX || priority < -WD_PRIORITY_MAX)) {
        err = WD_ERROR_INVALID_PARAMETER;
        last_open_reason = "priority out of range";
    }
    if (!err && (flags & ~(uint64_t)(FLAG_SNIFF | FLAG_DROP | FLAG_RECV_ONLY | FLAG_SEND_ONLY | FLAG_NO_INSTALL | FLAG_FRAGMENTS))) {
        err = WD_ERROR_INVALID_PARAMETER;
        last_open_reason = "unknown flag";
    }
    if (!err && reflect && (flags & (FLAG_SNIFF | FLAG_RECV_ONLY)) != (FLAG_SNIFF | FLAG_RECV_ONLY)) {
        err = WD_ERROR_INVALID_PARAMETER;
        last_open_reason = "the double models the REFLECT layer only with SNIFF | RECV_ONLY (events are never blocked or injected)";
    }
    if (!err && reflect && (flags & (FLAG_DROP | FLAG_SEND_ONLY | FLAG_FRAGMENTS))) {
        err = WD_ERROR_INVALID_PARAMETER;
        last_open_reason = "flag not valid at the REFLECT layer";
    }
    if (!err && socket && !(flags & FLAG_RECV_ONLY)) {
        err = WD_ERROR_INVALID_PARAMETER;
        last_open_reason = "the SOCKET layer requires WINDIVERT_FLAG_RECV_ONLY (socket events cannot be injected)";
    }
    if (!err && socket && !(flags & FLAG_SNIFF)) {
        err = WD_ERROR_INVALID_PARAMETER;
        last_open_reason = "the double models the SOCKET layer only with SNIFF (blocking a socket operation is not modelled)";
    }
    if (!err && socket && (flags & (FLAG_DROP | FLAG_SEND_ONLY | FLAG_FRAGMENTS))) {
        err = WD_ERROR_INVALID_PARAMETER;
        last_open_reason = "flag not valid at the SOCKET layer";
    }
    if (!err && !reflect && !socket && (flags & (FLAG_SNIFF | FLAG_RECV_ONLY | FLAG_SEND_ONLY))) {
        err = WD_ERROR_INVALID_PARAMETER;
        last_open_reason = "flag not modelled by the test double";
    }
    if (!err && slots_used == MAX_HANDLES) {
        err = WD_ERROR_INVALID_PARAMETER;
        last_open_reason = "too many handles for the test double";
    }
    Filter compiled = {0};
    Node *root = NULL;
    if (!err) {
        if (!filter) {
            err = WD_ERROR_INVALID_PARAMETER;
            last_open_reason = "no filter";
        } else if (reflect) {
            if (strcmp(filter, "true") != 0) {
                err = WD_ERROR_INVALID_PARAMETER;
                last_open_reason = "the double models only the filter \"true\" at the REFLECT layer";
            }
        } else if (!(root = compile_filter(filter, socket ? WD_LAYER_SOCKET : WD_LAYER_NETWORK, &compiled, &last_open_reason))) {
            err = WD_ERROR_INVALID_PARAMETER;
        }
    }
    if (err) {
        pthread_mutex_unlock(&lock);
        set_error(err);
        return WD_INVALID_HANDLE;
    }
    Slot *s = &slots[slots_used];
    unsigned generation = s->generation + 1;
    memset(s, 0, sizeof *s);
    s->used = 1;
    s->generation = generation;
    s->priority = priority;
    s->rank = internal_priority(priority);
    s->flags = flags;
    s->filter = compiled;
    s->root = root;
    s->params[WD_PARAM_QUEUE_LENGTH] = 4096;
    s->params[WD_PARAM_QUEUE_TIME] = 2000;
    s->params[WD_PARAM_QUEUE_SIZE] = 4194304;
    s->layer = layer;
    s->opened_at = now_ticks();
    s->filter_text = strdup(filter);
    WD_HANDLE h = (WD_HANDLE)(intptr_t)(HANDLE_BASE + slots_used);
    slots_used++;
    if (reflect) reflect_established(s);
    else driver_dir_note(h, s, 1);
    if (!env_done) {
        env_done = 1;
        load_env_files();
    }
    pthread_mutex_unlock(&lock);
    return h;
}

WD_EXPORT WD_BOOL WinDivertRecvEx(WD_HANDLE handle, void *pPacket, uint32_t packetLen, uint32_t *pRecvLen,
                                  uint64_t flags, WD_ADDRESS *pAddr, uint32_t *pAddrLen, WD_OVERLAPPED lpOverlapped) {
    if (lpOverlapped || flags || !pPacket) {
        set_error(WD_ERROR_INVALID_PARAMETER);
        return 0;
    }
    uint32_t max = pAddrLen ? *pAddrLen / sizeof(WD_ADDRESS) : 1;
    if (max > WD_BATCH_MAX) max = WD_BATCH_MAX;
    if (max == 0 || !pAddr) {
        set_error(WD_ERROR_INVALID_PARAMETER);
        return 0;
    }
    pthread_mutex_lock(&lock);
    Slot *s = slot_of(handle);
    unsigned generation = s ? s->generation : 0;
    while (s && s->queue.count == 0 && !s->shut_recv) {
        pthread_cond_wait(&changed, &lock);
        s = slot_of(handle);
        if (s && s->generation != generation) s = NULL;
    }
    if (!s) {
        pthread_mutex_unlock(&lock);
        set_error(WD_ERROR_INVALID_HANDLE);
        return 0;
    }
    if (s->queue.count == 0) {
        pthread_mutex_unlock(&lock);
        set_error(WD_ERROR_NO_DATA);
        return 0;
    }
    uint32_t n = 0, bytes = 0;
    uint32_t err = 0;
    for (Packet *p = queue_peek(&s->queue); p && n < max; p = queue_peek(&s->queue)) {
        if (bytes + p->len > packetLen) {
            if (n == 0) { /* the first packet alone does not fit: truncate it, as WinDivert does */
                memcpy(pPacket, p->data, packetLen);
                pAddr[0] = p->addr;
                bytes = packetLen;
                n = 1;
                s->queued_bytes -= p->len;
                free(queue_pop(&s->queue));
                err = WD_ERROR_INSUFFICIENT_BUFFER;
            }
            break;
        }
        memcpy((uint8_t *)pPacket + bytes, p->data, p->len);
        pAddr[n++] = p->addr;
        bytes += p->len;
        s->queued_bytes -= p->len;
        free(queue_pop(&s->queue));
    }
    pthread_mutex_unlock(&lock);
    if (pRecvLen) *pRecvLen = bytes;
    if (pAddrLen) *pAddrLen = n * sizeof(WD_ADDRESS);
    if (err) {
        set_error(err);
        return 0;
    }
    return 1;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Driver facts of issue 19 (internal priorities, checksums at injection), kept together.
 */

/* The driver's internal priority of a new handle: (user priority + 30000) << 16 | (a per-open counter & 0xFFFF). The
 * counter counts every open on the host and wraps after 65,536: a newer handle of equal user priority then ranks
 * BELOW an older one. Caller holds the lock. */
static uint32_t internal_priority(int16_t priority) {
    priority_counter++;
    return (uint32_t)(priority + WD_PRIORITY_MAX) << 16 | (priority_counter & 0xFFFF);
}

/* One's-complement sum of bytes (network order), folded. */
static uint32_t sum16(const uint8_t *d, uint32_t n, uint32_t sum) {
    for (uint32_t i = 0; i + 1 < n; i += 2) sum += (uint32_t)d[i] << 8 | d[i + 1];
    if (n & 1) sum += (uint32_t)d[n - 1] << 8;
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return sum;
}

/* Would injection recompute a checksum of this packet? (Any IP/TCP/UDP flag 0.) */
static int needs_checksums(const WD_ADDRESS *a) { return !a->IPChecksum || !a->TCPChecksum || !a->UDPChecksum; }

/* At injection the driver recomputes the IPv4 header, TCP and UDP checksums whose address flag is 0 (never ICMP or
 * ICMPv6: it assumes those valid), skipping transport checksums of fragments; a UDP result of 0 is sent as 0xFFFF.
 * The address flags are left as they were. */
static void fill_checksums(Packet *p) {
    View v;
    if (!parse_view(p->data, p->len, &v)) return;
    uint8_t *d = p->data;
    if (v.ip && !p->addr.IPChecksum) {
        uint32_t hl = (uint32_t)(d[0] & 0x0f) * 4;
        uint16_t c = ipv4_header_checksum(d, hl);
        d[10] = (uint8_t)(c >> 8);
        d[11] = (uint8_t)c;
    }
    int whole = !(v.frag_off || v.more_fragments);
    uint8_t *t = (uint8_t *)(v.tcp ? v.tcp : v.udp);
    if (!whole || !t || (v.tcp && p->addr.TCPChecksum) || (v.udp && p->addr.UDPChecksum)) return;
    uint32_t tlen = p->len - (uint32_t)(t - d);
    uint32_t at = v.tcp ? 16 : 6;
    if (at + 2 > tlen) return;
    uint8_t pseudo[40];
    uint32_t plen;
    if (v.ip) {
        memcpy(pseudo, d + 12, 8);
        pseudo[8] = 0;
        pseudo[9] = v.tcp ? 6 : 17;
        pseudo[10] = (uint8_t)(tlen >> 8);
        pseudo[11] = (uint8_t)tlen;
        plen = 12;
    } else {
        memcpy(pseudo, d + 8, 32);
        pseudo[32] = (uint8_t)(tlen >> 24);
        pseudo[33] = (uint8_t)(tlen >> 16);
        pseudo[34] = (uint8_t)(tlen >> 8);
        pseudo[35] = (uint8_t)tlen;
        pseudo[36] = pseudo[37] = pseudo[38] = 0;
        pseudo[39] = v.tcp ? 6 : 17;
        plen = 40;
    }
    t[at] = t[at + 1] = 0;
    uint16_t c = (uint16_t)~sum16(t, tlen, sum16(pseudo, plen, 0));
    if (v.udp && c == 0) c = 0xffff;
    t[at] = (uint8_t)(c >> 8);
    t[at + 1] = (uint8_t)c;
}

WD_EXPORT uint64_t WinDivertDouble_QueueDropped(void) {
    pthread_mutex_lock(&lock);
    uint64_t n = queue_dropped;
    pthread_mutex_unlock(&lock);
    return n;
}

WD_EXPORT void WinDivertDouble_SetPriorityCounter(uint32_t value) {
    pthread_mutex_lock(&lock);
    priority_counter = value;
    pthread_mutex_unlock(&lock);
}

/* An impostor loses one hop before re-injection; 0 when none is left (the packet is then not injected). */
static int decrement_hop(Packet *p) {
    uint8_t *h = p->data;
    if ((h[0] >> 4) == 4) {
        if (h[8] <= 1) return 0;
        h[8]--;
        uint32_t hl = (uint32_t)(h[0] & 0x0f) * 4;
        uint16_t c = ipv4_header_checksum(h, hl);
        h[10] = (uint8_t)(c >> 8);
        h[11] = (uint8_t)c;
    } else {
        if (h[7] <= 1) return 0;
        h[7]--;
    }
    return 1;
}

WD_EXPORT WD_BOOL WinDivertSendEx(WD_HANDLE handle, const void *pPacket, uint32_t packetLen, uint32_t *pSendLen,
                                  uint64_t flags, const WD_ADDRESS *pAddr, uint32_t addrLen, WD_OVERLAPPED lpOverlapped) {
    uint32_t count = addrLen / sizeof(WD_ADDRESS);
    if (lpOverlapped || flags || !pPacket || !pAddr || addrLen % sizeof(WD_ADDRESS) || count == 0 || count > WD_BATCH_MAX) {
        set_error(WD_ERROR_INVALID_PARAMETER);
        return 0;
    }
    pthread_mutex_lock(&lock);
    Slot *s = slot_of(handle);
    if (!s || s->shut_send) { /* driver: a write after SHUTDOWN_SEND completes with STATUS_PIPE_EMPTY = 232 */
        pthread_mutex_unlock(&lock);
        set_error(s ? WD_ERROR_NO_DATA : WD_ERROR_INVALID_HANDLE);
        return 0;
    }
    int64_t h = (int64_t)(intptr_t)handle;
    uint32_t off = 0, soft = 0;
    for (uint32_t i = 0; i < count; i++) {
        uint32_t len = ip_length((const uint8_t *)pPacket + off, packetLen - off);
        if (!len) { /* hard error: the packets before this one are already injected */
            pthread_mutex_unlock(&lock);
            set_error(WD_ERROR_INVALID_PARAMETER);
            return 0;
        }
        const uint8_t *bytes = (const uint8_t *)pPacket + off;
        off += len;
        if (fail_code && (fail_index < 0 || (uint32_t)fail_index == i)) {
            View v;
            if (!fail_root || (parse_view(bytes, len, &v) && eval_node(fail_root, &v, &pAddr[i]))) {
                soft = fail_code;
                continue;
            }
        }
        WD_ADDRESS a = pAddr[i];
        a.Impostor = 0; /* injected by WinDivert itself: lower priorities see it as such */
        if (pAddr[i].Impostor || needs_checksums(&a)) { /* changed before injection, so it needs its own copy */
            Packet *p = packet_new(bytes, len, &a);
            if (!p) continue;
            fill_checksums(p); /* first the checksums, then the hop (driver order) */
            if (pAddr[i].Impostor && !decrement_hop(p)) {
                soft = WD_ERROR_HOST_UNREACHABLE;
                free(p);
                continue;
            }
            route(p, s->rank, h, WD_WIRE_SENT);
            continue;
        }
        route_bytes(bytes, len, &a, s->rank, h, WD_WIRE_SENT);
    }
    pthread_mutex_unlock(&lock);
    if (pSendLen) *pSendLen = off;
    if (soft) {
        set_error(soft);
        return 0;
    }
    return 1;
}

WD_EXPORT WD_BOOL WinDivertShutdown(WD_HANDLE handle, int how) {
    pthread_mutex_lock(&lock);
    Slot *s = slot_of(handle);
    if (!s || how < WD_SHUTDOWN_RECV || how > WD_SHUTDOWN_BOTH) {
        pthread_mutex_unlock(&lock);
        set_error(s ? WD_ERROR_INVALID_PARAMETER : WD_ERROR_INVALID_HANDLE);
        return 0;
    }
    if (how & WD_SHUTDOWN_RECV) s->shut_recv = 1;
    if (how & WD_SHUTDOWN_SEND) s->shut_send = 1;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
    return 1;
}

WD_EXPORT WD_BOOL WinDivertClose(WD_HANDLE handle) {
    pthread_mutex_lock(&lock);
    Slot *s = slot_of(handle);
    if (!s) {
        pthread_mutex_unlock(&lock);
        set_error(WD_ERROR_INVALID_HANDLE);
        return 0;
    }
    s->closed = 1;
    if (s->layer != WD_LAYER_REFLECT) {
        driver_dir_note(handle, s, 0);
        reflect_notify_close(s);
    }
    /* Still-queued packets go back unmodified: on to lower priorities, else the wire. */
    for (Packet *p = queue_pop(&s->queue); p; p = queue_pop(&s->queue)) {
        p->addr.Impostor = 0;
        route(p, s->rank, (int64_t)(intptr_t)handle, WD_WIRE_RELEASED);
    }
    queue_clear(&s->queue);
    free(s->filter.nodes);
    s->filter.nodes = NULL;
    s->root = NULL;
    free(s->filter_text);
    s->filter_text = NULL;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
    return 1;
}

/* Documented [min, max] of each settable parameter. */
static const uint64_t param_min[3] = {32, 100, 65535};
static const uint64_t param_max[3] = {16384, 16000, 33554432};

WD_EXPORT WD_BOOL WinDivertSetParam(WD_HANDLE handle, int param, uint64_t value) {
    pthread_mutex_lock(&lock);
    Slot *s = slot_of(handle);
    uint32_t err = !s ? WD_ERROR_INVALID_HANDLE
                 : param < 0 || param > WD_PARAM_QUEUE_SIZE || value < param_min[param] || value > param_max[param]
                     ? WD_ERROR_INVALID_PARAMETER
                     : 0;
    if (!err) s->params[param] = value;
    pthread_mutex_unlock(&lock);
    if (err) {
        set_error(err);
        return 0;
    }
    return 1;
}

WD_EXPORT WD_BOOL WinDivertGetParam(WD_HANDLE handle, int param, uint64_t *pValue) {
    pthread_mutex_lock(&lock);
    Slot *s = slot_of(handle);
    uint32_t err = !s ? WD_ERROR_INVALID_HANDLE : param < 0 || param > WD_PARAM_VERSION_MINOR || !pValue ? WD_ERROR_INVALID_PARAMETER : 0;
    if (!err) *pValue = param == WD_PARAM_VERSION_MAJOR ? 2 : param == WD_PARAM_VERSION_MINOR ? 2 : s->params[param];
    pthread_mutex_unlock(&lock);
    if (err) {
        set_error(err);
        return 0;
    }
    return 1;
}

/* ---------------------------------------------------------------------------------------------------------------
 * TEST-DOUBLE controls.
 */
WD_EXPORT uint32_t WinDivertDouble_InjectRepeat(const void *packet, uint32_t len, const WD_ADDRESS *addr, uint32_t count) {
    uint32_t taken = 0;
    pthread_mutex_lock(&lock);
    for (uint32_t i = 0; i < count; i++) taken += route_bytes(packet, len, addr, NO_LIMIT, 0, WD_WIRE_UNCLAIMED) == 1;
    pthread_mutex_unlock(&lock);
    return taken;
}

/* The stack performed a socket operation: every open SOCKET handle whose filter matches gets the event (sniffed, no
 * data). Returns how many handles queued it, or -1 when addr->Event is not a SOCKET-layer event. */
WD_EXPORT int WinDivertDouble_SocketEvent(const WD_ADDRESS *addr) {
    if (!addr || addr->Event < WD_EVENT_SOCKET_BIND || addr->Event > WD_EVENT_SOCKET_CLOSE) return -1;
    WD_ADDRESS a = *addr;
    a.Timestamp = now_ticks();
    a.Layer = WD_LAYER_SOCKET;
    a.Sniffed = 1;
    int queued = 0;
    pthread_mutex_lock(&lock);
    for (uint32_t i = 0; i < slots_used; i++) {
        Slot *s = &slots[i];
        if (!s->used || s->closed || s->shut_recv || s->layer != WD_LAYER_SOCKET || !s->root) continue;
        if (!eval_node(s->root, NULL, &a)) continue;
        Packet *p = packet_new("", 0, &a);
        if (p && enqueue(s, p)) queued++;
        else free(p);
    }
    pthread_mutex_unlock(&lock);
    return queued;
}

WD_EXPORT int WinDivertDouble_Inject(const void *packet, uint32_t len, const WD_ADDRESS *addr) {
    pthread_mutex_lock(&lock);
    Packet *p = packet_new(packet, len, addr);
    int r = p ? route(p, NO_LIMIT, 0, WD_WIRE_UNCLAIMED) : 0;
    pthread_mutex_unlock(&lock);
    return r;
}

WD_EXPORT int WinDivertDouble_Matches(const char *filter, const void *packet, uint32_t len, const WD_ADDRESS *addr) {
    Filter f = {0};
    const char *reason = "";
    Node *root = compile_filter(filter, WD_LAYER_NETWORK, &f, &reason);
    if (!root) return -1;
    View v;
    int r = parse_view(packet, len, &v) && eval_node(root, &v, addr);
    free(f.nodes);
    return r;
}

WD_EXPORT WD_BOOL WinDivertHelperEvalFilter(const char *filter, const void *pPacket, uint32_t packetLen, const WD_ADDRESS *pAddr) {
    if (!filter || !pPacket || !pAddr) {
        set_error(WD_ERROR_INVALID_PARAMETER);
        return 0;
    }
    int r = WinDivertDouble_Matches(filter, pPacket, packetLen, pAddr);
    if (r < 0) {
        set_error(WD_ERROR_INVALID_PARAMETER);
        return 0;
    }
    if (!r) set_error(0);
    return r;
}

/* The double's filter object is the filter text itself, so formatting it is a copy. */
WD_EXPORT WD_BOOL WinDivertHelperFormatFilter(const char *filter, int layer, char *buffer, uint32_t bufLen) {
    (void)layer;
    if (!filter || !buffer || bufLen == 0 || strlen(filter) >= bufLen) {
        set_error(filter && buffer && bufLen ? WD_ERROR_INSUFFICIENT_BUFFER : WD_ERROR_INVALID_PARAMETER);
        return 0;
    }
    memcpy(buffer, filter, strlen(filter) + 1);
    return 1;
}

WD_EXPORT int WinDivertDouble_SetSendFailure(int32_t index, const char *filter, uint32_t code) {
    pthread_mutex_lock(&lock);
    free(fail_filter.nodes);
    memset(&fail_filter, 0, sizeof fail_filter);
    fail_root = NULL;
    fail_code = 0;
    fail_index = index;
    const char *reason = "";
    int ok = 1;
    if (code && filter && *filter) {
        fail_root = compile_filter(filter, WD_LAYER_NETWORK, &fail_filter, &reason);
        ok = fail_root != NULL;
    }
    if (ok) fail_code = code;
    pthread_mutex_unlock(&lock);
    return ok;
}

WD_EXPORT uint32_t WinDivertDouble_CollectSent(void *buf, uint32_t bufLen, uint32_t *pBytes, WD_ADDRESS *addrs,
                                               int64_t *handles, uint8_t *origins, uint32_t maxCount) {
    uint32_t n = 0, bytes = 0;
    pthread_mutex_lock(&lock);
    for (Packet *p = queue_peek(&wire); p && n < maxCount && bytes + p->len <= bufLen; p = queue_peek(&wire)) {
        memcpy((uint8_t *)buf + bytes, p->data, p->len);
        bytes += p->len;
        if (addrs) addrs[n] = p->addr;
        if (handles) handles[n] = p->handle;
        if (origins) origins[n] = p->origin;
        n++;
        free(queue_pop(&wire));
    }
    pthread_mutex_unlock(&lock);
    if (pBytes) *pBytes = bytes;
    return n;
}

WD_EXPORT uint32_t WinDivertDouble_SentCount(void) {
    pthread_mutex_lock(&lock);
    uint32_t n = (uint32_t)wire.count;
    pthread_mutex_unlock(&lock);
    return n;
}

WD_EXPORT uint32_t WinDivertDouble_DiscardSent(void) {
    pthread_mutex_lock(&lock);
    uint32_t n = (uint32_t)wire.count;
    queue_clear(&wire);
    pthread_mutex_unlock(&lock);
    return n;
}

WD_EXPORT void WinDivertDouble_SetKeepSent(int keep) {
    pthread_mutex_lock(&lock);
    keep_wire = keep != 0;
    pthread_mutex_unlock(&lock);
}

WD_EXPORT uint64_t WinDivertDouble_TotalSent(void) {
    pthread_mutex_lock(&lock);
    uint64_t n = total_wire;
    pthread_mutex_unlock(&lock);
    return n;
}

WD_EXPORT uint32_t WinDivertDouble_LastFilter(char *buf, uint32_t len) {
    pthread_mutex_lock(&lock);
    uint32_t n = (uint32_t)strlen(last_filter);
    if (buf && len) snprintf(buf, len, "%s", last_filter);
    pthread_mutex_unlock(&lock);
    return n;
}

WD_EXPORT uint32_t WinDivertDouble_LastOpenReason(char *buf, uint32_t len) {
    pthread_mutex_lock(&lock);
    uint32_t n = (uint32_t)strlen(last_open_reason);
    if (buf && len) snprintf(buf, len, "%s", last_open_reason);
    pthread_mutex_unlock(&lock);
    return n;
}

WD_EXPORT int16_t WinDivertDouble_LastPriority(void) { return last_priority; }
WD_EXPORT uint64_t WinDivertDouble_LastFlags(void) { return last_flags; }
WD_EXPORT int WinDivertDouble_LastLayer(void) { return last_layer; }

WD_EXPORT uint32_t WinDivertDouble_OpenHandles(void) {
    uint32_t n = 0;
    pthread_mutex_lock(&lock);
    for (uint32_t i = 0; i < slots_used; i++) n += slots[i].used && !slots[i].closed;
    pthread_mutex_unlock(&lock);
    return n;
}

WD_EXPORT uint32_t WinDivertDouble_Queued(WD_HANDLE handle) {
    pthread_mutex_lock(&lock);
    Slot *s = slot_of(handle);
    uint32_t n = s ? (uint32_t)s->queue.count : 0;
    pthread_mutex_unlock(&lock);
    return n;
}

WD_EXPORT void WinDivertDouble_SetOpenError(uint32_t code) {
    pthread_mutex_lock(&lock);
    open_error = code;
    pthread_mutex_unlock(&lock);
}

WD_EXPORT void WinDivertDouble_Reset(void) {
    pthread_mutex_lock(&lock);
    for (uint32_t i = 0; i < MAX_HANDLES; i++) {
        if (slots[i].used) queue_clear(&slots[i].queue);
        if (slots[i].used && !slots[i].closed && slots[i].layer != WD_LAYER_REFLECT) driver_dir_note((WD_HANDLE)(intptr_t)(HANDLE_BASE + i), &slots[i], 0);
        free(slots[i].filter.nodes);
        free(slots[i].filter_text);
        unsigned generation = slots[i].generation + 1; /* waiters of the old handle see it is gone */
        memset(&slots[i], 0, sizeof slots[i]);
        slots[i].generation = generation;
    }
    for (int i = 0; i < REASM_SLOTS; i++) if (reasm[i]) reasm[i]->used = 0;
    slots_used = 0;
    priority_counter = 0;
    queue_dropped = 0;
    queue_clear(&wire);
    keep_wire = 1;
    total_wire = 0;
    open_error = 0;
    free(fail_filter.nodes);
    memset(&fail_filter, 0, sizeof fail_filter);
    fail_root = NULL;
    fail_code = 0;
    fail_index = -1;
    last_filter[0] = 0;
    last_open_reason = "";
    last_priority = 0;
    last_flags = 0;
    last_layer = -1;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
}
