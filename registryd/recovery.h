/*
 * recovery.h — start-up must not silently lose data the store still has.
 *
 * The store is rebuilt from the raft state at every start, so missing raft
 * state (a deleted raft directory, deleted segments or snapshots) would start
 * a server with less than it acknowledged. Before the store is opened, the
 * previous run's store file is kept aside (store/data.mdb.prev) and its index
 * noted; once raft has replayed its log, the new store must have reached that
 * index. If not, registryd refuses to start and says how to recover: restore
 * a backup, or start once with --recover-from-store, which rebuilds the raft
 * state from the kept store file (a restore through raft, so it is durable).
 * The kept file goes away only after a start that reached its index.
 *
 * Single servers only: a cluster member's raft state is repaired by its
 * leader.
 */
#ifndef REGISTRYD_RECOVERY_H
#define REGISTRYD_RECOVERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cluster;
struct event_base;
struct store;
struct recovery;

/* Before store_open: keep the previous store file aside and note its
 * index. recover: --recover-from-store. Refuses (REG_ECONFIG with err) when
 * the raft state is missing altogether while the store holds data. */
int recovery_before(const char *data_dir, bool recover, struct recovery **out, char *err,
                    size_t errlen);

/* After raft is ready (single server): compare, recover if asked (runs base
 * until the restore is applied, bounded), then drop the kept file.
 * Returns 0 or REG_ECONFIG with err. */
int recovery_after(struct recovery *r, struct store *store, struct cluster *c,
                   struct event_base *base, char *err, size_t errlen);

void recovery_free(struct recovery *r);

#endif
