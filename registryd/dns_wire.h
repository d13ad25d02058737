/*
 * dns_wire.h — the DNS wire format, and nothing else: parse a query, build a
 * response. No sockets, no store; the server (dns_server.c) maps questions to
 * lookups and uses this to speak the protocol.
 *
 * Parsing is strict (RFC 1035, 6891): one question, no answer/authority
 * records, at most one additional record and that an OPT; label and name
 * lengths checked; compression pointers allowed only backwards (so no loops).
 * The OPT record's options are read: a Client Subnet (RFC 7871) is checked
 * and kept to be echoed, an option running past the record is malformed.
 * Another opcode is read as far as it goes (question, OPT), to be answered
 * NOTIMP with both (RFC 6891 6.1.1: a request with OPT gets OPT back).
 * Building never writes past the buffer: an RR that does not fit is refused
 * whole (DNS_ETRUNC) and the message stays valid.
 */
#ifndef REGISTRYD_DNS_WIRE_H
#define REGISTRYD_DNS_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DNS_HEADER_LEN 12
#define DNS_NAME_MAX 255  /* wire length */
#define DNS_PNAME_MAX 1024 /* presentation length: bytes outside [!-~] and . \\ become \DDD */
#define DNS_UDP_MIN 512
#define DNS_UDP_MAX 4096  /* the EDNS payload size we advertise and accept */
#define DNS_OPT_ECS 8     /* EDNS option code: Client Subnet (RFC 7871) */

enum dns_type { DNS_A = 1, DNS_NS = 2, DNS_CNAME = 5, DNS_SOA = 6, DNS_PTR = 12, DNS_TXT = 16,
                DNS_AAAA = 28, DNS_SRV = 33, DNS_OPT = 41, DNS_IXFR = 251, DNS_AXFR = 252,
                DNS_ANY = 255 };
enum dns_rcode { DNS_NOERROR = 0, DNS_FORMERR = 1, DNS_SERVFAIL = 2, DNS_NXDOMAIN = 3,
                 DNS_NOTIMP = 4, DNS_REFUSED = 5, DNS_BADVERS = 16 /* EDNS, RFC 6891 */ };

/* Outcomes of dns_parse_query and dns_msg_* besides 0: what to answer, not
 * errors, in a range of their own far below REG_E* (registry/error.h), so
 * that a code can never be read as the other. */
#define DNS_EDROP -201    /* not a query (QR set) or too short to answer: ignore */
#define DNS_EFORMERR -202 /* answer FORMERR (header is echoed) */
#define DNS_ENOTIMP -203  /* answer NOTIMP (opcode other than QUERY) */
#define DNS_ETRUNC -204   /* dns_msg_*: does not fit */

struct dns_query {
    uint16_t id;
    uint16_t flags;           /* the query's flags word (RD is echoed) */
    int opcode;
    uint8_t qname_wire[DNS_NAME_MAX]; /* the question's name as sent (case kept) */
    size_t qname_wire_len;
    char qname[DNS_PNAME_MAX]; /* lower-case presentation form, "a.b.", "." for root */
    uint16_t qtype, qclass;
    bool has_question;        /* the question parsed (an error answer echoes it) */
    bool edns;                /* an OPT record was present and readable: the answer has one */
    uint16_t edns_size;       /* its advertised payload size (>= 512) */
    int edns_version;
    bool edns_do;             /* its DO bit (copied into the answer's OPT) */
    bool ecs;                 /* it carried a Client Subnet option (the first is kept) */
    uint16_t ecs_family;      /* 1 IPv4, 2 IPv6, 0 (with prefix 0: "no address") */
    uint8_t ecs_source;       /* SOURCE PREFIX-LENGTH */
    uint8_t ecs_addr[16];     /* ADDRESS: (ecs_source + 7) / 8 bytes */
};

/* Parse a query. Returns 0, DNS_EDROP, DNS_EFORMERR or DNS_ENOTIMP; for the
 * last two q->id, q->flags and q->opcode are valid (enough to answer), and
 * q->has_question and q->edns say what else was read (dns_msg_error echoes
 * it). FORMERR for a Client Subnet option of a family other than 1 or 2 (0
 * only with prefix 0, as dig +subnet=0 sends), a prefix longer than the
 * family's addresses, a non-zero scope, an ADDRESS of other than
 * ceil(prefix/8) bytes or with bits set past the prefix (RFC 7871 6, 7.1.1);
 * then q->edns stays true. FORMERR with q->edns false for an OPT record that
 * cannot be read (an option running past its RDATA, two OPT records). */
int dns_parse_query(const uint8_t *pkt, size_t len, struct dns_query *q);

/* A response under construction, in a caller-provided buffer. */
struct dns_msg {
    uint8_t *buf;
    size_t len, cap;
    uint16_t counts[4]; /* QD AN NS AR, written by dns_msg_finish */
    /* name compression: where each name (and each of its suffixes) already
     * written starts, and its presentation form (in pool) */
    uint16_t names[64];
    const char *name_str[64];
    int nnames;
    char pool[2048];
    size_t pool_len, pool_question;
    int names_question;
};

/* Start a response to q with rcode and the AA bit; the question is echoed
 * exactly as sent. cap is the most the response may take. 0 or DNS_ETRUNC. */
int dns_msg_init(struct dns_msg *m, uint8_t *buf, size_t cap, const struct dns_query *q,
                 int rcode);
/* A response with only a header (SERVFAIL when not even the question fits),
 * echoing id/opcode/RD. */
size_t dns_msg_header_only(uint8_t *buf, const struct dns_query *q, int rcode);
/* The answer to a query dns_parse_query refused (FORMERR, NOTIMP): the
 * header, the question when it parsed, our OPT when the query's did (RFC
 * 6891 6.1.1). No AA. cap >= DNS_UDP_MIN always holds it; returns its
 * length. */
size_t dns_msg_error(uint8_t *buf, size_t cap, const struct dns_query *q, int rcode);

enum dns_section { DNS_ANSWER = 1, DNS_AUTHORITY = 2, DNS_ADDITIONAL = 3 };

/* Add records; `name` is presentation form ("web.service.registry."). Each
 * returns 0 or DNS_ETRUNC (the message is left as it was). */
/* The bytes name would take as a record's owner if written now (as
 * compressed against what the message holds); 0: not a name. */
size_t dns_msg_name_len(const struct dns_msg *m, const char *name);
int dns_msg_add_a(struct dns_msg *m, int section, const char *name, uint32_t ttl,
                  const uint8_t addr[4]);
int dns_msg_add_aaaa(struct dns_msg *m, int section, const char *name, uint32_t ttl,
                     const uint8_t addr[16]);
int dns_msg_add_srv(struct dns_msg *m, int section, const char *name, uint32_t ttl,
                    uint16_t priority, uint16_t weight, uint16_t port, const char *target);
int dns_msg_add_soa(struct dns_msg *m, int section, const char *zone, uint32_t ttl,
                    const char *mname, const char *rname, uint32_t serial, uint32_t minimum);
int dns_msg_add_ns(struct dns_msg *m, int section, const char *name, uint32_t ttl,
                   const char *target);
int dns_msg_add_cname(struct dns_msg *m, int section, const char *name, uint32_t ttl,
                      const char *target);
int dns_msg_add_ptr(struct dns_msg *m, int section, const char *name, uint32_t ttl,
                    const char *target);
/* One TXT record of n character strings (each cut at 255 bytes). */
int dns_msg_add_txt(struct dns_msg *m, int section, const char *name, uint32_t ttl,
                    const char *const *strs, size_t n);
/* One TXT record holding text[0..len) whole: as character strings of 255
 * bytes and the rest (RFC 1035 3.3.14 caps one string at 255 bytes; a
 * reader joins a record's strings, as RFC 7208 3.3 does). */
int dns_msg_add_txt_split(struct dns_msg *m, int section, const char *name, uint32_t ttl,
                          const char *text, size_t len);
/* Our OPT record for a query with one: rcode's bits above the header's four
 * go in its extended rcode (DNS_BADVERS), the DO bit is the query's (RFC
 * 3225 3), and the query's Client Subnet comes back with SCOPE
 * PREFIX-LENGTH 0 (RFC 7871 7.2.1: the answer is the same for every
 * client, as Consul's setEDNS says). dns_opt_len: the room it takes. */
int dns_msg_add_opt(struct dns_msg *m, const struct dns_query *q, uint16_t payload, int rcode);
size_t dns_opt_len(const struct dns_query *q);

/* Drop every record after the question (for a truncated UDP answer). */
void dns_msg_clear_records(struct dns_msg *m);
/* Set the TC bit. */
void dns_msg_set_tc(struct dns_msg *m);
/* Write the section counts; returns the message length. */
size_t dns_msg_finish(struct dns_msg *m);

/* Presentation name -> wire form (no compression). Returns the wire length,
 * or 0 for an invalid name. */
size_t dns_name_to_wire(const char *name, uint8_t *out, size_t outlen);

#endif
