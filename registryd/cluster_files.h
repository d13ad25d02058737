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

/* Whether raft_dir holds any raft state (metadata1 or metadata2). */
bool cluster_has_state(const char *raft_dir);

#endif
