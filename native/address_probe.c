/*
 * Layout probe for WINDIVERT_ADDRESS (TEST TOOL). For each field, it zeroes the struct declared in windivert_abi.h,
 * sets only that field through the C declaration (so the compiler places the bitfield), and prints
 * "<field> <value> <80 bytes as hex>". test/packet-sources/windivert/address.test.ts writes the same value with the TypeScript
 * codec and compares the bytes; it runs the gcc build natively and the mingw build under Wine.
 */
#include "windivert_abi.h"

#include <stdio.h>
#include <string.h>

static void dump(const char *name, unsigned long long value, const WD_ADDRESS *a) {
    const unsigned char *b = (const unsigned char *)a;
    printf("%s %llu ", name, value);
    for (size_t i = 0; i < sizeof *a; i++) printf("%02x", b[i]);
    printf("\n");
}

#define PROBE(field, value)                  \
    do {                                     \
        WD_ADDRESS a;                        \
        memset(&a, 0, sizeof a);             \
        a.field = (value);                   \
        dump(#field, (unsigned long long)(value), &a); \
    } while (0)

int main(void) {
    printf("sizeof %u\n", (unsigned)sizeof(WD_ADDRESS));
    PROBE(Timestamp, 0x0102030405060708LL);
    PROBE(Layer, 0xA5);
    PROBE(Event, 0x5A);
    PROBE(Sniffed, 1);
    PROBE(Outbound, 1);
    PROBE(Loopback, 1);
    PROBE(Impostor, 1);
    PROBE(IPv6, 1);
    PROBE(IPChecksum, 1);
    PROBE(TCPChecksum, 1);
    PROBE(UDPChecksum, 1);
    PROBE(Network.IfIdx, 0x11223344u);
    PROBE(Network.SubIfIdx, 0x55667788u);
    return 0;
}
