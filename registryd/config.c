/*
 * config.c — registryd's settings: one table, three sources.
 *
 * conf_keys[] below is the only place a setting is declared: its name (the
 * YAML key; the flag is the same name with dashes), its type (which picks the
 * setter that parses and validates it), where it lives in struct conf, its
 * default (parsed by the same setter, so defaults are validated too) and its
 * one-line doc for --help. Sources are applied in order — defaults, the YAML
 * file named by --config, then flags — and every error says where it came
 * from: `file:line:col: message` or `--flag: message`.
 */
#define _GNU_SOURCE /* asprintf */
#include "config.h"
#include "hostport.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include <openssl/crypto.h>
#include <yaml.h>

#include "check_target.h"
#include "duration.h"
#include "registry/error.h"

enum conf_type {
    CONF_BOOL,     /* true/false, yes/no, on/off, 1/0; a bare flag means true */
    CONF_STRING,   /* any non-empty string */
    CONF_PATH,     /* a file system path */
    CONF_HOSTPORT, /* HOST:PORT or [V6]:PORT */
    CONF_IPV4PORT, /* A.B.C.D:PORT (libraft's uv transport is IPv4 only) */
    CONF_NAME,     /* [A-Za-z0-9_.-]{1,128}: node and datacenter names */
    CONF_SIZE,     /* bytes, with an optional KiB/MiB/GiB (or K/M/G) suffix */
    CONF_SIZE_LIMIT, /* bytes as CONF_SIZE, 1KiB and more (TiB allowed); 0 means no limit */
    CONF_LOGLEVEL, /* debug|info|warn|error */
    CONF_DOMAIN,   /* a DNS domain; stored with its trailing dot */
    CONF_DOMAIN_OPT, /* a DNS domain as CONF_DOMAIN, or "" for none */
    CONF_UINT,     /* unsigned integer, 1..1000000 */
    CONF_DURATION, /* Go-style duration ("30s", "5m"), stored in ms */
    CONF_RATIO,    /* a share between 0 and 1 */
    CONF_LIMIT,    /* unsigned integer, 0..1000000; 0 means no limit */
    CONF_RATE,     /* a rate per second, 0..1000000 (fractions allowed); 0 means no limit */
    CONF_ADDRLIST, /* HOST:PORT[,HOST:PORT...]; a repeated flag adds to it */
    CONF_KVLIST,   /* KEY:VALUE; a repeated flag adds a pair; YAML: a mapping.
                    * Stored as "key:value" lines joined by '\n' */
};

struct conf_key {
    const char *name;   /* YAML key; the flag is "--" + name with '_' → '-' */
    enum conf_type type;
    size_t offset;      /* into struct conf */
    const char *def;    /* default, parsed by the type's setter; NULL = unset */
    const char *arg;    /* metavariable shown by --help */
    const char *doc;
};

#define KEY(n, t, field, d, a, doc) {n, t, offsetof(struct conf, field), d, a, doc}

static const struct conf_key conf_keys[] = {
    KEY("dev", CONF_BOOL, dev, "false", NULL,
        "single server with its data in a fresh temporary directory, removed on exit (no --join "
        "or --bootstrap-expect)"),
    KEY("data_dir", CONF_PATH, data_dir, NULL, "DIR",
        "where the raft log, snapshots and the store live (required unless --dev)"),
    KEY("recover_from_store", CONF_BOOL, recover_from_store, "false", NULL,
        "when the raft state is missing or behind the store, rebuild it from the store "
        "instead of refusing to start (single server)"),
    KEY("http_addr", CONF_HOSTPORT, http_addr, "127.0.0.1:8500", "HOST:PORT",
        "HTTP API listen address (\"\": no plain HTTP listener, HTTPS only)"),
    KEY("http_workers", CONF_UINT, http_workers, NULL, "N",
        "HTTP threads, each with its own event loop and listeners on http_addr and "
        "https_addr (SO_REUSEPORT), 1 to 64 (default: the number of online CPUs)"),
    KEY("https_addr", CONF_HOSTPORT, https_addr, NULL, "HOST:PORT",
        "HTTPS API listen address (needs the three TLS files; required on a clustered server "
        "with TLS: the servers reach each other there only)"),
    KEY("dns_addr", CONF_HOSTPORT, dns_addr, "127.0.0.1:8600", "HOST:PORT",
        "DNS listen address (UDP and TCP)"),
    KEY("dns_domain", CONF_DOMAIN, dns_domain, "registry.", "DOMAIN",
        "DNS domain answered by the DNS interface"),
    KEY("dns_alt_domain", CONF_DOMAIN_OPT, dns_alt_domain, "consul.", "DOMAIN",
        "a second domain answered as dns_domain is, answers named in it (Consul's alt_domain; "
        "\"\" for none): Consul's own, so that resolvers and tools set up for Consul work"),
    KEY("dns_ttl", CONF_DURATION, dns_ttl_ms, "0s", "DURATION",
        "TTL of DNS answers (0: do not cache, as Consul)"),
    KEY("dns_negative_ttl", CONF_DURATION, dns_negative_ttl_ms, "0s", "DURATION",
        "TTL of NXDOMAIN/NODATA answers (the SOA minimum, RFC 2308)"),
    KEY("dns_only_passing", CONF_BOOL, dns_only_passing, "false", NULL,
        "leave instances in warning out of DNS answers too, not only critical ones "
        "(Consul's only_passing)"),
    KEY("dns_allow_warning", CONF_BOOL, dns_allow_warning, "true", NULL,
        "answer DNS queries with instances in warning too (false: as dns_only_passing)"),
    KEY("dns_udp_answer_limit", CONF_UINT, dns_udp_answer_limit, "3", "N",
        "most records in a UDP answer to a query without EDNS (a random few, as Consul)"),
    KEY("dns_a_record_limit", CONF_LIMIT, dns_a_record_limit, "0", "N",
        "most A/AAAA records in any answer, UDP or TCP (a random few, as Consul's "
        "a_record_limit; 0: as many as fit)"),
    KEY("dns_enable_truncate", CONF_BOOL, dns_enable_truncate, "false", NULL,
        "set TC on UDP answers that left records out, so that resolvers retry over TCP"),
    KEY("dns_enable_additional_node_meta_txt", CONF_BOOL, dns_enable_additional_node_meta_txt,
        "true", NULL,
        "add a node's Meta as TXT records to the additional section of node A/AAAA and SRV "
        "answers where room is left (the default, as Consul's enable_additional_node_meta_txt; "
        "=false: without them)"),
    KEY("dns_server_service", CONF_NAME, dns_server_service, "consul", "NAME",
        "service name under which DNS answers with the registry's own servers "
        "(NAME.service.DOMAIN)"),
    KEY("dns_workers", CONF_UINT, dns_workers, NULL, "N",
        "DNS threads, each with its own UDP socket and TCP listener on dns_addr "
        "(SO_REUSEPORT), 1 to 256 (default: the number of online CPUs)"),
    KEY("raft_addr", CONF_IPV4PORT, raft_addr, NULL, "IPV4:PORT",
        "raft peer address (default 127.0.0.1 and a free port, chosen once)"),
    KEY("bootstrap_expect", CONF_UINT, bootstrap_expect, "1", "N",
        "form a new cluster once N servers (this one included) have found each other "
        "through --join"),
    KEY("join", CONF_ADDRLIST, join, NULL, "HOST:PORT",
        "API address of another server (with TLS, its HTTPS one), to form a cluster with or to "
        "join (repeatable)"),
    KEY("leave_on_terminate", CONF_BOOL, leave_on_terminate, "false", NULL,
        "on SIGTERM, leave the cluster (removed from the raft configuration) before stopping"),
    KEY("raft_snapshot_threshold", CONF_UINT, raft_snapshot_threshold, NULL, "N",
        "take a raft snapshot (and truncate the log) every N entries (default: 16384, or one "
        "entry per 2 KiB of the last snapshot if more, at most 262144)"),
    KEY("raft_snapshot_compression", CONF_BOOL, raft_snapshot_compression, "false", NULL,
        "write raft snapshots LZ4-compressed: about a tenth of the disk, but compressing "
        "and decompressing the whole store takes seconds at a million instances (a restart "
        "reads the last snapshot); snapshots written either way are read"),
    KEY("node", CONF_NAME, node, NULL, "NAME", "node name (default: the host name)"),
    KEY("datacenter", CONF_NAME, datacenter, "dc1", "NAME", "datacenter name"),
    KEY("node_meta", CONF_KVLIST, node_meta, NULL, "KEY:VALUE",
        "metadata of this node, shown as its Meta and matched by ?node-meta= (repeatable; "
        "in YAML a mapping)"),
    KEY("log_level", CONF_LOGLEVEL, log_level, "info", "LEVEL", "debug, info, warn or error"),
    KEY("max_body_size", CONF_SIZE, max_body_size, "1MiB", "BYTES",
        "largest accepted HTTP request body (suffixes KiB, MiB, GiB)"),
    KEY("http_cache_size", CONF_SIZE, http_cache_size, "64MiB", "BYTES",
        "memory for rendered HTTP answers kept for reuse (with the spare buffer big answers "
        "are written into, at most 32MiB), least recently used out first; "
        "an answer larger than this is never kept (suffixes KiB, MiB, GiB)"),
    KEY("http_render_cache_size", CONF_SIZE, http_render_cache_size, "64MiB", "BYTES",
        "memory for the JSON of single instances and checks that big answers are built from "
        "(reused while the record is unchanged; suffixes KiB, MiB, GiB)"),
    KEY("enable_script_checks", CONF_BOOL, enable_script_checks, "false", NULL,
        "accept and run script checks (Args): any client that can register can then run "
        "programs on the servers, as in Consul"),
    KEY("max_snapshot_size", CONF_SIZE_LIMIT, max_snapshot_size, "0", "BYTES",
        "largest snapshot PUT /v1/snapshot accepts (0: as large as the data disk allows; "
        "the body is written to a file in the data dir as it arrives)"),
    KEY("http_head_timeout", CONF_DURATION, http_head_timeout_ms, "10s", "DURATION",
        "a request head must be complete this long after its first byte, however steadily "
        "it trickles in (0: no limit)"),
    KEY("http_body_timeout", CONF_DURATION, http_body_timeout_ms, "5m", "DURATION",
        "and its body this long after the head (0: no limit)"),
    KEY("http_max_conns_per_client", CONF_LIMIT, http_max_conns_per_client, "200", "N",
        "most HTTP connections open at once from one client IP address, across the "
        "listeners; more are closed as soon as accepted (0: no limit)"),
    KEY("http_read_rate", CONF_RATE, http_read_rate, "0", "PER_SECOND",
        "GET and HEAD requests served per second, all clients together, with a burst of one "
        "second's worth; more get 429 (0: no limit, else 1/60 to 1000000; /v1/internal/ and "
        "/v1/status/ exempt)"),
    KEY("http_write_rate", CONF_RATE, http_write_rate, "0", "PER_SECOND",
        "requests with any other method served per second, as http_read_rate"),
    KEY("check_max_concurrent", CONF_UINT, check_max_concurrent, "1024", "N",
        "health probes in flight at once"),
    KEY("check_update_interval", CONF_DURATION, check_update_interval_ms, "5m", "DURATION",
        "shortest gap between writes of a check whose output changed but status did not "
        "(probes and TTL updates)"),
    KEY("check_deregister_min", CONF_DURATION, check_deregister_min_ms, "1m", "DURATION",
        "a check's DeregisterCriticalServiceAfter is at least this (Consul's floor: 1m)"),
    KEY("self_preservation_share", CONF_RATIO, self_preservation_share, "0.5", "SHARE",
        "hold automatic deregistration when more than this share of checks turn critical "
        "within the window (1 disables)"),
    KEY("self_preservation_window", CONF_DURATION, self_preservation_window_ms, "30s",
        "DURATION", "the window of self_preservation_share"),
    KEY("self_preservation_min", CONF_UINT, self_preservation_min, "10", "N",
        "fewer checks than this never trigger self-preservation"),
    KEY("check_deny_cidrs", CONF_STRING, check_deny_cidrs, CHECK_TARGET_DEFAULT_DENY, "CIDR,...",
        "addresses health checks may not connect to (none: no list); registryd's own "
        "listeners are always refused"),
    KEY("check_allow_cidrs", CONF_STRING, check_allow_cidrs, NULL, "CIDR,...",
        "if set, the only addresses health checks may connect to"),
    KEY("acl_enabled", CONF_BOOL, acl_enabled, "false", NULL,
        "enforce ACLs (tokens and policies, Consul's model)"),
    KEY("acl_default_policy", CONF_STRING, acl_default_policy, "allow", "allow|deny",
        "what a token may do where no rule of its policies says anything"),
    KEY("acl_initial_management_token", CONF_STRING, acl_initial_management_token, NULL,
        "SECRET", "a management token known from the start (prefer the _file form)"),
    KEY("acl_initial_management_token_file", CONF_PATH, acl_initial_management_token_file,
        NULL, "FILE", "read acl_initial_management_token from FILE (first line)"),
    KEY("acl_default_token", CONF_STRING, acl_default_token, NULL, "SECRET",
        "token used for requests that carry none, and for DNS (default: anonymous)"),
    KEY("acl_server_token", CONF_STRING, acl_server_token, NULL, "SECRET",
        "token servers present to each other; the same on every server"),
    KEY("acl_server_token_file", CONF_PATH, acl_server_token_file, NULL, "FILE",
        "read acl_server_token from FILE (first line)"),
    KEY("acl_token_min_expiration_ttl", CONF_DURATION, acl_token_min_expiration_ttl_ms, "1m",
        "DURATION",
        "shortest life a token made with an ExpirationTTL or ExpirationTime may be given "
        "(Consul's acl.token_min_expiration_ttl)"),
    KEY("acl_token_max_expiration_ttl", CONF_DURATION, acl_token_max_expiration_ttl_ms, "24h",
        "DURATION", "longest life such a token may be given (acl.token_max_expiration_ttl)"),
    KEY("tls_ca_file", CONF_PATH, tls_ca_file, NULL, "FILE",
        "PEM CA certificate(s) that sign servers' and clients' certificates"),
    KEY("tls_cert_file", CONF_PATH, tls_cert_file, NULL, "FILE",
        "PEM certificate of this server (its name server.DATACENTER.DOMAIN); with tls_key_file "
        "and tls_ca_file, servers talk to each other over mutual TLS only"),
    KEY("tls_key_file", CONF_PATH, tls_key_file, NULL, "FILE", "PEM private key of tls_cert_file"),
    KEY("enable_agent_tls_for_checks", CONF_BOOL, enable_agent_tls_for_checks, "false", NULL,
        "HTTPS, gRPC-TLS and H2PING checks present tls_cert_file to the service and verify it "
        "against tls_ca_file instead of the system's CAs (needs the TLS files); otherwise "
        "checks never send a client certificate"),
    KEY("tls_verify_incoming", CONF_BOOL, tls_verify_incoming, "false", NULL,
        "HTTPS clients must present a certificate signed by tls_ca_file (else the handshake "
        "fails)"),
    KEY("tls_min_version", CONF_STRING, tls_min_version, "TLSv1_2", "VERSION",
        "oldest TLS version accepted: TLSv1_2 or TLSv1_3"),
    KEY("cluster_key_file", CONF_PATH, cluster_key_file, NULL, "FILE",
        "shared secret (first line, at least 32 characters) servers prove to each other on the "
        "raft port and, without ACLs, on /v1/internal/... when TLS is not configured"),
};

#define NKEYS (sizeof(conf_keys) / sizeof(conf_keys[0]))

/* Where each setting was last given, for the errors of the checks that run
 * once everything is read (check_combinations): "FILE:LINE:COL" or
 * "--flag"; "" for a default. One load at a time (start, a reload). */
static char origin[NKEYS][300];

static void note_origin_at(const struct conf_key *k, const char *path, size_t line, size_t col)
{
    snprintf(origin[k - conf_keys], sizeof(origin[0]), "%s:%zu:%zu", path, line + 1, col + 1);
}

/* ---- setters: parse one value into its field; 0 or REG_ECONFIG + msg ---- */

static void msgf(char *msg, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void msgf(char *msg, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, len, fmt, ap);
    va_end(ap);
}

static int parse_bool(const char *v, bool *out)
{
    static const char *yes[] = {"true", "yes", "on", "1"}, *no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return REG_EINVAL;
}

int conf_split_hostport(const char *addr, char *host, size_t hostlen, unsigned short *port)
{
    /* one parser for the daemon and libregistry (client/src/hostport.c) */
    return addr == NULL ? REG_EINVAL : reg__split_hostport(addr, strlen(addr), host, hostlen, port);
}

static int parse_size(const char *v, size_t *out)
{
    static const struct { const char *suffix; unsigned long long mul; } units[] = {
        {"", 1},           {"b", 1},          {"k", 1ULL << 10},  {"kib", 1ULL << 10},
        {"kb", 1ULL << 10}, {"m", 1ULL << 20}, {"mib", 1ULL << 20}, {"mb", 1ULL << 20},
        {"g", 1ULL << 30}, {"gib", 1ULL << 30}, {"gb", 1ULL << 30},
        {"t", 1ULL << 40}, {"tib", 1ULL << 40}, {"tb", 1ULL << 40},
    };
    char *end;
    if (!isdigit((unsigned char)*v))
        return REG_EINVAL;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno != 0)
        return REG_EINVAL;
    while (*end == ' ')
        end++;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcasecmp(end, units[i].suffix) == 0) {
            if (n > SIZE_MAX / units[i].mul)
                return REG_EINVAL;
            *out = (size_t)(n * units[i].mul);
            return 0;
        }
    }
    return REG_EINVAL;
}

static int set_string(char **field, const char *v)
{
    char *copy = strdup(v);
    if (copy == NULL)
        return REG_ENOMEM;
    free(*field);
    *field = copy;
    return 0;
}

static int setter_bool(const struct conf_key *k, void *field, const char *v, char *msg,
                       size_t len)
{
    (void)k;
    if (parse_bool(v, field) != 0) {
        msgf(msg, len, "\"%s\" is not a boolean (true/false, yes/no, on/off, 1/0)", v);
        return REG_ECONFIG;
    }
    return 0;
}

static int setter_string(const struct conf_key *k, void *field, const char *v, char *msg,
                         size_t len)
{
    if (*v == '\0') {
        msgf(msg, len, "must not be empty");
        return REG_ECONFIG;
    }
    if (k->type == CONF_PATH && strlen(v) >= PATH_MAX - 64) {
        msgf(msg, len, "path too long");
        return REG_ECONFIG;
    }
    return set_string(field, v);
}

static int setter_hostport(const struct conf_key *k, void *field, const char *v, char *msg,
                           size_t len)
{
    char host[256];
    unsigned short port;
    unsigned char ip[16];
    if (v[0] == '\0' && strcmp(k->name, "http_addr") == 0) {
        /* http_addr: "" turns the plain listener off (HTTPS only) */
        char **f = field;
        free(*f);
        *f = NULL;
        return 0;
    }
    if (conf_split_hostport(v, host, sizeof(host), &port) != 0) {
        msgf(msg, len, "\"%s\" is not HOST:PORT (port 1-65535, IPv6 as [ADDR]:PORT)", v);
        return REG_ECONFIG;
    }
    /* what --check-config accepts must start: listeners bind numeric
     * addresses only (no name resolution at start) */
    if (inet_pton(AF_INET, host, ip) != 1 && inet_pton(AF_INET6, host, ip) != 1) {
        msgf(msg, len,
             "\"%s\": the host must be a numeric IP address such as 127.0.0.1 or [::1] "
             "(listen addresses are not resolved)",
             v);
        return REG_ECONFIG;
    }
    return set_string(field, v);
}

static int setter_ipv4port(const struct conf_key *k, void *field, const char *v, char *msg,
                           size_t len)
{
    (void)k;
    char host[256];
    unsigned short port;
    unsigned a, b, cc, d;
    char tail;
    if (conf_split_hostport(v, host, sizeof(host), &port) != 0 ||
        sscanf(host, "%u.%u.%u.%u%c", &a, &b, &cc, &d, &tail) != 4 || a > 255 || b > 255 ||
        cc > 255 || d > 255) {
        msgf(msg, len, "\"%s\" is not IPV4:PORT (port 1-65535)", v);
        return REG_ECONFIG;
    }
    return set_string(field, v);
}

static int setter_name(const struct conf_key *k, void *field, const char *v, char *msg,
                       size_t len)
{
    (void)k;
    size_t n = strlen(v);
    if (n == 0 || n > 128 || strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                       "0123456789_.-") != n) {
        msgf(msg, len, "\"%s\" is not a valid name (1-128 of A-Z a-z 0-9 _ . -)", v);
        return REG_ECONFIG;
    }
    return set_string(field, v);
}

static int setter_size(const struct conf_key *k, void *field, const char *v, char *msg,
                       size_t len)
{
    (void)k;
    size_t n;
    if (parse_size(v, &n) != 0 || n < 1024 || n > (1ULL << 30)) {
        msgf(msg, len, "\"%s\" is not a size between 1KiB and 1GiB", v);
        return REG_ECONFIG;
    }
    *(size_t *)field = n;
    return 0;
}

static int setter_size_limit(const struct conf_key *k, void *field, const char *v, char *msg,
                             size_t len)
{
    (void)k;
    size_t n;
    if (parse_size(v, &n) != 0 || (n != 0 && n < 1024)) {
        msgf(msg, len, "\"%s\" is not 0 (no limit) or a size of 1KiB or more", v);
        return REG_ECONFIG;
    }
    *(size_t *)field = n;
    return 0;
}

static int setter_loglevel(const struct conf_key *k, void *field, const char *v, char *msg,
                           size_t len)
{
    (void)k;
    if (log_level_parse(v, field) != 0) {
        msgf(msg, len, "\"%s\" is not one of debug, info, warn, error", v);
        return REG_ECONFIG;
    }
    return 0;
}

static int setter_domain(const struct conf_key *k, void *field, const char *v, char *msg,
                         size_t len)
{
    (void)k;
    size_t n = strlen(v);
    if (n == 0 || n > 200 || v[0] == '.' || strstr(v, "..") != NULL ||
        strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") != n) {
        msgf(msg, len, "\"%s\" is not a DNS domain", v);
        return REG_ECONFIG;
    }
    char buf[256];
    snprintf(buf, sizeof(buf), "%s%s", v, v[n - 1] == '.' ? "" : ".");
    for (char *p = buf; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return set_string(field, buf);
}

static int setter_domain_opt(const struct conf_key *k, void *field, const char *v, char *msg,
                             size_t len)
{
    return *v == '\0' ? set_string(field, "") : setter_domain(k, field, v, msg, len);
}

static int setter_uint(const struct conf_key *k, void *field, const char *v, char *msg,
                       size_t len)
{
    (void)k;
    char *end;
    errno = 0;
    unsigned long n = isdigit((unsigned char)*v) ? strtoul(v, &end, 10) : 0;
    if (!isdigit((unsigned char)*v) || errno != 0 || *end != '\0' || n < 1 || n > 1000000) {
        msgf(msg, len, "\"%s\" is not a whole number between 1 and 1000000", v);
        return REG_ECONFIG;
    }
    *(unsigned *)field = (unsigned)n;
    return 0;
}

static int setter_limit(const struct conf_key *k, void *field, const char *v, char *msg,
                        size_t len)
{
    (void)k;
    char *end;
    errno = 0;
    unsigned long n = isdigit((unsigned char)*v) ? strtoul(v, &end, 10) : 0;
    if (!isdigit((unsigned char)*v) || errno != 0 || *end != '\0' || n > 1000000) {
        msgf(msg, len, "\"%s\" is not a whole number between 0 (no limit) and 1000000", v);
        return REG_ECONFIG;
    }
    *(unsigned *)field = (unsigned)n;
    return 0;
}

static int setter_rate(const struct conf_key *k, void *field, const char *v, char *msg,
                       size_t len)
{
    (void)k;
    char *end;
    double d = strtod(v, &end);
    /* a rate under one a minute is no rate: one request, then 429s for a day */
    if (end == v || *end != '\0' || !(d == 0.0 || (d >= 1.0 / 60 && d <= 1000000.0))) {
        msgf(msg, len, "\"%s\" is not 0 (no limit) or a rate from 1/60 to 1000000 per second",
             v);
        return REG_ECONFIG;
    }
    *(double *)field = d;
    return 0;
}

static int setter_duration(const struct conf_key *k, void *field, const char *v, char *msg,
                           size_t len)
{
    if (duration_parse(v, field) != 0) {
        msgf(msg, len, "\"%s\" is not a duration such as 30s, 5m or 1500ms", v);
        return REG_ECONFIG;
    }
    /* DNS TTLs are 31-bit seconds on the wire (RFC 2181, 8) */
    if (strncmp(k->name, "dns_", 4) == 0 && strstr(k->name, "ttl") != NULL &&
        *(uint64_t *)field / 1000 > INT32_MAX) {
        msgf(msg, len, "\"%s\" is too long for a DNS TTL (at most 2147483647s, RFC 2181)",
             v);
        return REG_ECONFIG;
    }
    return 0;
}

static int setter_addrlist(const struct conf_key *k, void *field, const char *v, char *msg,
                           size_t len)
{
    (void)k;
    char host[256];
    unsigned short port;
    char item[300];
    for (const char *p = v;;) {
        size_t l = strcspn(p, ",");
        snprintf(item, sizeof(item), "%.*s", (int)(l < 299 ? l : 299), p);
        if (conf_split_hostport(item, host, sizeof(host), &port) != 0) {
            msgf(msg, len, "\"%s\" is not HOST:PORT", item);
            return REG_ECONFIG;
        }
        if (p[l] == '\0')
            break;
        p += l + 1;
    }
    char **list = field;
    if (*list == NULL)
        return set_string(list, v);
    char *joined;
    if (asprintf(&joined, "%s,%s", *list, v) < 0)
        return REG_ENOMEM;
    free(*list);
    *list = joined;
    return 0;
}

static int setter_kvlist(const struct conf_key *k, void *field, const char *v, char *msg,
                         size_t len)
{
    (void)k;
    const char *colon = strchr(v, ':');
    size_t kl = colon ? (size_t)(colon - v) : 0;
    if (colon == NULL || kl == 0 || kl > 128 ||
        strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != kl) {
        msgf(msg, len, "\"%s\" is not KEY:VALUE (a key of 1-128 of A-Z a-z 0-9 _ -)", v);
        return REG_ECONFIG;
    }
    if (strncmp(v, "consul-", 7) == 0) {
        msgf(msg, len, "\"%.*s\": the consul- prefix is reserved", (int)kl, v);
        return REG_ECONFIG;
    }
    if (strlen(colon + 1) > 512) {
        msgf(msg, len, "the value of \"%.*s\" is longer than 512 bytes", (int)kl, v);
        return REG_ECONFIG;
    }
    for (const char *p = colon + 1; *p; p++)
        if ((unsigned char)*p < 0x20) {
            msgf(msg, len, "the value of \"%.*s\" has a control character", (int)kl, v);
            return REG_ECONFIG;
        }
    char **list = field;
    size_t pairs = *list != NULL; /* the pairs so far, one per line */
    for (char *p = *list; p && *p; p++) {
        pairs += *p == '\n';
        bool line_start = p == *list || p[-1] == '\n';
        if (line_start && strncmp(p, v, kl + 1) == 0) {
            /* "KEY:" again: the later one wins (a flag over the file), in
             * its place, so that keys stay unique */
            size_t old = strcspn(p, "\n");
            char *joined;
            if (asprintf(&joined, "%.*s%s%s", (int)(p - *list), *list, v, p + old) < 0)
                return REG_ENOMEM;
            free(*list);
            *list = joined;
            return 0;
        }
    }
    if (pairs >= 64) {
        msgf(msg, len, "at most 64 pairs");
        return REG_ECONFIG;
    }
    if (*list == NULL)
        return set_string(list, v);
    char *joined;
    if (asprintf(&joined, "%s\n%s", *list, v) < 0)
        return REG_ENOMEM;
    free(*list);
    *list = joined;
    return 0;
}

static int setter_ratio(const struct conf_key *k, void *field, const char *v, char *msg,
                        size_t len)
{
    (void)k;
    char *end;
    double d = strtod(v, &end);
    if (end == v || *end != '\0' || !(d >= 0.0 && d <= 1.0)) {
        msgf(msg, len, "\"%s\" is not a number between 0 and 1", v);
        return REG_ECONFIG;
    }
    *(double *)field = d;
    return 0;
}

/* One setter per type (as nginx's conf_set_*_slot): parse v into field, or
 * say what is wrong in msg and return REG_ECONFIG. */
typedef int (*conf_setter)(const struct conf_key *k, void *field, const char *v, char *msg,
                           size_t len);
static const conf_setter setters[] = {
    [CONF_BOOL] = setter_bool,
    [CONF_STRING] = setter_string,
    [CONF_PATH] = setter_string,
    [CONF_HOSTPORT] = setter_hostport,
    [CONF_IPV4PORT] = setter_ipv4port,
    [CONF_NAME] = setter_name,
    [CONF_SIZE] = setter_size,
    [CONF_SIZE_LIMIT] = setter_size_limit,
    [CONF_LOGLEVEL] = setter_loglevel,
    [CONF_DOMAIN] = setter_domain,
    [CONF_DOMAIN_OPT] = setter_domain_opt,
    [CONF_UINT] = setter_uint,
    [CONF_DURATION] = setter_duration,
    [CONF_ADDRLIST] = setter_addrlist,
    [CONF_KVLIST] = setter_kvlist,
    [CONF_RATIO] = setter_ratio,
    [CONF_LIMIT] = setter_limit,
    [CONF_RATE] = setter_rate,
};

static int conf_set(struct conf *c, const struct conf_key *k, const char *v, char *msg, size_t len)
{
    if ((size_t)k->type >= sizeof(setters) / sizeof(setters[0]) || setters[k->type] == NULL) {
        msgf(msg, len, "unknown setting type");
        return REG_ECONFIG;
    }
    return setters[k->type](k, (char *)c + k->offset, v, msg, len);
}

/* Find a key by YAML or flag spelling ("data_dir", "data-dir"). */
static const struct conf_key *conf_find(const char *name, size_t len)
{
    for (size_t i = 0; i < NKEYS; i++) {
        const char *k = conf_keys[i].name;
        if (strlen(k) != len)
            continue;
        size_t j = 0;
        for (; j < len; j++) {
            char ch = name[j] == '-' ? '_' : name[j];
            if (ch != k[j])
                break;
        }
        if (j == len)
            return &conf_keys[i];
    }
    return NULL;
}

/* ---- the YAML file ---- */

/* A flat mapping of scalar keys to scalar values, read from f or, when f is
 * NULL, from buf[0..len). Positions are 1-based; path names the input. */
static int yaml_load(struct conf *c, const char *path, FILE *f, const unsigned char *buf,
                     size_t len, char *err, size_t errlen)
{
    yaml_parser_t parser;
    yaml_event_t ev;
    int rc = REG_ECONFIG, depth = 0, done = 0;
    char msg[300];
    char key[64] = "";
    bool have_key = false, in_list = false, seen[NKEYS] = {false};
    const struct conf_key *k = NULL;
    char *kv_key = NULL; /* inside a KVLIST mapping: the key waiting for its value */

    if (!yaml_parser_initialize(&parser)) {
        snprintf(err, errlen, "%s: cannot initialise the YAML parser", path);
        return REG_ENOMEM;
    }
    if (f != NULL)
        yaml_parser_set_input_file(&parser, f);
    else
        yaml_parser_set_input_string(&parser, buf, len);

#define FAIL_AT(mark, ...)                                                                  \
    do {                                                                                    \
        msgf(msg, sizeof(msg), __VA_ARGS__);                                                \
        snprintf(err, errlen, "%s:%zu:%zu: %s", path, (mark).line + 1, (mark).column + 1, msg); \
        yaml_event_delete(&ev);                                                             \
        goto out;                                                                           \
    } while (0)

    while (!done) {
        if (!yaml_parser_parse(&parser, &ev)) {
            snprintf(err, errlen, "%s:%zu:%zu: %s%s%s", path, parser.problem_mark.line + 1,
                     parser.problem_mark.column + 1, parser.problem ? parser.problem : "syntax error",
                     parser.context ? " " : "", parser.context ? parser.context : "");
            goto out;
        }
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = 1;
            break;
        case YAML_STREAM_START_EVENT:
        case YAML_DOCUMENT_START_EVENT:
        case YAML_DOCUMENT_END_EVENT:
            break;
        case YAML_MAPPING_START_EVENT:
            if (depth != 0 && !have_key)
                FAIL_AT(ev.start_mark, "a setting's name must be a plain word, found a mapping");
            if (depth == 1 && have_key && k->type == CONF_KVLIST) {
                depth = 2; /* node_meta: {key: value, ...} */
                break;
            }
            if (depth != 0)
                FAIL_AT(ev.start_mark, "%s: expected a single value, found a mapping", key);
            depth = 1;
            break;
        case YAML_MAPPING_END_EVENT:
            if (depth == 2) {
                depth = 1;
                have_key = false;
                break;
            }
            depth = 0;
            break;
        case YAML_SEQUENCE_START_EVENT:
            if (depth == 0)
                FAIL_AT(ev.start_mark, "expected a mapping of settings, found a list");
            if (!have_key)
                FAIL_AT(ev.start_mark, "a setting's name must be a plain word, found a list");
            if (k->type != CONF_ADDRLIST || in_list)
                FAIL_AT(ev.start_mark, "%s: expected a single value, found a list", key);
            in_list = true; /* join: [a:1, b:2], each item as a repeated flag */
            break;
        case YAML_SEQUENCE_END_EVENT:
            in_list = false;
            have_key = false;
            break;
        case YAML_ALIAS_EVENT:
            FAIL_AT(ev.start_mark, "aliases are not supported");
            break;
        case YAML_SCALAR_EVENT: {
            const char *v = (const char *)ev.data.scalar.value;
            if (depth == 0) {
                if (ev.data.scalar.length == 0 && ev.data.scalar.plain_implicit)
                    break; /* an empty document */
                FAIL_AT(ev.start_mark, "expected a mapping of settings (key: value)");
            }
            if (depth == 2) { /* a pair of a KVLIST mapping */
                if (strlen(v) != ev.data.scalar.length)
                    FAIL_AT(ev.start_mark, "%s: value contains a NUL byte", key);
                if (kv_key == NULL) {
                    kv_key = strdup(v);
                    if (kv_key == NULL)
                        FAIL_AT(ev.start_mark, "out of memory");
                    break;
                }
                char *pair;
                if (asprintf(&pair, "%s:%s", kv_key, v) < 0)
                    FAIL_AT(ev.start_mark, "out of memory");
                free(kv_key);
                kv_key = NULL;
                int r = conf_set(c, k, pair, msg, sizeof(msg));
                free(pair);
                if (r != 0) {
                    char why[300];
                    snprintf(why, sizeof(why), "%s", msg);
                    FAIL_AT(ev.start_mark, "%s: %s", key, why);
                }
                note_origin_at(k, path, ev.start_mark.line, ev.start_mark.column);
                break;
            }
            if (!have_key) {
                if (ev.data.scalar.style != YAML_PLAIN_SCALAR_STYLE &&
                    ev.data.scalar.style != YAML_SINGLE_QUOTED_SCALAR_STYLE &&
                    ev.data.scalar.style != YAML_DOUBLE_QUOTED_SCALAR_STYLE)
                    FAIL_AT(ev.start_mark, "a setting's name must be a plain word");
                k = conf_find(v, ev.data.scalar.length);
                if (k == NULL)
                    FAIL_AT(ev.start_mark, "unknown setting \"%.64s\"", v);
                if (seen[k - conf_keys])
                    FAIL_AT(ev.start_mark, "%s is set twice", k->name);
                seen[k - conf_keys] = true;
                snprintf(key, sizeof(key), "%s", k->name);
                have_key = true;
            } else {
                have_key = in_list; /* a list's items all belong to its key */
                if (ev.data.scalar.length == 0 && ev.data.scalar.plain_implicit &&
                    k->def == NULL) {
                    break; /* "raft_addr:" with no value leaves it unset */
                }
                if (strlen(v) != ev.data.scalar.length)
                    FAIL_AT(ev.start_mark, "%s: value contains a NUL byte", key);
                int r = conf_set(c, k, v, msg, sizeof(msg));
                if (r == REG_ENOMEM) {
                    snprintf(err, errlen, "%s: out of memory", path);
                    rc = r;
                    yaml_event_delete(&ev);
                    goto out;
                }
                if (r != 0) {
                    char why[300];
                    snprintf(why, sizeof(why), "%s", msg);
                    FAIL_AT(ev.start_mark, "%s: %s", key, why);
                }
                note_origin_at(k, path, ev.start_mark.line, ev.start_mark.column);
            }
            break;
        }
        default:
            break;
        }
        yaml_event_delete(&ev);
    }
    rc = 0;
#undef FAIL_AT
out:
    free(kv_key);
    yaml_parser_delete(&parser);
    return rc;
}

static int conf_load_yaml(struct conf *c, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "--config: cannot open %s: %s", path, strerror(errno));
        return REG_ECONFIG;
    }
    int rc = yaml_load(c, path, f, NULL, 0, err, errlen);
    fclose(f);
    return rc;
}

int conf_load_yaml_buffer(struct conf *c, const char *name, const void *buf, size_t len,
                          char *err, size_t errlen)
{
    return yaml_load(c, name, NULL, buf, len, err, errlen);
}

/* ---- flags ---- */

static void flag_name(const struct conf_key *k, char *out, size_t len)
{
    snprintf(out, len, "--%s", k->name);
    for (char *p = out; *p; p++)
        if (*p == '_')
            *p = '-';
}

void conf_print_help(FILE *out)
{
    fprintf(out,
            "Usage: registryd [--dev | --data-dir DIR] [--config FILE] [FLAGS]\n"
            "\n"
            "A replicated service registry with a Consul-compatible HTTP API.\n"
            "\n"
            "  --config FILE            YAML file with the settings below as keys\n"
            "                           (underscores for dashes); flags override it\n"
            "  --check-config           validate the settings and load the TLS files, print \"configuration OK\", exit\n"
            "  --help, -h               this text\n"
            "  --version                print the version\n");
    for (size_t i = 0; i < NKEYS; i++) {
        const struct conf_key *k = &conf_keys[i];
        char flag[64], left[96];
        flag_name(k, flag, sizeof(flag));
        snprintf(left, sizeof(left), "%s%s%s", flag, k->arg ? " " : "", k->arg ? k->arg : "");
        fprintf(out, "  %-24s %s", left, k->doc);
        if (k->def != NULL && k->type != CONF_BOOL)
            fprintf(out, " [%s]", k->def);
        fputc('\n', out);
    }
}

/* Split argv[i] into a flag name and an inline value ("--x=v"). */
static int flag_value(int argc, char **argv, int *i, const struct conf_key *k, const char *inl,
                      const char **value, char *err, size_t errlen, const char *flag)
{
    if (inl != NULL) {
        *value = inl;
        return 0;
    }
    if (k != NULL && k->type == CONF_BOOL) {
        *value = "true";
        return 0;
    }
    if (*i + 1 >= argc) {
        snprintf(err, errlen, "%s: missing value", flag);
        return REG_ECONFIG;
    }
    *value = argv[++*i];
    return 0;
}

/* A secret kept in a file (out of ps and shell history): its first line. */
static int read_secret_file(const char *path, char **field, const char *key, char *err,
                            size_t errlen)
{
    if (path == NULL)
        return 0;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %.200s: %s", key, path, strerror(errno));
        return REG_ECONFIG;
    }
    char line[512];
    if (fgets(line, sizeof(line), f) == NULL)
        line[0] = '\0';
    fclose(f);
    line[strcspn(line, "\r\n")] = '\0';
    if (line[0] == '\0') {
        snprintf(err, errlen, "%s: %.200s: empty", key, path);
        return REG_ECONFIG;
    }
    return set_string(field, line);
}

/* Every key's default (from the table). */
static int load_defaults(struct conf *c, char *err, size_t errlen)
{
    char msg[300];
    int rc;
    memset(c, 0, sizeof(*c));
    memset(origin, 0, sizeof(origin));
    for (size_t i = 0; i < NKEYS; i++) {
        if (conf_keys[i].def == NULL)
            continue;
        rc = conf_set(c, &conf_keys[i], conf_keys[i].def, msg, sizeof(msg));
        if (rc != 0) {
            snprintf(err, errlen, "default of %s: %s", conf_keys[i].name, msg);
            return rc == REG_ENOMEM ? rc : REG_ECONFIG;
        }
    }

    return 0;
}

/* The command line, and the file --config names. Pass 1: --help,
 * --version, --check-config and --config; pass 2: the rest, so that flags
 * win over the file wherever they appear. */
static int load_flags_and_file(struct conf *c, int argc, char **argv, FILE *out, char *err,
                               size_t errlen)
{
    char msg[300];
    int rc;
    for (int pass = 1; pass <= 2; pass++) {
        for (int i = 1; i < argc; i++) {
            const char *a = argv[i], *value = NULL;
            if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
                if (pass == 1) {
                    conf_print_help(out);
                    return REG_EEXIT;
                }
                continue;
            }
            if (strcmp(a, "--version") == 0) {
                if (pass == 1) {
                    fprintf(out, "registryd %s\n", REGISTRYD_VERSION);
                    return REG_EEXIT;
                }
                continue;
            }
            if (strncmp(a, "--", 2) != 0) {
                snprintf(err, errlen, "unexpected argument \"%s\" (see --help)", a);
                return REG_ECONFIG;
            }
            const char *name = a + 2, *eq = strchr(name, '=');
            size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
            char flag[80];
            snprintf(flag, sizeof(flag), "--%.*s", (int)(nlen < 70 ? nlen : 70), name);

            if (nlen == 6 && strncmp(name, "config", 6) == 0) {
                if (flag_value(argc, argv, &i, NULL, eq ? eq + 1 : NULL, &value, err, errlen,
                               flag) != 0)
                    return REG_ECONFIG;
                if (pass == 1 && (rc = set_string(&c->config_file, value)) != 0)
                    return rc;
                continue;
            }
            if ((nlen == 12 && strncmp(name, "check-config", 12) == 0) ||
                (nlen == 12 && strncmp(name, "check_config", 12) == 0)) {
                if (eq != NULL) {
                    snprintf(err, errlen, "%s: takes no value", flag);
                    return REG_ECONFIG;
                }
                c->check_only = true;
                continue;
            }
            const struct conf_key *k = conf_find(name, nlen);
            if (k == NULL) {
                snprintf(err, errlen, "%s: unknown flag (see --help)", flag);
                return REG_ECONFIG;
            }
            if (flag_value(argc, argv, &i, k, eq ? eq + 1 : NULL, &value, err, errlen, flag) != 0)
                return REG_ECONFIG;
            if (pass == 1)
                continue;
            rc = conf_set(c, k, value, msg, sizeof(msg));
            if (rc != 0) {
                snprintf(err, errlen, "%s: %s", flag, msg);
                return rc == REG_ENOMEM ? rc : REG_ECONFIG;
            }
            flag_name(k, origin[k - conf_keys], sizeof(origin[0]));
        }
        if (pass == 1 && c->config_file != NULL) {
            rc = conf_load_yaml(c, c->config_file, err, errlen);
            if (rc != 0)
                return rc;
        }
    }

    return 0;
}

/* The TLS settings: all three files or none, each readable; a version
 * OpenSSL knows; an HTTPS listener only with a certificate. The files are
 * parsed at start (tls.c), where a bad PEM is reported. */
static int check_tls(struct conf *c, char *err, size_t errlen)
{
    const char *files[] = {c->tls_ca_file, c->tls_cert_file, c->tls_key_file};
    const char *names[] = {"tls_ca_file", "tls_cert_file", "tls_key_file"};
    int given = 0;
    for (int i = 0; i < 3; i++) {
        if (files[i] == NULL)
            continue;
        given++;
        if (access(files[i], R_OK) != 0) {
            snprintf(err, errlen, "%s: %.200s: %s", names[i], files[i], strerror(errno));
            return REG_ECONFIG;
        }
    }
    if (given != 0 && given != 3) {
        snprintf(err, errlen, "tls_ca_file, tls_cert_file and tls_key_file: give all three or none");
        return REG_ECONFIG;
    }
    if (strcasecmp(c->tls_min_version, "TLSv1_2") != 0 &&
        strcasecmp(c->tls_min_version, "tls12") != 0 &&
        strcasecmp(c->tls_min_version, "TLSv1_3") != 0 &&
        strcasecmp(c->tls_min_version, "tls13") != 0) {
        snprintf(err, errlen, "tls_min_version: \"%.40s\" is neither TLSv1_2 nor TLSv1_3",
                 c->tls_min_version);
        return REG_ECONFIG;
    }
    if (given == 0 &&
        (c->https_addr != NULL || c->tls_verify_incoming || c->enable_agent_tls_for_checks)) {
        snprintf(err, errlen, "%s: needs tls_ca_file, tls_cert_file and tls_key_file",
                 c->https_addr != NULL      ? "https_addr"
                 : c->tls_verify_incoming ? "tls_verify_incoming"
                                          : "enable_agent_tls_for_checks");
        return REG_ECONFIG;
    }
    if (c->http_addr == NULL && c->https_addr == NULL) {
        snprintf(err, errlen, "http_addr: may be empty only when https_addr is set");
        return REG_ECONFIG;
    }
    if (given == 3 && c->https_addr == NULL && (c->bootstrap_expect > 1 || c->join != NULL)) {
        snprintf(err, errlen, "https_addr: required on a server that forms or joins a cluster "
                              "with TLS (servers reach each other over HTTPS only)");
        return REG_ECONFIG;
    }
    return 0;
}

/* Settings that depend on each other, and files that settings name. */
static int check_combinations(struct conf *c, char *err, size_t errlen)
{
    char msg[300];
    int rc;
    if (c->dev && c->data_dir != NULL) {
        snprintf(err, errlen, "--dev and --data-dir exclude each other: --dev keeps its data "
                              "in a fresh temporary directory, removed on exit");
        return REG_ECONFIG;
    }
    if (c->dev && (c->join != NULL || c->bootstrap_expect > 1)) {
        /* it served "ready", and every write failed: no leader */
        snprintf(err, errlen, "--dev is a single server: it takes neither --join nor "
                              "--bootstrap-expect (give each server a --data-dir)");
        return REG_ECONFIG;
    }
    if (strcmp(c->acl_default_policy, "allow") != 0 && strcmp(c->acl_default_policy, "deny") != 0) {
        snprintf(err, errlen, "acl_default_policy: \"%.60s\" is neither allow nor deny",
                 c->acl_default_policy);
        return REG_ECONFIG;
    }
    if (strcmp(c->check_deny_cidrs, "none") == 0)
        c->check_deny_cidrs[0] = '\0';
    if (check_target_parse_list(c->check_deny_cidrs, msg, sizeof(msg)) != 0) {
        snprintf(err, errlen, "check_deny_cidrs: %s", msg);
        return REG_ECONFIG;
    }
    if (check_target_parse_list(c->check_allow_cidrs, msg, sizeof(msg)) != 0) {
        snprintf(err, errlen, "check_allow_cidrs: %s", msg);
        return REG_ECONFIG;
    }
    if (c->acl_token_min_expiration_ttl_ms > c->acl_token_max_expiration_ttl_ms) {
        /* blame the one that was given (the other is a default) */
        static const char kmin[] = "acl_token_min_expiration_ttl",
                          kmax[] = "acl_token_max_expiration_ttl";
        char lo[32], hi[32];
        bool max_given = origin[conf_find(kmin, sizeof(kmin) - 1) - conf_keys][0] == '\0';
        duration_format(c->acl_token_min_expiration_ttl_ms, lo, sizeof(lo));
        duration_format(c->acl_token_max_expiration_ttl_ms, hi, sizeof(hi));
        snprintf(err, errlen, "%s: %s is %s than %s (%s): no token could expire",
                 max_given ? kmax : kmin, max_given ? hi : lo, max_given ? "less" : "more",
                 max_given ? kmin : kmax, max_given ? lo : hi);
        return REG_ECONFIG;
    }
    if ((rc = read_secret_file(c->acl_initial_management_token_file,
                               &c->acl_initial_management_token, "acl_initial_management_token_file",
                               err, errlen)) != 0 ||
        (rc = read_secret_file(c->acl_server_token_file, &c->acl_server_token,
                               "acl_server_token_file", err, errlen)) != 0)
        return rc;
    if (c->acl_enabled && (c->bootstrap_expect > 1 || c->join != NULL) &&
        c->acl_server_token == NULL) {
        snprintf(err, errlen, "acl_server_token: required when ACLs are enabled on a server "
                              "that forms or joins a cluster");
        return REG_ECONFIG;
    }
    if ((rc = check_tls(c, err, errlen)) != 0 ||
        (rc = read_secret_file(c->cluster_key_file, &c->cluster_key, "cluster_key_file", err,
                               errlen)) != 0)
        return rc;
    if (c->cluster_key != NULL && strlen(c->cluster_key) < 32) {
        snprintf(err, errlen, "cluster_key_file: %.200s: the key must be at least 32 characters",
                 c->cluster_key_file);
        return REG_ECONFIG;
    }
    if (c->http_workers > REG_MAX_HTTP_WORKERS) {
        snprintf(err, errlen, "http_workers: %u is more than %d", c->http_workers,
                 REG_MAX_HTTP_WORKERS);
        return REG_ECONFIG;
    }
    if (c->dns_workers > CONF_MAX_WORKERS) {
        snprintf(err, errlen, "dns_workers: %u is more than %d", c->dns_workers, CONF_MAX_WORKERS);
        return REG_ECONFIG;
    }
    if (!c->dev && c->data_dir == NULL) {
        snprintf(err, errlen, "--data-dir: required (or use --dev for a throwaway server)");
        return REG_ECONFIG;
    }
    return 0;
}

/* The node name, when not given: the host name up to its first dot, with
 * anything but letters, digits, - and _ made a -. */
static int default_node_name(struct conf *c)
{
    if (c->node != NULL)
        return 0;
    char host[256] = "";
    if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0')
        snprintf(host, sizeof(host), "localhost");
    char *dot = strchr(host, '.');
    if (dot != NULL && dot != host)
        *dot = '\0';
    for (char *p = host; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_')
            *p = '-';
    return set_string(&c->node, host);
}

/* An error of check_combinations that starts with a setting's name, said
 * where that setting was given: "FILE:LINE:COL: name: ..." for the config
 * file, "--flag: ..." for a flag (the name is the flag's then). */
static void locate_error(char *err, size_t errlen)
{
    for (size_t i = 0; i < NKEYS; i++) {
        size_t n = strlen(conf_keys[i].name);
        if (origin[i][0] == '\0' || strncmp(err, conf_keys[i].name, n) != 0 ||
            strncmp(err + n, ": ", 2) != 0)
            continue;
        char was[1024];
        snprintf(was, sizeof(was), "%s", err);
        if (origin[i][0] == '-')
            snprintf(err, errlen, "%s%s", origin[i], was + n);
        else
            snprintf(err, errlen, "%s: %s", origin[i], was);
        return;
    }
}

int conf_load(struct conf *c, int argc, char **argv, FILE *out, char *err, size_t errlen)
{
    int rc;
    if ((rc = load_defaults(c, err, errlen)) != 0 ||
        (rc = load_flags_and_file(c, argc, argv, out, err, errlen)) != 0)
        return rc;
    if ((rc = check_combinations(c, err, errlen)) != 0) {
        locate_error(err, errlen);
        return rc;
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (c->dns_workers == 0) /* not set: one per online CPU */
        c->dns_workers = cpus < 1 ? 1 : cpus > CONF_MAX_WORKERS ? CONF_MAX_WORKERS : (unsigned)cpus;
    if (c->http_workers == 0)
        c->http_workers = cpus < 1                         ? 1
                          : cpus > REG_MAX_HTTP_WORKERS ? REG_MAX_HTTP_WORKERS
                                                         : (unsigned)cpus;
    return default_node_name(c);
}

void conf_fini(struct conf *c)
{
    free(c->config_file);
    if (c->cluster_key != NULL)
        OPENSSL_cleanse(c->cluster_key, strlen(c->cluster_key));
    free(c->cluster_key);
    c->cluster_key = NULL;
    for (size_t i = 0; i < NKEYS; i++) {
        enum conf_type t = conf_keys[i].type;
        if (t == CONF_BOOL || t == CONF_SIZE || t == CONF_SIZE_LIMIT || t == CONF_LOGLEVEL ||
            t == CONF_UINT || t == CONF_DURATION || t == CONF_RATIO || t == CONF_LIMIT ||
            t == CONF_RATE)
            continue;
        char **field = (char **)((char *)c + conf_keys[i].offset);
        free(*field);
        *field = NULL;
    }
    c->config_file = NULL;
}

void conf_diff(const struct conf *a, const struct conf *b, void (*cb)(const char *key, void *arg),
               void *arg)
{
    for (size_t i = 0; i < NKEYS; i++) {
        const struct conf_key *k = &conf_keys[i];
        const void *x = (const char *)a + k->offset, *y = (const char *)b + k->offset;
        bool same;
        switch (k->type) {
        case CONF_BOOL:
            same = *(const bool *)x == *(const bool *)y;
            break;
        case CONF_SIZE:
        case CONF_SIZE_LIMIT:
            same = *(const size_t *)x == *(const size_t *)y;
            break;
        case CONF_LOGLEVEL:
            same = *(const enum log_level *)x == *(const enum log_level *)y;
            break;
        case CONF_UINT:
        case CONF_LIMIT:
            same = *(const unsigned *)x == *(const unsigned *)y;
            break;
        case CONF_DURATION:
            same = *(const uint64_t *)x == *(const uint64_t *)y;
            break;
        case CONF_RATIO:
        case CONF_RATE:
            same = *(const double *)x == *(const double *)y;
            break;
        default: {
            const char *sx = *(char *const *)x, *sy = *(char *const *)y;
            same = (sx == NULL && sy == NULL) || (sx && sy && strcmp(sx, sy) == 0);
        }
        }
        if (!same)
            cb(k->name, arg);
    }
}
