/*
 * dns_server.h — the DNS interface: dns_workers threads, each with its own
 * event loop, UDP socket and TCP listener on dns_addr (SO_REUSEPORT: the
 * kernel spreads datagrams and connections over them), answering SRV/A/AAAA
 * questions about services from the store.
 *
 * Names (DOMAIN defaults to "registry."; alt_domain, "consul." by default,
 * is answered the same way, with the names answered in it):
 *   NAME.service.DOMAIN          instances not critical (warning ones only
 *                                with allow_warning): A/AAAA, or SRV
 *   TAG.NAME.service.DOMAIN      the same, filtered by tag
 *   _NAME._TAG[.service].DOMAIN  RFC 2782 form; _tcp means any tag
 *   HEX.addr.DOMAIN              8 hex digits (IPv4) or 32 (IPv6)
 *   NAME.service.DC.DOMAIN, HEX.addr.DC.DOMAIN   the same, naming our datacenter
 *   NAME.KIND.DC.dc.DOMAIN       Consul 1.15's explicit locality
 *   SRV targets, as Consul's: HEX.addr.DC.DOMAIN, or NODE.node.DC.DOMAIN for
 *   an instance at its node's address, or its host name
 *   NODE.node[.DC].DOMAIN        a node's address (this server, catalog nodes,
 *                                nodes instances were registered at)
 *   SERVER_SERVICE.service.DOMAIN  the registry's servers ("consul")
 *   D.C.B.A.in-addr.arpa, ip6.arpa  PTR to NODE.node.DC.DOMAIN / NAME.service.DOMAIN
 *   DOMAIN                       SOA; NS "ns.DOMAIN" (this server's address)
 *   TXT on a service name        each instance's Meta as key=value strings
 *   TXT (or ANY) on NODE.node    a record per key of the node's Meta, RFC 1464's
 *                                key=value (a key starting "rfc1035-": the value
 *                                alone), as Consul; with
 *                                enable_additional_node_meta_txt also in the
 *                                additional section of node A/AAAA answers and,
 *                                owned by NODE.node.DC.DOMAIN, of SRV answers,
 *                                where room is left
 * Service names and tags match without case (Consul lowercases them).
 * Outside DOMAIN: REFUSED (no recursion). Unknown names inside, and services
 * with no instance to answer with (all critical, no such tag): NXDOMAIN with
 * the SOA (RFC 2308). An instance addressed by host name answers A/AAAA with
 * a CNAME. Over UDP, as Consul: a random udp_answer_limit records for
 * queries without EDNS, as many as fit the advertised size otherwise; TC
 * only when enable_truncate is set. TCP carries everything that fits its
 * 64 KiB: a random selection when not all does, never TC with no answers.
 *
 * Reads never wait for the writer: each question is one LMDB read
 * transaction, and the passing instances of a service are kept decoded per
 * (service, change index) by each worker, so a hot name costs no JSON
 * parsing and no lock.
 *
 * Threads: dns_start and dns_free run on the thread that owns the server
 * (the main loop's); everything else runs on the workers.
 */
#ifndef REGISTRYD_DNS_SERVER_H
#define REGISTRYD_DNS_SERVER_H

#include "common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct store;
struct dns_server;

struct dns_options {
    const char *addr;      /* "HOST:PORT", UDP and TCP */
    const char *domain;    /* lower case, trailing dot */
    const char *alt_domain; /* the same, answered as domain is (names in it); NULL or "":
                             * none */
    uint32_t ttl;          /* seconds, answers */
    uint32_t negative_ttl; /* seconds, SOA minimum for NXDOMAIN/NODATA */
    bool allow_warning;    /* answer with warning instances too */
    unsigned udp_answer_limit; /* records in a UDP answer without EDNS (Consul: 3) */
    unsigned a_record_limit;   /* A/AAAA records in any answer; 0: no limit (Consul's) */
    bool enable_truncate;  /* set TC on UDP answers that left records out */
    bool enable_additional_node_meta_txt; /* node Meta TXT in additional sections (Consul's) */
    const char *node_meta; /* this node's Meta: "key:value" lines (config.h), or NULL */
    const char *node_addr; /* address of instances that have none, and of this node */
    const char *node;      /* this server's node name (NODE.node.DOMAIN) */
    const char *datacenter; /* SERVICE.service.DC.DOMAIN names this one */
    const char *server_service; /* the servers' own service name (Consul: "consul") */
    struct cluster *cluster; /* borrowed: the servers, for server_service */
    struct store *store;     /* borrowed; read from every worker */
    unsigned workers;        /* threads (0 counts as 1) */
};

/* Bind every worker's sockets, then start the workers. The strings of opt
 * are borrowed and must outlive the server. 0, or REG_EIO (dns_addr in use
 * or unusable: the message names it and the protocol) / REG_ENOMEM with a
 * message; on failure no thread is left running. */
int dns_start(const struct dns_options *opt, struct dns_server **out, char *err, size_t errlen)
    REG_MUSTCHECK;
/* Stop every worker (each finishes the callback it is in), join them, close
 * the sockets and free everything. NULL is a no-op. */
void dns_free(struct dns_server *s);

#endif
