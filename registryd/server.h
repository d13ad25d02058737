/*
 * server.h — one registryd server as an object: start it (data dir, store,
 * raft, checker, HTTP and DNS front ends, signals, cluster formation, in
 * that order), run its loop until a signal stops it, stop it (everything
 * freed in reverse, parked and in-flight requests answered first).
 *
 * main.c only reads the configuration and drives these three calls.
 */
#ifndef REGISTRYD_SERVER_H
#define REGISTRYD_SERVER_H

#include "common.h"

#include <stddef.h>

struct conf;
struct server;

/*
 * Start a server for conf (borrowed; it must outlive the server, and a
 * SIGHUP reload updates its live settings). argc/argv are kept for the
 * reload. Returns 0, or REG_E* after logging why; *out is set either way
 * and server_stop(*out) releases what was started.
 */
int server_start(struct conf *conf, int argc, char **argv, struct server **out) REG_MUSTCHECK;
/* Serve until SIGTERM/SIGINT (after leaving the cluster when asked). 0, or
 * REG_EIO if the loop failed. */
int server_run(struct server *s) REG_MUSTCHECK;
/* Stop and free everything, in reverse order of start. NULL is a no-op. */
void server_stop(struct server *s);

/* What --check-config adds to the settings' own checks: the TLS files
 * parse and the key matches the certificate. 0 or REG_ECONFIG with err. */
int server_check_files(const struct conf *conf, char *err, size_t errlen) REG_MUSTCHECK;

#endif
