/*
 * config.h — registryd's configuration: defaults, YAML file (libyaml) and
 * command-line flags, validated up front.
 *
 * Every setting is one row of a table (name, type, offset into struct conf,
 * default, unit, one-line doc). The same name is the long flag (`--http-addr`)
 * and the YAML key (`http_addr`; dashes and underscores are interchangeable in
 * both). `--help`, the YAML parser and validation all read that table.
 * Precedence: built-in defaults < YAML file (--config) < command-line flags.
 * Errors name their origin: `file:line:col: message` for the YAML file,
 * `registryd: --flag: message` for flags.
 */
#ifndef REGISTRYD_CONFIG_H
#define REGISTRYD_CONFIG_H

#include "common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "log.h"

struct conf {
    char *config_file;     /* --config FILE (flag only) */
    bool dev;              /* --dev: fresh temp data dir, loopback */
    char *data_dir;        /* --data-dir DIR; required unless dev */
    bool recover_from_store; /* --recover-from-store: rebuild raft from the store */
    char *http_addr;       /* --http-addr HOST:PORT, default 127.0.0.1:8500 */
    char *dns_addr;        /* --dns-addr HOST:PORT, default 127.0.0.1:8600 */
    char *raft_addr;       /* --raft-addr IPv4:PORT; NULL = 127.0.0.1, ephemeral port */
    char *node;            /* --node NAME, default: gethostname() */
    unsigned bootstrap_expect; /* --bootstrap-expect N, default 1 (a single server) */
    char *join;            /* --join HOST:PORT[,...] (HTTP addresses), NULL: none */
    unsigned raft_snapshot_threshold; /* entries between raft snapshots, default 16384 */
    bool leave_on_terminate; /* SIGTERM leaves the cluster first, default false */
    char *datacenter;      /* --datacenter NAME, default "dc1" */
    char *node_meta;       /* --node-meta KEY:VALUE lines joined by '\n', NULL: none */
    enum log_level log_level; /* --log-level debug|info|warn|error, default info */
    size_t max_body_size;  /* --max-body-size BYTES, default 1048576 (1 MiB) */
    size_t max_snapshot_size; /* --max-snapshot-size BYTES (PUT /v1/snapshot), default 1 GiB */
    uint64_t http_head_timeout_ms; /* --http-head-timeout, default 10s (0: none) */
    uint64_t http_body_timeout_ms; /* --http-body-timeout, default 5m (0: none) */
    char *dns_domain;      /* --dns-domain, default "registry." */
    uint64_t dns_ttl_ms;   /* --dns-ttl, default 0s */
    uint64_t dns_negative_ttl_ms; /* --dns-negative-ttl, default 0s */
    bool dns_allow_warning; /* --dns-allow-warning, default false */
    unsigned dns_udp_answer_limit; /* --dns-udp-answer-limit, default 3 */
    bool dns_enable_truncate; /* --dns-enable-truncate, default false */
    char *dns_server_service; /* --dns-server-service, default "consul" */
    bool enable_script_checks; /* --enable-script-checks, default false */
    bool check_only;       /* --check-config: validate, report, exit */
    unsigned check_max_concurrent;     /* health probes in flight, default 1024 */
    uint64_t check_update_interval_ms; /* output-only write gap, default 5m */
    double self_preservation_share;    /* default 0.5; 1 disables */
    uint64_t self_preservation_window_ms; /* default 30s */
    unsigned self_preservation_min;    /* default 10 checks */
    bool acl_enabled;                  /* default false */
    char *acl_default_policy;          /* "allow" (default) or "deny" */
    char *acl_initial_management_token; /* secret, or NULL (also from _file) */
    char *acl_initial_management_token_file;
    char *acl_default_token;           /* for requests without a token, and DNS */
    char *acl_server_token;            /* servers' identity on /v1/internal/ */
    char *acl_server_token_file;
    char *check_deny_cidrs;            /* where checks may not go ("none": nowhere) */
    char *check_allow_cidrs;           /* NULL: anywhere not denied */
};

/*
 * Fill `c` from defaults, then the YAML file named by --config (if any),
 * then the flags in argv. Returns 0 (run), REG_EEXIT (help/version printed
 * to `out`: exit 0), or REG_ECONFIG with a one-line message in err
 * ("file:line:col: message" or "--flag: message").
 * On any return, conf_fini(c) releases what was allocated.
 */
int conf_load(struct conf *c, int argc, char **argv, FILE *out, char *err, size_t errlen)
    REG_MUSTCHECK;

/* Apply the YAML text buf[0..len) (borrowed) over c, as a --config file
 * named `name` would be (errors "name:line:col: message"). For tests and
 * the fuzzer; conf_load reads the file itself. Returns 0, REG_ECONFIG or
 * REG_ENOMEM; c may be partly updated on error. */
int conf_load_yaml_buffer(struct conf *c, const char *name, const void *buf, size_t len,
                          char *err, size_t errlen) REG_MUSTCHECK;

/* Free every string in c. c itself is borrowed. Safe on a zeroed struct. */
void conf_fini(struct conf *c);

/* Split "host:port" / "[v6]:port" into host (no brackets) and port.
 * Returns 0 or REG_EINVAL. host must hold hostlen bytes. */
int conf_split_hostport(const char *addr, char *host, size_t hostlen, unsigned short *port)
    REG_MUSTCHECK;

/* Call cb with the key of every setting whose value differs between a and
 * b (used by SIGHUP to say what a reload could not apply). */
void conf_diff(const struct conf *a, const struct conf *b, void (*cb)(const char *key, void *arg),
               void *arg);

/* Write the flag/key reference (from the table) to out: used by --help. */
void conf_print_help(FILE *out);

#endif
