/*
 * recovery.c — see recovery.h.
 */
#include "recovery.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster.h"
#include "cluster_files.h"
#include "command.h"
#include "duration.h"
#include "log.h"
#include "registry/error.h"
#include "store.h"

#define RECOVERY_APPLY_TIMEOUT_MS 60000

struct recovery {
    bool recover;
    char prev[4200]; /* the kept store file */
    char raft[4200];
    uint64_t index; /* what the kept file had reached */
    uint64_t instances;
};

static const char how[] =
    "Starting would lose acknowledged data. Restore a backup (README, Backups), or start "
    "once with --recover-from-store to rebuild the raft state from the store";

int recovery_before(const char *data_dir, bool recover, struct recovery **out, char *err,
                    size_t errlen)
{
    struct recovery *r = calloc(1, sizeof(*r));
    char cur[4200];
    uint64_t ci = 0, cn = 0, pi = 0, pn = 0;
    if (r == NULL)
        return REG_ENOMEM;
    r->recover = recover;
    snprintf(r->prev, sizeof(r->prev), "%s/store/data.mdb.prev", data_dir);
    snprintf(r->raft, sizeof(r->raft), "%s/raft", data_dir);
    snprintf(cur, sizeof(cur), "%s/store/data.mdb", data_dir);
    int crc = store_peek(cur, &ci, &cn, NULL, NULL);
    int prc = store_peek(r->prev, &pi, &pn, NULL, NULL);
    /* Keep whichever is further along: a refused start leaves a rebuilt,
     * shorter data.mdb next to the kept one. */
    if (crc == 0 && (prc != 0 || ci >= pi)) {
        if (rename(cur, r->prev) != 0) {
            snprintf(err, errlen, "cannot keep %s aside as %s: %s", cur, r->prev, strerror(errno));
            free(r);
            return REG_ECONFIG;
        }
        pi = ci;
        pn = cn;
        prc = 0;
    }
    if (prc == 0) {
        r->index = pi;
        r->instances = pn;
    }
    if (!cluster_has_state(r->raft) && r->index > 0 && !recover) {
        snprintf(err, errlen,
                 "the raft state in %s is missing while the store holds %llu instance(s) at "
                 "index %llu. %s",
                 r->raft, (unsigned long long)r->instances, (unsigned long long)r->index, how);
        free(r);
        return REG_ECONFIG;
    }
    *out = r;
    return 0;
}

static void restored(void *arg, int status)
{
    *(int *)arg = status == 0 ? 1 : -1;
}

int recovery_after(struct recovery *r, struct store *store, struct cluster *c,
                   struct event_base *base, char *err, size_t errlen)
{
    struct store_read *rd;
    uint64_t now = 0;
    if (store_read_begin(store, &rd) == 0) {
        now = store_index(rd);
        store_read_end(rd);
    }
    if (now < r->index && !r->recover) {
        snprintf(err, errlen,
                 "the raft state in %s ends at index %llu but the store had reached %llu "
                 "(raft log segments or snapshots are missing). %s",
                 r->raft, (unsigned long long)now, (unsigned long long)r->index, how);
        return REG_ECONFIG;
    }
    if (now < r->index) {
        void *snap = NULL, *buf = NULL;
        size_t len = 0, blen = 0;
        uint64_t pi, pn;
        int done = 0;
        if (store_peek(r->prev, &pi, &pn, &snap, &len) != 0) {
            snprintf(err, errlen, "cannot read %s to recover from", r->prev);
            return REG_ECONFIG;
        }
        int rc = cmd_restore_raw_encode(snap, len, cluster_alloc, &buf, &blen);
        free(snap);
        if (rc != 0) {
            snprintf(err, errlen, "out of memory recovering from %s", r->prev);
            return REG_ECONFIG;
        }
        log_warn("recovery",
                 "msg=\"rebuilding the raft state from the store\" file=%s index=%llu "
                 "instances=%llu raft_index=%llu",
                 r->prev, (unsigned long long)pi, (unsigned long long)pn, (unsigned long long)now);
        cluster_submit(c, buf, blen, restored, &done);
        uint64_t deadline = mono_ms() + RECOVERY_APPLY_TIMEOUT_MS;
        while (done == 0 && mono_ms() < deadline) {
            struct timeval tick = {0, 100000};
            event_base_loopexit(base, &tick);
            event_base_loop(base, 0);
        }
        if (done != 1) {
            snprintf(err, errlen, "recovering from %s failed (the restore was not applied)",
                     r->prev);
            return REG_ECONFIG;
        }
    }
    if (unlink(r->prev) != 0 && errno != ENOENT)
        log_warn("recovery", "msg=\"cannot remove the kept store file\" file=%s error=\"%s\"",
                 r->prev, strerror(errno));
    return 0;
}

void recovery_free(struct recovery *r)
{
    free(r);
}
