/*
 * formation.h — how a server becomes part of a cluster, on a thread of its
 * own while the front end already serves: with --bootstrap-expect N it asks
 * the --join servers who they are (GET /v1/internal/raft/self) until N
 * servers are known and every one bootstraps the same configuration; with
 * --join alone it starts raft empty and asks a member to add it
 * (PUT /v1/internal/raft/join, forwarded to the leader); a server that has
 * raft state already just restarts with it.
 */
#ifndef REGISTRYD_FORMATION_H
#define REGISTRYD_FORMATION_H

struct cluster;
struct formation;

struct formation_options {
    struct cluster *cluster;
    const char *http_addr;     /* ours, told to the others */
    const char *self_http;     /* where we reach our own front end (loopback if wildcard) */
    unsigned bootstrap_expect; /* > 1: form a new cluster of that many */
    const char *join;          /* HTTP addresses, comma-separated */
};

int formation_start(const struct formation_options *opt, struct formation **out, char *err,
                    size_t errlen);
/* Stop (abandoning what is not done) and free. NULL is a no-op. */
void formation_free(struct formation *f);

#endif
