/*
 * fuzz_dns_query — libFuzzer target for the DNS wire codec: parse any bytes
 * as a query and, when they parse, build a full response to them (every
 * record type, compression, truncation), or the error answer to those that
 * do not (question and OPT echoed as far as they parsed). Built with -fsanitize=fuzzer when
 * REGISTRY_FUZZ is on; otherwise replay_main.c replays the corpus and a
 * bounded number of deterministic mutations as an ordinary test.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "dns_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dns_query q;
    uint8_t out[1024];
    int rc = dns_parse_query(data, size, &q);
    if (rc == DNS_EFORMERR || rc == DNS_ENOTIMP) {
        /* what parsed comes back, and it always fits 512 bytes */
        size_t n =
            dns_msg_error(out, DNS_UDP_MIN, &q, rc == DNS_EFORMERR ? DNS_FORMERR : DNS_NOTIMP);
        if (n > DNS_UDP_MIN || out[5] != (q.has_question ? 1 : 0) || out[11] != (q.edns ? 1 : 0))
            __builtin_trap();
        return 0;
    }
    if (rc != 0)
        return 0;
    /* the name must round-trip through the presentation form */
    uint8_t wire[DNS_NAME_MAX];
    size_t wl = dns_name_to_wire(q.qname, wire, sizeof(wire));
    if (strcmp(q.qname, ".") != 0 && strchr(q.qname, '\\') == NULL &&
        (wl != q.qname_wire_len || wl == 0))
        __builtin_trap();
    struct dns_msg m;
    size_t cap = 64 + (size % 900); /* vary the room to hit truncation paths */
    if (dns_msg_init(&m, out, cap, &q, DNS_NOERROR) != 0)
        return 0;
    const uint8_t a4[4] = {10, 0, 0, 1}, a6[16] = {0xfd};
    for (int i = 0; i < 8; i++) {
        dns_msg_add_a(&m, DNS_ANSWER, q.qname, 0, a4);
        dns_msg_add_aaaa(&m, DNS_ANSWER, q.qname, 0, a6);
        dns_msg_add_srv(&m, DNS_ANSWER, q.qname, 0, 1, 1, 80, "0a000001.addr.registry.");
        dns_msg_add_a(&m, DNS_ADDITIONAL, "0a000001.addr.registry.", 0, a4);
    }
    char text[700];
    memset(text, 't', sizeof(text));
    dns_msg_add_txt_split(&m, DNS_ADDITIONAL, q.qname, 0, text, size % sizeof(text));
    dns_msg_add_soa(&m, DNS_AUTHORITY, "registry.", 0, "ns.registry.", "hostmaster.registry.", 1,
                    0);
    if (m.len > cap)
        __builtin_trap();
    dns_msg_clear_records(&m);
    dns_msg_set_tc(&m);
    if (q.edns)
        dns_msg_add_opt(&m, &q, 4096, 0);
    if (dns_msg_finish(&m) > cap)
        __builtin_trap();
    return 0;
}
