/*
 * cluster_files.h — a look at the raft directory before libraft reads it.
 *
 * libraft 0.15 does not survive every kind of damage: a snapshot file cut
 * short makes LZ4F_decompress spin for ever at start-up (no error, no
 * SIGTERM). So the snapshot files are checked here first: an LZ4 frame must
 * be whole (every block inside the file, an end mark, the content checksum
 * if announced), a plain one must be one of our snapshots from header to end
 * marker (snapshot.h). Damage is an error that names the file and what to
 * do; it is never a hang.
 */
#ifndef REGISTRYD_CLUSTER_FILES_H
#define REGISTRYD_CLUSTER_FILES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Check every snapshot file in raft_dir. Returns 0, or REG_ERAFT with a
 * message naming the file in err. */
int cluster_check_files(const char *raft_dir, char *err, size_t errlen);

/* A hash of the names, sizes and modification times of the files in
 * raft_dir: equal fingerprints mean no file was added, removed or written
 * in between (store.h: restart without a rebuild). 0 if unreadable/empty. */
uint64_t cluster_files_fingerprint(const char *raft_dir);

/*
 * A kept store (store.h) needs nothing from raft's newest snapshot, but
 * libraft 0.15 reads it whole at start (1.3 s for the 560 MB of a million
 * instances) and has no way to skip it. So for raft_start only, the newest
 * snapshot's data file, when it is of an index the kept store has applied,
 * is moved aside (HELD_PREFIX + its name) and a stub of a few bytes takes
 * its name; right after raft_start the real file is moved back over the
 * stub (a rename: same inode, size and time, so the fingerprint above is
 * unchanged). libraft's loop has not run by then, so it never sends the
 * stub to a follower. A crash in between leaves both: cluster_files_heal
 * (run before anything reads the directory) moves the real file back.
 */
#define CLUSTER_HELD_PREFIX "held-"
#define CLUSTER_STUB_MAGIC "RGSTUB01" /* the stub: magic, index (8 bytes BE) */
#define CLUSTER_STUB_LEN 16

struct cluster_held {
    char data[4352]; /* the snapshot data file's path; "" when nothing is held */
    char held[4352]; /* where it waits */
    uint64_t index;  /* its raft index */
    uint64_t bytes;  /* its size */
};

/* Hold the newest snapshot if its index is <= applied (else, or without a
 * snapshot, h->data is ""). h->bytes: what the snapshot holds (an LZ4
 * frame's content size). Returns 0; REG_EIO with err (nothing held, the
 * directory as it was); or REG_ERAFT with err (the real file could not be
 * put back after a failed stub: raft must not start). */
int cluster_files_hold(const char *raft_dir, uint64_t applied, struct cluster_held *h, char *err,
                       size_t errlen);
/* Put a held snapshot back. Returns 0, or REG_EIO with err (the stub may
 * still be in place: raft must not run). */
int cluster_files_release(struct cluster_held *h, char *err, size_t errlen);
/* Put back what a crash left held. Returns 0, or REG_EIO with err. */
int cluster_files_heal(const char *raft_dir, char *err, size_t errlen);
/* Whether buf is a stub (len bytes); *index: the index it stands for. */
bool cluster_files_is_stub(const void *buf, size_t len, uint64_t *index);

/* Whether raft_dir holds any raft state (metadata1 or metadata2). */
bool cluster_has_state(const char *raft_dir);

#endif
