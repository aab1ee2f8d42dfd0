/*
 * windivert_double: an ABI-compatible TEST DOUBLE of WinDivert.dll, for tests and benchmarks only.
 *
 * It exports the WinDivert functions retroflect binds, with the same names and argument layout, so the TypeScript
 * binding can be exercised unchanged on Linux (libwindivert_double.so) and under Wine (a mingw WinDivert.dll).
 * It never touches a network. Its "network" is a queue per handle:
 *  - WinDivertDouble_Inject queues a packet to the newest open handle that has not shut down receiving (the
 *    newest handle is what a live reconfiguration opens, so it gets new traffic, as with WinDivert priorities);
 *  - WinDivertRecvEx blocks until packets are queued, returns up to the caller's buffer and address-array size,
 *    and after WINDIVERT_SHUTDOWN_RECV returns what is still queued, then fails with ERROR_NO_DATA;
 *  - WinDivertSendEx splits the buffer into packets by their IP length and logs each with its address.
 * Overlapped I/O is not supported (lpOverlapped must be NULL): retroflect does not use it.
 *
 * Optional environment, read at the first successful open, to drive a whole `retroflect run` from files:
 *  WINDIVERT_DOUBLE_INJECT_FILE  records to queue to that first handle;
 *  WINDIVERT_DOUBLE_SENT_FILE    every sent packet is appended as a record.
 * A record is: uint32 little-endian packet length, the 80-byte address, the packet bytes.
 */
#include "windivert_abi.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Handles are small numbers: HANDLE_BASE + slot index. A slot is never reused until WinDivertDouble_Reset. */
#define HANDLE_BASE 0x1000
#define MAX_HANDLES 4096
/* Longest filter kept for WinDivertDouble_LastFilter (WinDivert's own limit on filter tokens is far below). */
#define MAX_FILTER 65536

typedef struct Packet {
    uint32_t len;
    int64_t handle; /* the handle it was sent on (sent log only) */
    WD_ADDRESS addr;
    uint8_t data[];
} Packet;

/* A growable FIFO ring of packet pointers. */
typedef struct {
    Packet **items;
    size_t head, count, cap;
} PacketQueue;

typedef struct {
    int used, closed, shut_recv, shut_send;
    unsigned generation;
    uint64_t params[3]; /* queue length, time, size */
    PacketQueue queue;
} Slot;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static Slot slots[MAX_HANDLES];
static uint32_t slots_used;
static PacketQueue sent_log;
static int keep_sent = 1;
static uint64_t total_sent;
static uint32_t open_error;
static char last_filter[MAX_FILTER];
static int16_t last_priority;
static uint64_t last_flags;
static int last_layer = -1;
static int env_done;
static FILE *sent_file;

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

/* The handle new traffic goes to: the newest one still receiving. Caller holds the lock. */
static Slot *receiving_slot(void) {
    for (uint32_t i = slots_used; i-- > 0;) {
        if (slots[i].used && !slots[i].closed && !slots[i].shut_recv) return &slots[i];
    }
    return NULL;
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

/* Minimal sanity check standing in for WinDivert's filter compiler: non-empty, balanced parentheses. */
static int filter_plausible(const char *f) {
    int depth = 0, any = 0;
    for (; *f; f++) {
        if (*f == '(') depth++;
        else if (*f == ')' && --depth < 0) return 0;
        else if (*f != ' ') any = 1;
    }
    return any && depth == 0;
}

static void load_env_files(Slot *s) {
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
        p->addr = addr;
        if (fread(p->data, 1, len, f) != len || !queue_push(&s->queue, p)) {
            free(p);
            break;
        }
    }
    fclose(f);
}

WD_EXPORT WD_HANDLE WinDivertOpen(const char *filter, int layer, int16_t priority, uint64_t flags) {
    pthread_mutex_lock(&lock);
    snprintf(last_filter, sizeof last_filter, "%s", filter ? filter : "");
    last_priority = priority;
    last_flags = flags;
    last_layer = layer;
    uint32_t err = open_error;
    if (!err && (!filter || !filter_plausible(filter) || layer < 0 || layer > 4 || priority > WD_PRIORITY_MAX ||
                 priority < -WD_PRIORITY_MAX))
        err = WD_ERROR_INVALID_PARAMETER;
    if (!err && slots_used == MAX_HANDLES) err = WD_ERROR_INVALID_PARAMETER;
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
    s->params[WD_PARAM_QUEUE_LENGTH] = 4096;
    s->params[WD_PARAM_QUEUE_TIME] = 2000;
    s->params[WD_PARAM_QUEUE_SIZE] = 4194304;
    WD_HANDLE h = (WD_HANDLE)(intptr_t)(HANDLE_BASE + slots_used);
    slots_used++;
    if (!env_done) {
        env_done = 1;
        load_env_files(s);
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
                free(queue_pop(&s->queue));
                err = WD_ERROR_INSUFFICIENT_BUFFER;
            }
            break;
        }
        memcpy((uint8_t *)pPacket + bytes, p->data, p->len);
        pAddr[n++] = p->addr;
        bytes += p->len;
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

static void write_record(FILE *f, const Packet *p) {
    uint8_t hdr[4] = {p->len & 0xff, p->len >> 8 & 0xff, p->len >> 16 & 0xff, p->len >> 24 & 0xff};
    fwrite(hdr, 1, 4, f);
    fwrite(&p->addr, 1, sizeof p->addr, f);
    fwrite(p->data, 1, p->len, f);
}

WD_EXPORT WD_BOOL WinDivertSendEx(WD_HANDLE handle, const void *pPacket, uint32_t packetLen, uint32_t *pSendLen,
                                  uint64_t flags, const WD_ADDRESS *pAddr, uint32_t addrLen, WD_OVERLAPPED lpOverlapped) {
    uint32_t count = addrLen / sizeof(WD_ADDRESS);
    if (lpOverlapped || flags || !pPacket || !pAddr || addrLen % sizeof(WD_ADDRESS) || count == 0 || count > WD_BATCH_MAX) {
        set_error(WD_ERROR_INVALID_PARAMETER);
        return 0;
    }
    /* Split first, outside the lock: every address must have exactly one whole IP packet. */
    uint32_t offsets[WD_BATCH_MAX], lengths[WD_BATCH_MAX], off = 0;
    for (uint32_t i = 0; i < count; i++) {
        uint32_t len = ip_length((const uint8_t *)pPacket + off, packetLen - off);
        if (!len) {
            set_error(WD_ERROR_INVALID_PARAMETER);
            return 0;
        }
        offsets[i] = off;
        lengths[i] = len;
        off += len;
    }
    if (off != packetLen) {
        set_error(WD_ERROR_INVALID_PARAMETER);
        return 0;
    }
    pthread_mutex_lock(&lock);
    Slot *s = slot_of(handle);
    if (!s || s->shut_send) {
        pthread_mutex_unlock(&lock);
        set_error(s ? WD_ERROR_INVALID_PARAMETER : WD_ERROR_INVALID_HANDLE);
        return 0;
    }
    total_sent += count;
    if (keep_sent || sent_file) {
        for (uint32_t i = 0; i < count; i++) {
            Packet *p = packet_new((const uint8_t *)pPacket + offsets[i], lengths[i], &pAddr[i]);
            if (!p) break;
            p->handle = (int64_t)(intptr_t)handle;
            if (sent_file) write_record(sent_file, p);
            if (!keep_sent || !queue_push(&sent_log, p)) free(p);
        }
        if (sent_file) fflush(sent_file);
    }
    pthread_mutex_unlock(&lock);
    if (pSendLen) *pSendLen = packetLen;
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
    queue_clear(&s->queue);
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

WD_EXPORT uint32_t WinDivertDouble_InjectRepeat(const void *packet, uint32_t len, const WD_ADDRESS *addr, uint32_t count) {
    uint32_t done = 0;
    pthread_mutex_lock(&lock);
    Slot *s = receiving_slot();
    for (; s && done < count; done++) {
        Packet *p = packet_new(packet, len, addr);
        if (!p) break;
        if (!queue_push(&s->queue, p)) {
            free(p);
            break;
        }
    }
    if (done) pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
    return done;
}

WD_EXPORT int WinDivertDouble_Inject(const void *packet, uint32_t len, const WD_ADDRESS *addr) {
    return WinDivertDouble_InjectRepeat(packet, len, addr, 1) == 1;
}

WD_EXPORT uint32_t WinDivertDouble_CollectSent(void *buf, uint32_t bufLen, uint32_t *pBytes, WD_ADDRESS *addrs,
                                               int64_t *handles, uint32_t maxCount) {
    uint32_t n = 0, bytes = 0;
    pthread_mutex_lock(&lock);
    for (Packet *p = queue_peek(&sent_log); p && n < maxCount && bytes + p->len <= bufLen; p = queue_peek(&sent_log)) {
        memcpy((uint8_t *)buf + bytes, p->data, p->len);
        bytes += p->len;
        if (addrs) addrs[n] = p->addr;
        if (handles) handles[n] = p->handle;
        n++;
        free(queue_pop(&sent_log));
    }
    pthread_mutex_unlock(&lock);
    if (pBytes) *pBytes = bytes;
    return n;
}

WD_EXPORT uint32_t WinDivertDouble_SentCount(void) {
    pthread_mutex_lock(&lock);
    uint32_t n = (uint32_t)sent_log.count;
    pthread_mutex_unlock(&lock);
    return n;
}

WD_EXPORT uint32_t WinDivertDouble_DiscardSent(void) {
    pthread_mutex_lock(&lock);
    uint32_t n = (uint32_t)sent_log.count;
    queue_clear(&sent_log);
    pthread_mutex_unlock(&lock);
    return n;
}

WD_EXPORT void WinDivertDouble_SetKeepSent(int keep) {
    pthread_mutex_lock(&lock);
    keep_sent = keep != 0;
    pthread_mutex_unlock(&lock);
}

WD_EXPORT uint64_t WinDivertDouble_TotalSent(void) {
    pthread_mutex_lock(&lock);
    uint64_t n = total_sent;
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
        unsigned generation = slots[i].generation + 1; /* waiters of the old handle see it is gone */
        memset(&slots[i], 0, sizeof slots[i]);
        slots[i].generation = generation;
    }
    slots_used = 0;
    queue_clear(&sent_log);
    keep_sent = 1;
    total_sent = 0;
    open_error = 0;
    last_filter[0] = 0;
    last_priority = 0;
    last_flags = 0;
    last_layer = -1;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
}
