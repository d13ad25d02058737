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

/*
 * The settings. Each field is one row of config.c's key table, which holds
 * its name (YAML key and --flag), type, default and one-line doc; --help,
 * the YAML parser, validation and the man page check all read that table, so
 * defaults are not repeated here. Durations are stored in ms, lists as
 * strings (ADDRLIST: "a,b"; KVLIST: "k:v" lines).
 */
#define CONF_MAX_WORKERS 256 /* front-end threads of one kind (each holds an LMDB reader) */

struct conf {
    char *config_file; /* --config (flag only) */
    bool check_only;   /* --check-config (flag only) */
    bool dev;
    char *data_dir;
    bool recover_from_store;
    char *http_addr; /* NULL: no plain HTTP listener (https_addr is set) */
    char *dns_addr;
    char *raft_addr; /* NULL: 127.0.0.1 with a port chosen at first start */
    char *node;      /* default: gethostname() */
    unsigned bootstrap_expect;
    char *join;
    unsigned raft_snapshot_threshold;
    bool raft_snapshot_compression;
    bool leave_on_terminate;
    char *datacenter;
    char *node_meta;
    enum log_level log_level;
    size_t max_body_size;
    size_t http_cache_size;
    size_t http_render_cache_size;
    size_t max_snapshot_size;
    uint64_t http_head_timeout_ms;
    uint64_t http_body_timeout_ms;
    unsigned http_max_conns_per_client; /* 0: no limit */
    double http_read_rate, http_write_rate; /* requests per second; 0: no limit */
    char *dns_domain; /* with its trailing dot */
    char *dns_alt_domain; /* the same, or "": none */
    uint64_t dns_ttl_ms;
    uint64_t dns_negative_ttl_ms;
    bool dns_allow_warning;
    bool dns_only_passing;
    unsigned dns_udp_answer_limit;
    unsigned dns_a_record_limit;
    bool dns_enable_truncate;
    bool dns_enable_additional_node_meta_txt;
    char *dns_server_service;
    unsigned dns_workers; /* 1..CONF_MAX_WORKERS; default: online CPUs */
    unsigned http_workers; /* 1..REG_MAX_HTTP_WORKERS; default: online CPUs */
    bool enable_script_checks;
    unsigned check_max_concurrent;
    uint64_t check_update_interval_ms;
    uint64_t check_deregister_min_ms;
    double self_preservation_share;
    uint64_t self_preservation_window_ms;
    unsigned self_preservation_min;
    bool acl_enabled;
    char *acl_default_policy;
    char *acl_initial_management_token; /* also read from its _file */
    char *acl_initial_management_token_file;
    char *acl_default_token;
    char *acl_server_token;
    char *acl_server_token_file;
    uint64_t acl_token_min_expiration_ttl_ms; /* Consul's acl.token_min_expiration_ttl */
    uint64_t acl_token_max_expiration_ttl_ms;
    char *check_deny_cidrs;
    char *check_allow_cidrs;
    char *https_addr;          /* NULL: no HTTPS listener */
    char *tls_ca_file;         /* the three TLS files: all set or all NULL */
    char *tls_cert_file;
    char *tls_key_file;
    bool tls_verify_incoming;
    bool enable_agent_tls_for_checks; /* checks present this server's certificate */
    char *tls_min_version;     /* "TLSv1_2" or "TLSv1_3" (also tls12/tls13) */
    char *cluster_key_file;
    char *cluster_key;         /* read from cluster_key_file; >= 32 chars */
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
