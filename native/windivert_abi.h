/*
 * The WinDivert 2.x user-mode ABI as retroflect uses it, written from the public WinDivert documentation
 * (reqrypt.org/windivert-doc.html, include/windivert.h of WinDivert 2.2): the address struct, the constants and
 * the exported functions' prototypes. Both the ABI-compatible TEST DOUBLE (windivert_double.c) and the layout
 * probe (address_probe.c) are compiled against this header, for Linux (gcc) and for Windows x64 (mingw).
 *
 * Nothing here is WinDivert's own code: the declarations follow the documented layout so that the TypeScript
 * codec in src/packet-sources/windivert/address.ts can be checked against a real C compiler's bitfield placement.
 */
#ifndef RETROFLECT_WINDIVERT_ABI_H
#define RETROFLECT_WINDIVERT_ABI_H

#include <stdint.h>

#ifdef _WIN32
#include <windows.h>
#define WD_EXPORT __declspec(dllexport)
typedef HANDLE WD_HANDLE;
typedef BOOL WD_BOOL;
typedef LPOVERLAPPED WD_OVERLAPPED;
#else
#define WD_EXPORT __attribute__((visibility("default")))
/* On x64 Windows a HANDLE is a pointer and BOOL an int; the Linux build keeps the same sizes. */
typedef void *WD_HANDLE;
typedef int WD_BOOL;
typedef void *WD_OVERLAPPED;
#endif

#define WD_INVALID_HANDLE ((WD_HANDLE)(intptr_t)-1)

/* Layers (WINDIVERT_LAYER). Retroflect opens the network layer, the SOCKET layer (who opens a flow) and REFLECT. */
#define WD_LAYER_NETWORK 0
#define WD_LAYER_NETWORK_FORWARD 1
/* WinDivert handle events: OPEN/CLOSE of other handles (modelled for the doctor; see windivert_double.c). */
#define WD_LAYER_SOCKET 3
#define WD_LAYER_REFLECT 4
/* SOCKET-layer events (WINDIVERT_EVENT_SOCKET_*). */
#define WD_EVENT_SOCKET_BIND 3
#define WD_EVENT_SOCKET_CONNECT 4
#define WD_EVENT_SOCKET_LISTEN 5
#define WD_EVENT_SOCKET_ACCEPT 6
#define WD_EVENT_SOCKET_CLOSE 7
#define WD_EVENT_REFLECT_OPEN 8
#define WD_EVENT_REFLECT_CLOSE 9

/* WinDivertOpen flag: capture inbound IP fragments instead of the reassembled packet. */
#define WD_FLAG_FRAGMENTS 0x20

/* WinDivertShutdown `how` values (WINDIVERT_SHUTDOWN). */
#define WD_SHUTDOWN_RECV 1
#define WD_SHUTDOWN_SEND 2
#define WD_SHUTDOWN_BOTH 3

/* Parameters for WinDivertSetParam/GetParam (WINDIVERT_PARAM) and their documented ranges. */
#define WD_PARAM_QUEUE_LENGTH 0 /* packets; 32 .. 16384, default 4096 */
#define WD_PARAM_QUEUE_TIME 1   /* milliseconds; 100 .. 16000, default 2000 */
#define WD_PARAM_QUEUE_SIZE 2   /* bytes; 65535 .. 33554432, default 4 MiB */
#define WD_PARAM_VERSION_MAJOR 3 /* read-only */
#define WD_PARAM_VERSION_MINOR 4 /* read-only */

/* Priorities run from -30000 to 30000; a batch holds at most 255 packets; a packet is at most 40 + 65535 bytes. */
#define WD_PRIORITY_MAX 30000
#define WD_BATCH_MAX 255
#define WD_MTU_MAX (40 + 0xFFFF)

/* Windows error codes WinDivert reports through GetLastError (winerror.h values). */
#define WD_ERROR_FILE_NOT_FOUND 2
#define WD_ERROR_ACCESS_DENIED 5
#define WD_ERROR_INVALID_HANDLE 6
#define WD_ERROR_INVALID_PARAMETER 87
#define WD_ERROR_INSUFFICIENT_BUFFER 122
#define WD_ERROR_NO_DATA 232
#define WD_ERROR_INVALID_IMAGE_HASH 577
#define WD_ERROR_HOST_UNREACHABLE 1232
#define WD_ERROR_DRIVER_BLOCKED 1275

/*
 * WINDIVERT_ADDRESS: 80 bytes. Offset 0: INT64 Timestamp. Offset 8: one UINT32 of bitfields, allocated from the
 * least significant bit (MSVC and mingw agree for same-type UINT32 fields): Layer 0-7, Event 8-15, Sniffed 16,
 * Outbound 17, Loopback 18, Impostor 19, IPv6 20, IPChecksum 21, TCPChecksum 22, UDPChecksum 23, reserved 24-31.
 * Offset 12: UINT32 reserved. Offset 16: a 64-byte union whose network-layer view is IfIdx (16) and SubIfIdx (20).
 */
typedef struct {
    int64_t Timestamp;
    uint32_t Layer : 8;
    uint32_t Event : 8;
    uint32_t Sniffed : 1;
    uint32_t Outbound : 1;
    uint32_t Loopback : 1;
    uint32_t Impostor : 1;
    uint32_t IPv6 : 1;
    uint32_t IPChecksum : 1;
    uint32_t TCPChecksum : 1;
    uint32_t UDPChecksum : 1;
    uint32_t Reserved1 : 8;
    uint32_t Reserved2;
    union {
        struct {
            uint32_t IfIdx;
            uint32_t SubIfIdx;
        } Network;
        /* WINDIVERT_DATA_REFLECT: the opened handle's open time, process, and WinDivertOpen arguments. */
        struct {
            int64_t Timestamp;
            uint32_t ProcessId;
            uint32_t Layer;
            uint64_t Flags;
            int16_t Priority;
        } Reflect;
        /* WINDIVERT_DATA_SOCKET: the socket operation's endpoints, process and 5-tuple. Addresses are four host-order
         * words, least significant first; IPv4 is IPv4-mapped (word 0 the address, word 1 0x0000FFFF). */
        struct {
            uint64_t EndpointId;
            uint64_t ParentEndpointId;
            uint32_t ProcessId;
            uint32_t LocalAddr[4];
            uint32_t RemoteAddr[4];
            uint16_t LocalPort;
            uint16_t RemotePort;
            uint8_t Protocol;
        } Socket;
        uint8_t Reserved3[64];
    };
} WD_ADDRESS;

#ifdef __cplusplus
extern "C" {
#endif

/* The exported WinDivert API subset retroflect binds (same names, argument order and widths as WinDivert.dll). */
WD_EXPORT WD_HANDLE WinDivertOpen(const char *filter, int layer, int16_t priority, uint64_t flags);
WD_EXPORT WD_BOOL WinDivertRecvEx(WD_HANDLE handle, void *pPacket, uint32_t packetLen, uint32_t *pRecvLen,
                                  uint64_t flags, WD_ADDRESS *pAddr, uint32_t *pAddrLen, WD_OVERLAPPED lpOverlapped);
WD_EXPORT WD_BOOL WinDivertSendEx(WD_HANDLE handle, const void *pPacket, uint32_t packetLen, uint32_t *pSendLen,
                                  uint64_t flags, const WD_ADDRESS *pAddr, uint32_t addrLen, WD_OVERLAPPED lpOverlapped);
WD_EXPORT WD_BOOL WinDivertShutdown(WD_HANDLE handle, int how);
WD_EXPORT WD_BOOL WinDivertClose(WD_HANDLE handle);
WD_EXPORT WD_BOOL WinDivertSetParam(WD_HANDLE handle, int param, uint64_t value);
WD_EXPORT WD_BOOL WinDivertGetParam(WD_HANDLE handle, int param, uint64_t *pValue);
/* Helpers: evaluate a filter string on a packet; turn a REFLECT event's filter object into a filter string. */
WD_EXPORT WD_BOOL WinDivertHelperEvalFilter(const char *filter, const void *pPacket, uint32_t packetLen, const WD_ADDRESS *pAddr);
WD_EXPORT WD_BOOL WinDivertHelperFormatFilter(const char *filter, int layer, char *buffer, uint32_t bufLen);

/*
 * TEST-DOUBLE ONLY: control functions of windivert_double.c. A real WinDivert.dll has none of these.
 */
/* The calling thread's last error (the double also calls SetLastError on Windows; on Linux there is no such API). */
WD_EXPORT uint32_t WinDivertDoubleGetLastError(void);
/* Hand one packet to the driver as the stack would (direction, loopback, interface from addr; Impostor=1 means
 * another driver injected it). Returns 1 when a handle queued it, 2 when it is an inbound fragment held for
 * reassembly, 3 when a handle opened with WINDIVERT_FLAG_DROP blocked it, 0 when no handle took it (it went to the
 * wire). */
WD_EXPORT int WinDivertDouble_Inject(const void *packet, uint32_t len, const WD_ADDRESS *addr);
/* The stack performed a socket operation (addr: Event WD_EVENT_SOCKET_*, Outbound/Loopback, Socket.*): every open
 * SOCKET handle whose filter matches queues it. Returns how many did, or -1 for an event that is not a socket one. */
WD_EXPORT int WinDivertDouble_SocketEvent(const WD_ADDRESS *addr);
/* Hand the same packet over `count` times (benchmarks). Returns how many a handle queued. */
WD_EXPORT uint32_t WinDivertDouble_InjectRepeat(const void *packet, uint32_t len, const WD_ADDRESS *addr, uint32_t count);
/* Evaluate `filter` on one packet with the double's compiler: 1 match, 0 no match, -1 the filter is refused. */
WD_EXPORT int WinDivertDouble_Matches(const char *filter, const void *packet, uint32_t len, const WD_ADDRESS *addr);
/* From now on, packets passed to WinDivertSendEx at batch position `index` (-1: any) that match `filter` (NULL or
 * empty: all) are not injected and make the call fail softly with `code` (0: off). Returns 0 for a refused filter. */
WD_EXPORT int WinDivertDouble_SetSendFailure(int32_t index, const char *filter, uint32_t code);
/* Why the last WinDivertOpen failed, in words (empty when it succeeded). */
WD_EXPORT uint32_t WinDivertDouble_LastOpenReason(char *buf, uint32_t len);
/* How a packet reached the wire: a handle sent it, a handle's close released it, or no handle took it. */
#define WD_WIRE_SENT 1
#define WD_WIRE_RELEASED 2
#define WD_WIRE_UNCLAIMED 3
/* Move up to maxCount packets (oldest first) off the wire: bytes back to back into buf (at most bufLen, total in
 * *pBytes), one address each into addrs, the handle that sent or released each into handles (0: none), how each got
 * there into origins (any of these three may be NULL). Returns the number of packets moved. */
WD_EXPORT uint32_t WinDivertDouble_CollectSent(void *buf, uint32_t bufLen, uint32_t *pBytes, WD_ADDRESS *addrs,
                                               int64_t *handles, uint8_t *origins, uint32_t maxCount);
WD_EXPORT uint32_t WinDivertDouble_SentCount(void);
/* Discard the sent log without copying (benchmarks). Returns how many packets were discarded. */
WD_EXPORT uint32_t WinDivertDouble_DiscardSent(void);
/* keep = 0: the wire only counts packets instead of recording them (benchmarks). Default 1. */
WD_EXPORT void WinDivertDouble_SetKeepSent(int keep);
/* Packets that reached the wire since the last reset, recorded or not. */
WD_EXPORT uint64_t WinDivertDouble_TotalSent(void);
/* Facts about the most recent WinDivertOpen call (successful or not). LastFilter copies at most len-1 bytes. */
WD_EXPORT uint32_t WinDivertDouble_LastFilter(char *buf, uint32_t len);
WD_EXPORT int16_t WinDivertDouble_LastPriority(void);
WD_EXPORT uint64_t WinDivertDouble_LastFlags(void);
WD_EXPORT int WinDivertDouble_LastLayer(void);
/* Handles opened and not yet closed. */
WD_EXPORT uint32_t WinDivertDouble_OpenHandles(void);
/* Packets waiting in a handle's receive queue (0 for unknown handles). */
WD_EXPORT uint32_t WinDivertDouble_Queued(WD_HANDLE handle);
/* Make every following WinDivertOpen fail with this Windows error code (0 = succeed again). */
WD_EXPORT void WinDivertDouble_SetOpenError(uint32_t code);
/* Set the driver's per-open counter (the low 16 bits of every handle's internal priority; the next open takes
 * value + 1), so a test can make it wrap. */
WD_EXPORT void WinDivertDouble_SetPriorityCounter(uint32_t value);
/* Packets full handle queues dropped (the oldest first, as the driver does) since the last reset. */
WD_EXPORT uint64_t WinDivertDouble_QueueDropped(void);
/* Close every handle, wake every waiter, clear queues, the sent log and all settings. */
WD_EXPORT void WinDivertDouble_Reset(void);

#ifdef __cplusplus
}
#endif

#endif
