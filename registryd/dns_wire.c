/*
 * dns_wire.c — see dns_wire.h.
 */
#include "dns_wire.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
    put16(p, (uint16_t)(v >> 16));
    put16(p + 2, (uint16_t)v);
}

/*
 * Read the name at *off into presentation form (lower case, trailing dot).
 * Follows compression pointers, only backwards; *off moves past the name as
 * it appears at its place. Returns 0 or -1 (malformed).
 */
static int read_name(const uint8_t *pkt, size_t len, size_t *off, char *out, size_t outlen,
                     size_t *wire_len)
{
    size_t pos = *off, o = 0, total = 1;
    bool jumped = false;
    int hops = 0;
    for (;;) {
        if (pos >= len)
            return -1;
        uint8_t l = pkt[pos];
        if ((l & 0xC0) == 0xC0) {
            if (pos + 1 >= len || ++hops > 32)
                return -1;
            size_t target = (size_t)((l & 0x3F) << 8 | pkt[pos + 1]);
            if (target >= pos) /* only backwards: no loops */
                return -1;
            if (!jumped)
                *off = pos + 2;
            jumped = true;
            pos = target;
            continue;
        }
        if ((l & 0xC0) != 0)
            return -1; /* 0x40/0x80: extended label types, not supported */
        if (l == 0) {
            if (!jumped)
                *off = pos + 1;
            break;
        }
        total += (size_t)l + 1;
        if (total > DNS_NAME_MAX || pos + 1 + l > len)
            return -1;
        for (size_t i = 0; i < l; i++) {
            unsigned char ch = pkt[pos + 1 + i];
            if (o + 6 > outlen)
                return -1;
            if (ch <= ' ' || ch > '~' || ch == '.' || ch == '\\') /* RFC 1035 5.1 escape */
                o += (size_t)snprintf(out + o, outlen - o, "\\%03u", ch);
            else
                out[o++] = (char)tolower(ch);
        }
        out[o++] = '.';
        pos += 1 + l;
    }
    if (o == 0)
        out[o++] = '.';
    out[o] = '\0';
    if (wire_len)
        *wire_len = total;
    return 0;
}

/* Skip the resource record at *off (name, fixed fields, RDATA): 0 or -1. */
static int skip_rr(const uint8_t *pkt, size_t len, size_t *off)
{
    char name[DNS_PNAME_MAX];
    if (read_name(pkt, len, off, name, sizeof(name), NULL) != 0 || *off + 10 > len ||
        *off + 10 + get16(pkt + *off + 8) > len)
        return -1;
    *off += 10 + (size_t)get16(pkt + *off + 8);
    return 0;
}

/* A Client Subnet option's data opt[0..n) (RFC 7871 6) into q: 0, or -1
 * when malformed (see dns_parse_query; the checks are BIND's). */
static int parse_ecs(const uint8_t *opt, size_t n, struct dns_query *q)
{
    if (n < 4)
        return -1;
    unsigned family = get16(opt), source = opt[2], scope = opt[3];
    unsigned max = family == 1 ? 32 : family == 2 ? 128 : 0;
    size_t bytes = (source + 7) / 8;
    if (family > 2 || source > max || scope != 0 || n - 4 != bytes)
        return -1;
    if (source % 8 != 0 && (opt[4 + bytes - 1] & (0xFF >> (source % 8))) != 0)
        return -1; /* bits past the prefix */
    q->ecs = true;
    q->ecs_family = (uint16_t)family;
    q->ecs_source = (uint8_t)source;
    memcpy(q->ecs_addr, opt + 4, bytes);
    return 0;
}

/* The options of an OPT record's RDATA p[0..n): 0; -1 when they cannot be
 * read (an option running past the RDATA); -2 for a malformed Client
 * Subnet. A second Client Subnet is skipped unread, as BIND does. */
static int parse_options(const uint8_t *p, size_t n, struct dns_query *q)
{
    for (size_t o = 0; o < n;) {
        if (o + 4 > n || o + 4 + get16(p + o + 2) > n)
            return -1;
        uint16_t code = get16(p + o), olen = get16(p + o + 2);
        if (code == DNS_OPT_ECS && !q->ecs && parse_ecs(p + o + 4, olen, q) != 0)
            return -2;
        o += 4 + (size_t)olen;
    }
    return 0;
}

int dns_parse_query(const uint8_t *pkt, size_t len, struct dns_query *q)
{
    memset(q, 0, sizeof(*q));
    if (len < DNS_HEADER_LEN)
        return DNS_EDROP;
    q->id = get16(pkt);
    q->flags = get16(pkt + 2);
    q->opcode = (q->flags >> 11) & 0xF;
    if (q->flags & 0x8000)
        return DNS_EDROP; /* a response: never answer those */
    uint16_t qd = get16(pkt + 4), an = get16(pkt + 6), ns = get16(pkt + 8), ar = get16(pkt + 10);
    /* A query is held to the shape of one. Another opcode is NOTIMP
     * whatever follows, but its question and OPT are read as far as they
     * go (the sections between skipped), for the answer to carry them. */
    int fail = q->opcode != 0 ? DNS_ENOTIMP : DNS_EFORMERR;
    if (q->opcode == 0 && (qd != 1 || an != 0 || ns != 0 || ar > 1))
        return DNS_EFORMERR;
    if (qd > 1)
        return fail;
    size_t off = DNS_HEADER_LEN;
    if (qd == 1) {
        size_t start = off, wire_len;
        if (read_name(pkt, len, &off, q->qname, sizeof(q->qname), &wire_len) != 0)
            return fail;
        if (off - start != wire_len || off + 4 > len) /* the question must not be compressed */
            return fail;
        memcpy(q->qname_wire, pkt + start, wire_len);
        q->qname_wire_len = wire_len;
        q->qtype = get16(pkt + off);
        q->qclass = get16(pkt + off + 2);
        off += 4;
        q->has_question = true;
    }
    for (unsigned i = 0; i < (unsigned)an + ns; i++)
        if (skip_rr(pkt, len, &off) != 0)
            return fail;
    for (unsigned i = 0; i < ar; i++) {
        char name[DNS_PNAME_MAX];
        if (read_name(pkt, len, &off, name, sizeof(name), NULL) != 0 || off + 10 > len)
            return fail;
        uint16_t type = get16(pkt + off), rdlen = get16(pkt + off + 8);
        if (off + 10 + rdlen > len)
            return fail;
        if (type != DNS_OPT && q->opcode == 0)
            return DNS_EFORMERR; /* a query's one additional record is its OPT */
        if (type == DNS_OPT) {
            if (q->edns || strcmp(name, ".") != 0) { /* two OPT records: RFC 6891 6.1.1 */
                q->edns = false;
                return fail;
            }
            q->edns_size = get16(pkt + off + 2);
            if (q->edns_size < DNS_UDP_MIN)
                q->edns_size = DNS_UDP_MIN;
            q->edns_version = pkt[off + 5];
            q->edns_do = (pkt[off + 6] & 0x80) != 0;
            /* another version's options may mean something else: BADVERS
             * is answered without reading them (RFC 6891 6.1.3) */
            int rc = q->edns_version == 0 ? parse_options(pkt + off + 10, rdlen, q) : 0;
            if (rc == -1) {
                q->ecs = false;
                return fail; /* an OPT we cannot read: answered without one */
            }
            q->edns = true;
            if (rc != 0)
                return fail; /* a malformed option in a readable OPT: answered with ours */
        }
        off += 10 + rdlen;
    }
    if (off != len)
        return fail; /* trailing garbage */
    return q->opcode != 0 ? DNS_ENOTIMP : 0;
}

/* Note where `name` (written in wire form `wire` at `start`) and its
 * suffixes are, for later names to point at; `upto` bytes of it were
 * written as labels. Names with escapes are not worth compressing. */
static void remember(struct dns_msg *m, size_t start, const char *name, const uint8_t *wire,
                     size_t upto)
{
    size_t len = strlen(name) + 1;
    if (strchr(name, '\\') != NULL || m->pool_len + len > sizeof(m->pool))
        return;
    char *copy = m->pool + m->pool_len;
    memcpy(copy, name, len);
    m->pool_len += len;
    /* a label starting at wire offset p starts at character p of the name */
    for (size_t p = 0; p < upto && wire[p] != 0 && m->nnames < 64 && start + p < 0x3FFF;
         p += wire[p] + 1u) {
        m->names[m->nnames] = (uint16_t)(start + p);
        m->name_str[m->nnames++] = copy + p;
    }
}

size_t dns_msg_header_only(uint8_t *buf, const struct dns_query *q, int rcode)
{
    memset(buf, 0, DNS_HEADER_LEN);
    put16(buf, q->id);
    /* QR, the opcode, RD and CD echoed (RFC 4035 3.1.6); rcode */
    put16(buf + 2, (uint16_t)(0x8000 | (q->opcode << 11) | (q->flags & 0x0110) | (rcode & 0xF)));
    return DNS_HEADER_LEN;
}

int dns_msg_init(struct dns_msg *m, uint8_t *buf, size_t cap, const struct dns_query *q,
                 int rcode)
{
    memset(m, 0, sizeof(*m));
    m->buf = buf;
    m->cap = cap;
    if (cap < DNS_HEADER_LEN + q->qname_wire_len + 4)
        return DNS_ETRUNC;
    dns_msg_header_only(buf, q, rcode);
    buf[2] |= 0x04; /* AA: we are the authority for our domain */
    m->len = DNS_HEADER_LEN;
    memcpy(buf + m->len, q->qname_wire, q->qname_wire_len);
    remember(m, m->len, q->qname, q->qname_wire, q->qname_wire_len);
    m->pool_question = m->pool_len;
    m->names_question = m->nnames;
    m->len += q->qname_wire_len;
    put16(buf + m->len, q->qtype);
    put16(buf + m->len + 2, q->qclass);
    m->len += 4;
    m->counts[0] = 1;
    return 0;
}

size_t dns_name_to_wire(const char *name, uint8_t *out, size_t outlen)
{
    size_t o = 0;
    if (strcmp(name, ".") == 0 || *name == '\0') {
        if (outlen < 1)
            return 0;
        out[0] = 0;
        return 1;
    }
    while (*name) {
        const char *dot = strchr(name, '.');
        size_t l = dot ? (size_t)(dot - name) : strlen(name);
        if (l == 0 || l > 63 || o + l + 2 > outlen || o + l + 2 > DNS_NAME_MAX)
            return 0;
        out[o++] = (uint8_t)l;
        memcpy(out + o, name, l);
        o += l;
        name += l + (dot ? 1 : 0);
    }
    out[o++] = 0;
    return o;
}

/* Write a name, compressed against names already in the message unless
 * `compress` is false (SRV targets, RFC 2782). */
static int put_name(struct dns_msg *m, const char *name, bool compress)
{
    /* The common case first: the whole name is already in the message (an
     * answer's owner is the question; an additional record's owner is an
     * SRV target), so it is one pointer and needs no conversion. */
    for (int i = 0; compress && i < m->nnames; i++) {
        if (strcasecmp(m->name_str[i], name) == 0) {
            if (m->len + 2 > m->cap)
                return DNS_ETRUNC;
            put16(m->buf + m->len, (uint16_t)(0xC000 | m->names[i]));
            m->len += 2;
            return 0;
        }
    }
    uint8_t wire[DNS_NAME_MAX];
    size_t wlen = dns_name_to_wire(name, wire, sizeof(wire));
    if (wlen == 0)
        return DNS_ETRUNC;
    /* Walk the name's suffixes; the first one already present becomes a
     * pointer, the labels before it are written out. SRV targets are never
     * compressed (RFC 2782) but later names may point into them. */
    const char *suffix = name;
    for (size_t wpos = 0; compress && wire[wpos] != 0;) {
        for (int i = 0; i < m->nnames; i++) {
            if (strcasecmp(m->name_str[i], suffix) == 0) {
                if (m->len + wpos + 2 > m->cap)
                    return DNS_ETRUNC;
                remember(m, m->len, name, wire, wpos); /* its new prefixes */
                memcpy(m->buf + m->len, wire, wpos);
                m->len += wpos;
                put16(m->buf + m->len, (uint16_t)(0xC000 | m->names[i]));
                m->len += 2;
                return 0;
            }
        }
        wpos += wire[wpos] + 1u;
        const char *dot = strchr(suffix, '.');
        suffix = dot ? dot + 1 : "";
        if (*suffix == '\0')
            suffix = ".";
    }
    if (m->len + wlen > m->cap)
        return DNS_ETRUNC;
    remember(m, m->len, name, wire, wlen);
    memcpy(m->buf + m->len, wire, wlen);
    m->len += wlen;
    return 0;
}

size_t dns_msg_name_len(const struct dns_msg *m, const char *name)
{
    /* put_name's walk, writing nothing */
    for (int i = 0; i < m->nnames; i++)
        if (strcasecmp(m->name_str[i], name) == 0)
            return 2;
    uint8_t wire[DNS_NAME_MAX];
    size_t wlen = dns_name_to_wire(name, wire, sizeof(wire));
    const char *suffix = name;
    for (size_t wpos = 0; wlen > 0 && wire[wpos] != 0;) {
        for (int i = 0; i < m->nnames; i++)
            if (strcasecmp(m->name_str[i], suffix) == 0)
                return wpos + 2;
        wpos += wire[wpos] + 1u;
        const char *dot = strchr(suffix, '.');
        suffix = dot ? dot + 1 : "";
        if (*suffix == '\0')
            suffix = ".";
    }
    return wlen;
}

/* Owner, type, class IN, ttl; returns the offset of RDLENGTH or -1. */
static long put_rr_head(struct dns_msg *m, const char *name, uint16_t type, uint32_t ttl)
{
    if (put_name(m, name, true) != 0 || m->len + 10 > m->cap)
        return -1;
    put16(m->buf + m->len, type);
    put16(m->buf + m->len + 2, 1);
    put32(m->buf + m->len + 4, ttl);
    m->len += 10;
    return (long)m->len - 2;
}

/* Run `body` with the message rolled back entirely if anything fails. */
#define RR_BEGIN(m)                        \
    size_t saved_len = (m)->len;           \
    size_t saved_pool = (m)->pool_len;     \
    int saved_names = (m)->nnames;
#define RR_FAIL(m)                         \
    do {                                   \
        (m)->len = saved_len;              \
        (m)->pool_len = saved_pool;        \
        (m)->nnames = saved_names;         \
        return DNS_ETRUNC;                 \
    } while (0)
#define RR_END(m, section, rdlen_at)                                                \
    do {                                                                            \
        put16((m)->buf + (rdlen_at), (uint16_t)((m)->len - (size_t)(rdlen_at) - 2)); \
        (m)->counts[(section)]++;                                                   \
        return 0;                                                                   \
    } while (0)

static int add_fixed(struct dns_msg *m, int section, const char *name, uint16_t type,
                     uint32_t ttl, const uint8_t *rdata, size_t rdlen)
{
    RR_BEGIN(m);
    long at = put_rr_head(m, name, type, ttl);
    if (at < 0 || m->len + rdlen > m->cap)
        RR_FAIL(m);
    memcpy(m->buf + m->len, rdata, rdlen);
    m->len += rdlen;
    RR_END(m, section, at);
}

int dns_msg_add_a(struct dns_msg *m, int section, const char *name, uint32_t ttl,
                  const uint8_t addr[4])
{
    return add_fixed(m, section, name, DNS_A, ttl, addr, 4);
}

int dns_msg_add_aaaa(struct dns_msg *m, int section, const char *name, uint32_t ttl,
                     const uint8_t addr[16])
{
    return add_fixed(m, section, name, DNS_AAAA, ttl, addr, 16);
}

int dns_msg_add_srv(struct dns_msg *m, int section, const char *name, uint32_t ttl,
                    uint16_t priority, uint16_t weight, uint16_t port, const char *target)
{
    RR_BEGIN(m);
    long at = put_rr_head(m, name, DNS_SRV, ttl);
    if (at < 0 || m->len + 6 > m->cap)
        RR_FAIL(m);
    put16(m->buf + m->len, priority);
    put16(m->buf + m->len + 2, weight);
    put16(m->buf + m->len + 4, port);
    m->len += 6;
    if (put_name(m, target, false) != 0)
        RR_FAIL(m);
    RR_END(m, section, at);
}

/* A record whose data is one (compressible) name: NS, CNAME. */
static int add_name_rr(struct dns_msg *m, int section, const char *name, uint16_t type,
                       uint32_t ttl, const char *target)
{
    RR_BEGIN(m);
    long at = put_rr_head(m, name, type, ttl);
    if (at < 0 || put_name(m, target, true) != 0)
        RR_FAIL(m);
    RR_END(m, section, at);
}

int dns_msg_add_ns(struct dns_msg *m, int section, const char *name, uint32_t ttl,
                   const char *target)
{
    return add_name_rr(m, section, name, DNS_NS, ttl, target);
}

int dns_msg_add_cname(struct dns_msg *m, int section, const char *name, uint32_t ttl,
                      const char *target)
{
    return add_name_rr(m, section, name, DNS_CNAME, ttl, target);
}

int dns_msg_add_ptr(struct dns_msg *m, int section, const char *name, uint32_t ttl,
                    const char *target)
{
    return add_name_rr(m, section, name, DNS_PTR, ttl, target);
}

int dns_msg_add_txt(struct dns_msg *m, int section, const char *name, uint32_t ttl,
                    const char *const *strs, size_t n)
{
    RR_BEGIN(m);
    long at = put_rr_head(m, name, DNS_TXT, ttl);
    if (at < 0)
        RR_FAIL(m);
    if (n == 0) { /* a TXT record holds at least one (empty) string */
        if (m->len + 1 > m->cap)
            RR_FAIL(m);
        m->buf[m->len++] = 0;
    }
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(strs[i]);
        if (l > 255)
            l = 255;
        if (m->len + 1 + l > m->cap || m->len + 1 + l - (size_t)at - 2 > 65535)
            RR_FAIL(m);
        m->buf[m->len++] = (uint8_t)l;
        memcpy(m->buf + m->len, strs[i], l);
        m->len += l;
    }
    RR_END(m, section, at);
}

int dns_msg_add_txt_split(struct dns_msg *m, int section, const char *name, uint32_t ttl,
                          const char *text, size_t len)
{
    RR_BEGIN(m);
    long at = put_rr_head(m, name, DNS_TXT, ttl);
    /* the strings' bytes plus one length byte per 255 (at least one string) */
    size_t need = len + (len == 0 ? 1 : (len + 254) / 255);
    if (at < 0 || m->len + need > m->cap || need > 65535)
        RR_FAIL(m);
    size_t o = 0;
    do {
        size_t l = len - o > 255 ? 255 : len - o;
        m->buf[m->len++] = (uint8_t)l;
        memcpy(m->buf + m->len, text + o, l);
        m->len += l;
        o += l;
    } while (o < len);
    RR_END(m, section, at);
}

int dns_msg_add_soa(struct dns_msg *m, int section, const char *zone, uint32_t ttl,
                    const char *mname, const char *rname, uint32_t serial, uint32_t minimum)
{
    RR_BEGIN(m);
    long at = put_rr_head(m, zone, DNS_SOA, ttl);
    if (at < 0 || put_name(m, mname, true) != 0 || put_name(m, rname, true) != 0 ||
        m->len + 20 > m->cap)
        RR_FAIL(m);
    put32(m->buf + m->len, serial);
    put32(m->buf + m->len + 4, 3600);   /* refresh */
    put32(m->buf + m->len + 8, 600);    /* retry */
    put32(m->buf + m->len + 12, 86400); /* expire */
    put32(m->buf + m->len + 16, minimum);
    m->len += 20;
    RR_END(m, section, at);
}

size_t dns_opt_len(const struct dns_query *q)
{
    return 11 + (q->ecs ? 8 + (q->ecs_source + 7u) / 8 : 0);
}

int dns_msg_add_opt(struct dns_msg *m, const struct dns_query *q, uint16_t payload, int rcode)
{
    size_t olen = dns_opt_len(q);
    if (m->len + olen > m->cap)
        return DNS_ETRUNC;
    uint8_t *p = m->buf + m->len;
    p[0] = 0; /* root */
    put16(p + 1, DNS_OPT);
    put16(p + 3, payload);
    put32(p + 5, (uint32_t)((rcode >> 4) & 0xFF) << 24); /* the rcode's upper bits, version 0 */
    p[7] = q->edns_do ? 0x80 : 0;                        /* DO copied from the query (RFC 3225 3) */
    put16(p + 9, (uint16_t)(olen - 11));
    if (q->ecs) { /* FAMILY, SOURCE PREFIX-LENGTH and ADDRESS as asked, SCOPE 0 */
        size_t bytes = (q->ecs_source + 7u) / 8;
        put16(p + 11, DNS_OPT_ECS);
        put16(p + 13, (uint16_t)(4 + bytes));
        put16(p + 15, q->ecs_family);
        p[17] = q->ecs_source;
        p[18] = 0;
        memcpy(p + 19, q->ecs_addr, bytes);
    }
    m->len += olen;
    m->counts[DNS_ADDITIONAL]++;
    return 0;
}

size_t dns_msg_error(uint8_t *buf, size_t cap, const struct dns_query *q, int rcode)
{
    struct dns_msg m = {.buf = buf, .cap = cap};
    m.len = dns_msg_header_only(buf, q, rcode);
    if (q->has_question && m.len + q->qname_wire_len + 4 + (q->edns ? dns_opt_len(q) : 0) <= cap) {
        memcpy(buf + m.len, q->qname_wire, q->qname_wire_len);
        m.len += q->qname_wire_len;
        put16(buf + m.len, q->qtype);
        put16(buf + m.len + 2, q->qclass);
        m.len += 4;
        m.counts[0] = 1;
    }
    if (q->edns)
        dns_msg_add_opt(&m, q, DNS_UDP_MAX, rcode); /* refused whole if it does not fit */
    return dns_msg_finish(&m);
}

void dns_msg_clear_records(struct dns_msg *m)
{
    size_t qlen = DNS_HEADER_LEN;
    size_t off = qlen;
    char name[DNS_PNAME_MAX];
    if (read_name(m->buf, m->len, &off, name, sizeof(name), NULL) == 0)
        m->len = off + 4;
    m->counts[1] = m->counts[2] = m->counts[3] = 0;
    m->pool_len = m->pool_question;
    m->nnames = m->names_question;
}

void dns_msg_set_tc(struct dns_msg *m)
{
    m->buf[2] |= 0x02;
}

size_t dns_msg_finish(struct dns_msg *m)
{
    for (int i = 0; i < 4; i++)
        put16(m->buf + 4 + 2 * i, m->counts[i]);
    return m->len;
}
