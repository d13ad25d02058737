/* Unit tests for dns_wire.c: query parsing (good and malformed), response
 * building, compression and truncation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "dns_wire.h"

/* Build a query for name/type; with_opt adds an EDNS OPT record. */
static size_t make_query(uint8_t *buf, const char *name, uint16_t type, int with_opt,
                         uint16_t payload)
{
    memset(buf, 0, 12);
    buf[0] = 0x12;
    buf[1] = 0x34;
    buf[2] = 0x01; /* RD */
    buf[5] = 1;
    buf[11] = with_opt ? 1 : 0;
    size_t n = 12 + dns_name_to_wire(name, buf + 12, 255);
    buf[n++] = (uint8_t)(type >> 8);
    buf[n++] = (uint8_t)type;
    buf[n++] = 0;
    buf[n++] = 1;
    if (with_opt) {
        uint8_t opt[11] = {0, 0, 41, (uint8_t)(payload >> 8), (uint8_t)payload, 0, 0, 0, 0, 0, 0};
        memcpy(buf + n, opt, 11);
        n += 11;
    }
    return n;
}

static void test_parse_query(void **state)
{
    (void)state;
    uint8_t buf[512];
    struct dns_query q;
    size_t n = make_query(buf, "Web.Service.registry.", DNS_SRV, 1, 1232);
    assert_int_equal(dns_parse_query(buf, n, &q), 0);
    assert_int_equal(q.id, 0x1234);
    assert_string_equal(q.qname, "web.service.registry.");
    assert_int_equal(q.qtype, DNS_SRV);
    assert_true(q.edns);
    assert_int_equal(q.edns_size, 1232);
    assert_memory_equal(q.qname_wire, "\x03Web", 4); /* case kept for the echo */

    /* bytes a C string cannot hold, or that look like a separator, are
     * escaped, so a label "a\0.b" cannot pass for the name "a." */
    uint8_t odd[] = {0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 4, 'a', 0, '.', 'B', 8, 'r', 'e', 'g',
                     'i', 's', 't', 'r', 'y', 0, 0, 1, 0, 1};
    assert_int_equal(dns_parse_query(odd, sizeof(odd), &q), 0);
    assert_string_equal(q.qname, "a\\000\\046b.registry.");

    n = make_query(buf, ".", DNS_SOA, 0, 0);
    assert_int_equal(dns_parse_query(buf, n, &q), 0);
    assert_string_equal(q.qname, ".");
    assert_false(q.edns);
}

static void test_malformed_queries(void **state)
{
    (void)state;
    uint8_t good[512], bad[512];
    struct dns_query q;
    size_t n = make_query(good, "a.service.registry.", DNS_A, 0, 0);

    assert_int_equal(dns_parse_query(good, 5, &q), DNS_EDROP); /* short header */
    memcpy(bad, good, n);
    bad[2] |= 0x80; /* a response */
    assert_int_equal(dns_parse_query(bad, n, &q), DNS_EDROP);
    memcpy(bad, good, n);
    bad[2] = (uint8_t)(bad[2] | (2 << 3)); /* opcode STATUS */
    assert_int_equal(dns_parse_query(bad, n, &q), DNS_ENOTIMP);
    memcpy(bad, good, n);
    bad[5] = 2; /* two questions */
    assert_int_equal(dns_parse_query(bad, n, &q), DNS_EFORMERR);
    memcpy(bad, good, n);
    bad[7] = 1; /* an answer in a query */
    assert_int_equal(dns_parse_query(bad, n, &q), DNS_EFORMERR);
    memcpy(bad, good, n);
    bad[12] = 63; /* label longer than the packet */
    assert_int_equal(dns_parse_query(bad, n, &q), DNS_EFORMERR);
    memcpy(bad, good, n);
    bad[12] = 0x80; /* reserved label type */
    assert_int_equal(dns_parse_query(bad, n, &q), DNS_EFORMERR);
    assert_int_equal(dns_parse_query(good, n - 2, &q), DNS_EFORMERR); /* cut class */
    memcpy(bad, good, n);
    bad[n] = 0; /* trailing garbage */
    assert_int_equal(dns_parse_query(bad, n + 1, &q), DNS_EFORMERR);

    /* a compression pointer to itself, and one forward: loops are impossible */
    memcpy(bad, good, 12);
    bad[12] = 0xC0;
    bad[13] = 12;
    memset(bad + 14, 0, 4);
    assert_int_equal(dns_parse_query(bad, 18, &q), DNS_EFORMERR);
    bad[13] = 40;
    assert_int_equal(dns_parse_query(bad, 18, &q), DNS_EFORMERR);

    /* a name longer than 255 bytes */
    memcpy(bad, good, 12);
    size_t o = 12;
    for (int i = 0; i < 5; i++) {
        bad[o++] = 60;
        memset(bad + o, 'a', 60);
        o += 60;
    }
    bad[o++] = 0;
    memset(bad + o, 0, 4);
    assert_int_equal(dns_parse_query(bad, o + 4, &q), DNS_EFORMERR);

    /* an additional record that is not OPT */
    n = make_query(bad, "a.registry.", DNS_A, 1, 512);
    bad[n - 9] = 1; /* type A instead of OPT */
    assert_int_equal(dns_parse_query(bad, n, &q), DNS_EFORMERR);
}

static void test_build_and_compress(void **state)
{
    (void)state;
    uint8_t qbuf[512], out[512];
    struct dns_query q;
    size_t n = make_query(qbuf, "web.service.registry.", DNS_SRV, 0, 0);
    assert_int_equal(dns_parse_query(qbuf, n, &q), 0);
    struct dns_msg m;
    assert_int_equal(dns_msg_init(&m, out, sizeof(out), &q, DNS_NOERROR), 0);
    const uint8_t ip[4] = {10, 0, 0, 5};
    assert_int_equal(dns_msg_add_srv(&m, DNS_ANSWER, "web.service.registry.", 0, 1, 5, 8080,
                                     "0a000005.addr.registry."),
                     0);
    size_t before = m.len;
    assert_int_equal(dns_msg_add_a(&m, DNS_ADDITIONAL, "0a000005.addr.registry.", 0, ip), 0);
    /* the owner is compressed against the SRV target's suffix: a label + a pointer */
    assert_true(m.len - before < 10 + 4 + 12);
    size_t len = dns_msg_finish(&m);
    assert_int_equal(out[0], 0x12);
    assert_true(out[2] & 0x80); /* QR */
    assert_true(out[2] & 0x04); /* AA */
    assert_true(out[2] & 0x01); /* RD echoed */
    assert_int_equal(out[5], 1);
    assert_int_equal(out[7], 1);  /* one answer */
    assert_int_equal(out[11], 1); /* one additional */
    /* the answer's owner is a pointer to the question */
    assert_int_equal(out[12 + q.qname_wire_len + 4], 0xC0);
    assert_int_equal(out[12 + q.qname_wire_len + 5], 12);
    assert_true(len <= sizeof(out));
}

static void test_truncation_is_whole_records(void **state)
{
    (void)state;
    uint8_t qbuf[512], out[128];
    struct dns_query q;
    size_t n = make_query(qbuf, "web.service.registry.", DNS_A, 0, 0);
    assert_int_equal(dns_parse_query(qbuf, n, &q), 0);
    struct dns_msg m;
    assert_int_equal(dns_msg_init(&m, out, sizeof(out), &q, DNS_NOERROR), 0);
    const uint8_t ip[4] = {1, 2, 3, 4};
    int added = 0;
    while (dns_msg_add_a(&m, DNS_ANSWER, "web.service.registry.", 0, ip) == 0)
        added++;
    assert_true(added > 1);
    size_t len = m.len;
    assert_true(len <= sizeof(out));
    assert_int_equal(dns_msg_add_a(&m, DNS_ANSWER, "web.service.registry.", 0, ip), DNS_ETRUNC);
    assert_int_equal(m.len, len); /* the failed record left nothing behind */
    dns_msg_clear_records(&m);
    dns_msg_set_tc(&m);
    len = dns_msg_finish(&m);
    assert_int_equal(len, 12 + q.qname_wire_len + 4);
    assert_true(out[2] & 0x02);
    assert_int_equal(out[7], 0);
}

static void test_header_only_and_names(void **state)
{
    (void)state;
    struct dns_query q = {.id = 7, .flags = 0x0100, .opcode = 2};
    uint8_t out[12];
    assert_int_equal(dns_msg_header_only(out, &q, DNS_NOTIMP), 12);
    assert_int_equal(out[1], 7);
    assert_int_equal(out[2], 0x80 | (2 << 3) | 0x01);
    assert_int_equal(out[3] & 0xF, DNS_NOTIMP);
    uint8_t wire[300];
    assert_int_equal(dns_name_to_wire("a.bc.", wire, sizeof(wire)), 6);
    assert_int_equal(dns_name_to_wire("a..b.", wire, sizeof(wire)), 0);
    char big[80];
    memset(big, 'x', 64);
    strcpy(big + 64, ".");
    assert_int_equal(dns_name_to_wire(big, wire, sizeof(wire)), 0); /* label > 63 */
}

/* FORMERR and NOTIMP come back with what parsed: the question, our OPT
 * when the query had one (RFC 6891 6.1.1), no AA. */
static void test_error_answers(void **state)
{
    (void)state;
    uint8_t buf[512], out[512];
    struct dns_query q;
    size_t n = make_query(buf, "registry.", DNS_SOA, 1, 1232);
    buf[2] = (uint8_t)(buf[2] | (4 << 3)); /* NOTIFY */
    assert_int_equal(dns_parse_query(buf, n, &q), DNS_ENOTIMP);
    assert_true(q.has_question);
    assert_true(q.edns);
    size_t len = dns_msg_error(out, sizeof(out), &q, DNS_NOTIMP);
    assert_int_equal(len, 12 + q.qname_wire_len + 4 + 11);
    assert_int_equal(out[2], 0x80 | (4 << 3) | 0x01); /* QR, NOTIFY, RD; no AA */
    assert_int_equal(out[3] & 0xF, DNS_NOTIMP);
    assert_int_equal(out[5], 1);
    assert_int_equal(out[11], 1);
    assert_memory_equal(out + 12, buf + 12, q.qname_wire_len + 4);
    assert_int_equal(out[len - 11 + 2], DNS_OPT);

    /* trailing bytes after a good OPT: FORMERR with the OPT */
    n = make_query(buf, "registry.", DNS_SOA, 1, 1232);
    buf[n] = 0;
    assert_int_equal(dns_parse_query(buf, n + 1, &q), DNS_EFORMERR);
    assert_true(q.edns);
    len = dns_msg_error(out, sizeof(out), &q, DNS_FORMERR);
    assert_int_equal(out[11], 1);

    /* another opcode without OPT: the question alone */
    n = make_query(buf, "registry.", DNS_SOA, 0, 0);
    buf[2] = (uint8_t)(buf[2] | (2 << 3));
    assert_int_equal(dns_parse_query(buf, n, &q), DNS_ENOTIMP);
    len = dns_msg_error(out, sizeof(out), &q, DNS_NOTIMP);
    assert_int_equal(len, 12 + q.qname_wire_len + 4);
    assert_int_equal(out[11], 0);

    /* an UPDATE: its prerequisite and update records are skipped to
     * reach the OPT */
    n = make_query(buf, "registry.", DNS_SOA, 0, 0);
    buf[2] = (uint8_t)(5 << 3);
    buf[9] = 1; /* one update record */
    buf[11] = 1;
    static const uint8_t rr[] = {1, 'x', 0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 10, 0, 0, 1};
    memcpy(buf + n, rr, sizeof(rr));
    n += sizeof(rr);
    static const uint8_t opt[] = {0, 0, 41, 16, 0, 0, 0, 0, 0, 0, 0};
    memcpy(buf + n, opt, sizeof(opt));
    n += sizeof(opt);
    assert_int_equal(dns_parse_query(buf, n, &q), DNS_ENOTIMP);
    assert_true(q.has_question);
    assert_true(q.edns);

    /* two OPT records: FORMERR, answered without one */
    n = make_query(buf, "registry.", DNS_SOA, 1, 1232);
    memcpy(buf + n, buf + n - 11, 11);
    buf[11] = 2;
    assert_int_equal(dns_parse_query(buf, n + 11, &q), DNS_EFORMERR);
    assert_false(q.edns);
}

/* A query for registry. SOA whose OPT carries options[0..n). */
static size_t query_with_options(uint8_t *buf, const uint8_t *options, size_t n)
{
    size_t len = make_query(buf, "registry.", DNS_SOA, 1, 1232);
    buf[len - 2] = (uint8_t)(n >> 8);
    buf[len - 1] = (uint8_t)n;
    memcpy(buf + len, options, n);
    return len + n;
}

/* Client Subnet (RFC 7871): kept and echoed with scope 0; malformed ones are
 * FORMERR with q.edns still true (answered with our OPT). */
static void test_client_subnet(void **state)
{
    (void)state;
    uint8_t buf[512], out[512];
    struct dns_query q;
    static const uint8_t v4[] = {0, 8, 0, 7, 0, 1, 23, 0, 192, 0, 2};
    size_t n = query_with_options(buf, v4, sizeof(v4));
    assert_int_equal(dns_parse_query(buf, n, &q), 0);
    assert_true(q.ecs);
    assert_int_equal(q.ecs_family, 1);
    assert_int_equal(q.ecs_source, 23);
    assert_int_equal(dns_opt_len(&q), 11 + 4 + 7);
    struct dns_msg m;
    assert_int_equal(dns_msg_init(&m, out, sizeof(out), &q, DNS_NOERROR), 0);
    assert_int_equal(dns_msg_add_opt(&m, &q, 4096, DNS_NOERROR), 0);
    size_t len = dns_msg_finish(&m);
    assert_int_equal(out[len - 22 + 9], 0); /* the OPT's RDLENGTH: one option of 7 bytes */
    assert_int_equal(out[len - 22 + 10], 11);
    assert_memory_equal(out + len - 11, v4, sizeof(v4)); /* as sent: its scope was 0 */

    static const uint8_t none[] = {0, 8, 0, 4, 0, 0, 0, 0}; /* dig +subnet=0 */
    n = query_with_options(buf, none, sizeof(none));
    assert_int_equal(dns_parse_query(buf, n, &q), 0);
    assert_true(q.ecs);
    assert_int_equal(dns_opt_len(&q), 11 + 8);

    /* a cookie, then a subnet */
    static const uint8_t two[] = {0, 10, 0, 8, 1, 2, 3, 4, 5, 6,   7,
                                  8, 0,  8, 0, 5, 0, 2, 8, 0, 0x20};
    n = query_with_options(buf, two, sizeof(two));
    assert_int_equal(dns_parse_query(buf, n, &q), 0);
    assert_int_equal(q.ecs_family, 2);
    assert_int_equal(q.ecs_addr[0], 0x20);

    static const uint8_t bad[][16] = {
        {0, 8, 0, 4, 0, 3, 0, 0},                 /* family 3 */
        {0, 8, 0, 5, 0, 0, 8, 0, 10},             /* family 0 with a prefix */
        {0, 8, 0, 9, 0, 1, 33, 0, 1, 2, 3, 4, 5}, /* longer than IPv4 */
        {0, 8, 0, 8, 0, 1, 24, 0, 10, 0, 0, 0},   /* one byte too many */
        {0, 8, 0, 6, 0, 1, 24, 0, 10, 0},         /* one too few */
        {0, 8, 0, 7, 0, 1, 23, 0, 192, 0, 3},     /* a bit past the prefix */
        {0, 8, 0, 7, 0, 1, 24, 24, 10, 0, 0},     /* a scope in a query */
        {0, 8, 0, 3, 0, 1, 0},                    /* shorter than its fixed part */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        n = query_with_options(buf, bad[i], 4u + bad[i][3]);
        assert_int_equal(dns_parse_query(buf, n, &q), DNS_EFORMERR);
        assert_true(q.edns);
        assert_false(q.ecs);
        len = dns_msg_error(out, sizeof(out), &q, DNS_FORMERR);
        assert_int_equal(out[11], 1);
    }

    /* an option running past the OPT record's data: FORMERR without OPT */
    static const uint8_t past[] = {0, 10, 0, 8, 1, 2, 3, 4};
    n = query_with_options(buf, past, sizeof(past));
    assert_int_equal(dns_parse_query(buf, n, &q), DNS_EFORMERR);
    assert_false(q.edns);
    static const uint8_t stub[] = {0, 10, 0};
    n = query_with_options(buf, stub, sizeof(stub));
    assert_int_equal(dns_parse_query(buf, n, &q), DNS_EFORMERR);
}

/* A TXT record holding a text over 255 bytes: character strings of 255
 * bytes and the rest, in one record (RFC 1035 3.3.14). */
static void test_txt_split(void **state)
{
    (void)state;
    uint8_t qbuf[512], out[1024];
    struct dns_query q;
    size_t n = make_query(qbuf, "n.node.registry.", DNS_TXT, 0, 0);
    assert_int_equal(dns_parse_query(qbuf, n, &q), 0);
    struct dns_msg m;
    char text[600];
    memset(text, 'a', sizeof(text));
    assert_int_equal(dns_msg_init(&m, out, sizeof(out), &q, DNS_NOERROR), 0);
    size_t rr = m.len;
    assert_int_equal(dns_msg_add_txt_split(&m, DNS_ANSWER, "n.node.registry.", 0, text, 600), 0);
    /* owner pointer, type, class, ttl, rdlength */
    assert_int_equal(out[rr + 10] << 8 | out[rr + 11], 600 + 3);
    assert_int_equal(out[rr + 12], 255);
    assert_int_equal(out[rr + 12 + 256], 255);
    assert_int_equal(out[rr + 12 + 512], 90);
    assert_int_equal(m.len, rr + 12 + 603);
    /* exactly 255, and empty: one string each */
    size_t at = m.len;
    assert_int_equal(dns_msg_add_txt_split(&m, DNS_ANSWER, "n.node.registry.", 0, text, 255), 0);
    assert_int_equal(m.len, at + 12 + 256);
    at = m.len;
    assert_int_equal(dns_msg_add_txt_split(&m, DNS_ANSWER, "n.node.registry.", 0, text, 0), 0);
    assert_int_equal(m.len, at + 12 + 1);
    assert_int_equal(out[at + 12], 0);
    /* one that does not fit leaves nothing behind */
    at = m.len;
    assert_int_equal(dns_msg_add_txt_split(&m, DNS_ANSWER, "n.node.registry.", 0, text, 600),
                     DNS_ETRUNC);
    assert_int_equal(m.len, at);
    assert_int_equal(dns_msg_finish(&m), at);
    assert_int_equal(out[7], 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_query),
        cmocka_unit_test(test_malformed_queries),
        cmocka_unit_test(test_build_and_compress),
        cmocka_unit_test(test_truncation_is_whole_records),
        cmocka_unit_test(test_header_only_and_names),
        cmocka_unit_test(test_error_answers),
        cmocka_unit_test(test_client_subnet),
        cmocka_unit_test(test_txt_split),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
