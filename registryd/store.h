/*
 * store.h — the LMDB store: service instances, their checks, and the indexes
 * blocking queries compare against. The only code that writes LMDB.
 *
 * Records are JSON objects (Consul's field names) stored as compact text
 * (instances and checks packed: record.h):
 *   services   ID -> instance {ID, Service, Tags, Address, Port, Meta, Weights,
 *                  EnableTagOverride, Node, NodeAddress, CreateIndex, ModifyIndex}
 *   checks     CheckID -> {CheckID, Name, Status, Notes, Output, ServiceID,
 *                  ServiceName, Type, Definition, Node, CreateIndex, ModifyIndex}
 *   by_name    service name -> instance IDs (dupsort)
 *   svc_checks instance ID -> check IDs (dupsort)
 *   names      service name -> u64 index of its last change
 *   by_state   check Status -> check IDs (dupsort)           } derived: kept by
 *   name_tags  name "\0" tag -> instance ID "\0" position   } every write, not in
 *              (dupsort; see store.c, "derived indexes")    } snapshots, rebuilt
 *   node_insts node -> instance IDs (dupsort)                } by a restore
 *   name_summary name -> its tags as JSON text (the listing) }
 *   meta       "index" -> u64 store index (bumped by every command that changes
 *              something; it is the X-Consul-Index clients see);
 *              "acl:token:<AccessorID>", "acl:policy:<ID>" -> ACL records
 *              (acl.h), "acl:bootstrap" -> {"Index"} once bootstrapped
 *
 * Threads: store_apply/store_restore/store_snapshot run on the raft thread
 * only (one writer). Readers on any thread use store_read_begin/end (MVCC
 * read transactions; never wait for the writer).
 *
 * Durability lives in the Raft log: LMDB runs without fsync. After a crash
 * the store is rebuilt from the latest Raft snapshot plus log replay (so
 * store_open starts from an empty file); after a clean stop on the same
 * boot, with the raft files as they were, it is kept (store_mark_clean).
 */
#ifndef REGISTRYD_STORE_H
#define REGISTRYD_STORE_H

#include "common.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STORE_NAME_MAX 256 /* longest service name / id / check id, bytes */
/* A check's owner (store_check_owner): an instance ID, or this prefix and a
 * node name; at most STORE_OWNER_MAX bytes with its NUL. */
#define STORE_NODE_OWNER "_node:"
#define STORE_NODE_OWNER_LEN (sizeof(STORE_NODE_OWNER) - 1)
#define STORE_OWNER_MAX (STORE_NAME_MAX + 16)

struct store;
struct store_read;

/* What a command changed: the new store index and the service names whose
 * results changed (at most two: a re-registration may move an ID from one
 * name to another). n == 0: nothing changed. service_id names the one
 * instance every command is about (for the checker). */
struct store_change {
    uint64_t index;
    int n;
    char names[2][STORE_NAME_MAX + 1];
    /* the instance the command touched, or "_node:NODE" for a node-level
     * check's (the owner its checks are filed under) */
    char service_id[STORE_OWNER_MAX];
    bool many; /* a node-level change: more services changed than names holds */
    bool services; /* the service names or their tags, or an instance, changed
                    * (store_catalog_services_index) */
};

/* Open the store in dir. The previous file is kept when its last stop
 * was clean (store_mark_clean) with this same raft_fingerprint (see
 * cluster_files_fingerprint) and the machine has not rebooted since; else
 * (and always when raft_fingerprint is 0) it starts empty. Returns 0 or
 * REG_ESTORE with a message in err. */
int store_open(const char *dir, uint64_t raft_fingerprint, struct store **out, char *err,
               size_t errlen) REG_MUSTCHECK;
/* The raft index the kept store had applied at its clean stop (raft must
 * not apply entries up to it again), or 0 when the store was rebuilt. */
uint64_t store_reused_applied(const struct store *s);
/* Whether store_open(dir of file, fingerprint) would keep file (read only;
 * for the start-up decision before the store is opened). */
bool store_restart_possible(const char *file, uint64_t fingerprint);
/* At a clean stop, after raft has closed: the store holds everything raft
 * applied up to `applied`, and the raft files have `fingerprint`. */
int store_mark_clean(struct store *s, uint64_t applied, uint64_t fingerprint) REG_MUSTCHECK;
void store_free(struct store *s);

/* Disk space (see store.c): keep the data file allocated ahead of LMDB's
 * use, plus `extra` bytes, and look at the file system's free space.
 * Raft thread. Returns 0 or REG_ENOSPACE; store_space_ok (any thread) says
 * whether writes may be proposed. */
int store_reserve(struct store *s, uint64_t extra);
bool store_space_ok(struct store *s);

/* What an existing store file (a previous run's data.mdb) holds, without
 * changing it: its index, how many instances, and (snap != NULL) a
 * snapshot of it (malloc'd, the caller frees). Returns 0, REG_ENOTFOUND (no
 * such file or an empty one) or REG_ESTORE. */
int store_peek(const char *file, uint64_t *index, uint64_t *instances, void **snap, size_t *len);

/*
 * Apply one encoded command (command.h). Returns the command's own outcome:
 * 0, REG_ENOTFOUND (unknown service/check id), REG_EINVAL (undecodable), or
 * REG_ESTORE (LMDB failure; nothing was changed). chg is filled on success.
 */
int store_apply(struct store *s, const void *cmd, size_t len, struct store_change *chg)
    REG_MUSTCHECK;
/* The index of the first write to an empty store (an empty one reads as 1). */
#define STORE_FIRST_INDEX 2u

/* Dump every record into one malloc'd buffer (caller frees). */
int store_snapshot(struct store *s, void **buf, size_t *len) REG_MUSTCHECK;
/* The same into a buffer the caller keeps between snapshots: *buf (NULL or
 * malloc'd) of *cap bytes is reused and grown with realloc, and stays the
 * caller's, also on failure. A warm buffer spares the page faults of fresh
 * memory, most of the cost of a large snapshot on a virtual machine. */
int store_snapshot_into(struct store *s, void **buf, size_t *cap, size_t *len) REG_MUSTCHECK;
/* Raft's snapshot in two steps, so that its read is held only for a copy of
 * the stored bytes (an open read keeps every page a write frees from reuse,
 * and at a million instances the store file grew by a gigabyte while a
 * snapshot was made from the read). store_snapshot_copy: what the read
 * handle r sees, as stored, into *buf as store_snapshot_into does; r may
 * end when it returns (r's thread; a read handle may move between threads:
 * the environment is MDB_NOTLS). store_snapshot_finish, on any thread and
 * without the store: that copy made the snapshot, in place (grown with
 * realloc; *buf stays the caller's, also on failure, when what it holds
 * is undefined). Returns 0, REG_ENOMEM or REG_ESTORE. */
int store_snapshot_copy(struct store_read *r, void **buf, size_t *cap, size_t *len)
    REG_MUSTCHECK;
int store_snapshot_finish(void **buf, size_t *cap, size_t *len) REG_MUSTCHECK;
/* Take the store's map out of this process's page tables (see store.c);
 * any thread, no read needed. Raft calls it after a snapshot's copy. */
void store_release_map(struct store *s);
/* The same bytes piece by piece, from one read transaction, never all in
 * memory (GET /v1/snapshot streams them). The thread that begins a stream
 * owns it. read copies the next bytes, up to cap, into buf; *len == 0 is
 * the end. Returns 0 or REG_ESTORE / REG_ENOMEM. */
struct store_snap_stream;
int store_snap_stream_begin(struct store *s, struct store_snap_stream **out) REG_MUSTCHECK;
int store_snap_stream_read(struct store_snap_stream *st, void *buf, size_t cap, size_t *len)
    REG_MUSTCHECK;
void store_snap_stream_end(struct store_snap_stream *st);
/* Replace the whole content with a snapshot made by store_snapshot. */
int store_restore(struct store *s, const void *buf, size_t len) REG_MUSTCHECK;

/* Read side. A read handle is owned by the thread that began it. */
int store_read_begin(struct store *s, struct store_read **out) REG_MUSTCHECK;
void store_read_end(struct store_read *r);
/* For a thread that reads again and again (the DNS workers): reset releases
 * the handle's snapshot but keeps it (and its LMDB reader slot); renew
 * reads the store as it is now. No allocation or lock per read. A reset
 * handle is still ended with store_read_end. renew: 0 or REG_ESTORE. */
void store_read_reset(struct store_read *r);
int store_read_renew(struct store_read *r) REG_MUSTCHECK;

uint64_t store_index(struct store_read *r);
/* Index of the last change to the set of service names or their tags (what
 * /v1/catalog/services lists; Consul's services table index). */
uint64_t store_services_index(struct store_read *r);
/* What /v1/catalog/services answers as its index, as Consul's services
 * table: the last change to the names or their tags, or to any instance
 * (registered, updated or removed; not a check's status). */
uint64_t store_catalog_services_index(struct store_read *r);
/* Index of the last change to the set of node names (store_each_node_name). */
uint64_t store_nodes_index(struct store_read *r);
/* Index of the last change to `name` (0 if it never existed). */
uint64_t store_name_index(struct store_read *r, const char *name);

/* *out is a new reference; REG_ENOTFOUND if absent. */
int store_get_instance(struct store_read *r, const char *id, json_t **out);
int store_get_check(struct store_read *r, const char *id, json_t **out);

/* Callbacks get a borrowed object and return 0 to go on, non-zero to stop
 * (that value is returned). name == NULL: every instance. */
typedef int (*store_json_cb)(json_t *obj, void *arg);
int store_each_instance(struct store_read *r, const char *name, store_json_cb cb, void *arg);
int store_each_check(struct store_read *r, store_json_cb cb, void *arg);
/* The IDs of name's instances, from the by-name index alone (no record is
 * read): for walks that need only the IDs. Same return convention. */
typedef int (*store_id_cb)(const char *id, void *arg);
int store_each_instance_id(struct store_read *r, const char *name, store_id_cb cb, void *arg);
/* The checks whose Status is state ("passing", "warning", "critical"), by
 * CheckID: what store_each_check would give that is in state, at the cost
 * of those alone. */
int store_each_check_state(struct store_read *r, const char *state, store_json_cb cb, void *arg);
/* The node-level checks (ServiceID "") of node, by CheckID: what
 * store_each_check gives for that node, at the cost of those alone. */
int store_each_node_check(struct store_read *r, const char *node, store_json_cb cb, void *arg);
/* The checks of one instance as a new JSON array (sorted by CheckID), then
 * the checks of its node (node-level checks: ServiceID ""). */
int store_instance_checks(struct store_read *r, const char *service_id, json_t **out);
/* False only when store_instance_checks would list nothing for the
 * instance: it has no checks of its own and no node has any (asked without
 * decoding a record; true when unsure). */
bool store_instance_may_have_checks(struct store_read *r, const char *service_id);
/* What a check is filed under (its owner): its ServiceID, or for a
 * node-level check STORE_NODE_OWNER followed by its Node. store_change's
 * service_id names owners; store_owner_checks lists an owner's checks. */
void store_check_owner(json_t *check, char out[STORE_OWNER_MAX]);
/* Whether an owner key p[0..n) is a node's (STORE_NODE_OWNER and a name). */
bool store_is_node_owner(const void *p, size_t n);
/* The checks filed under owner, as a new JSON array sorted by CheckID. */
int store_owner_checks(struct store_read *r, const char *owner, json_t **out);
/* The record of the server whose raft address is raft_addr ({ID, Raft,
 * HTTP}, a new reference); REG_ENOTFOUND if it never announced itself. */
int store_get_server(struct store_read *r, const char *raft_addr, json_t **out);
/* Every server record (checked, as store_get_server's), by raft address;
 * a nonzero return of cb stops the walk and is returned. */
int store_each_server(struct store_read *r, store_json_cb cb, void *arg);

/* Nodes registered through the catalog (CMD_NODE): records {Node,
 * NodeAddress, NodeMeta, TaggedAddresses}, borrowed by cb. */
int store_each_node(struct store_read *r, store_json_cb cb, void *arg);
/* The same, decoding only the records whose stored JSON text pre accepts
 * (a cheap look at the bytes; it may accept more than cb wants, never
 * fewer). */
int store_each_node_pre(struct store_read *r, bool (*pre)(const char *text, size_t len, void *arg),
                        store_json_cb cb, void *arg);
/* The node record named exactly name: a new reference, or REG_ENOTFOUND. */
int store_get_node(struct store_read *r, const char *name, json_t **out);
/* The node record named name without regard to case (DNS names): the name
 * as given first (one lookup), else a walk of the node keys alone, decoding
 * the match only. A new reference, or REG_ENOTFOUND. */
int store_find_node(struct store_read *r, const char *name, json_t **out);
/* Every node some instance is registered on (by name), with the instance
 * of the smallest ID there (the one a walk of every instance by ID meets
 * first), borrowed by cb. Reads one instance per node. */
int store_each_node_instance(struct store_read *r, store_json_cb cb, void *arg);
/* The instances registered on node, by ID (what store_each_instance(NULL)
 * gives whose Node is node), at the cost of those alone. */
int store_each_instance_on(struct store_read *r, const char *node, store_json_cb cb, void *arg);
/* The instances whose Address or NodeAddress is the IP address addr (text,
 * compared as an address: "fd00::7" is "fd00:0::7"), by ID, each once; at
 * the cost of those alone. Nothing for a text that is not an IP address. */
int store_each_instance_at(struct store_read *r, const char *addr, store_json_cb cb, void *arg);

/* ACL records (acl.h says their shape): kind is "token" or "policy".
 * *out is a new reference; REG_ENOTFOUND if absent. */
int store_acl_get(struct store_read *r, const char *kind, const char *id, json_t **out);
int store_acl_each(struct store_read *r, const char *kind, store_json_cb cb, void *arg);
/* Whether ACLs were bootstrapped (PUT /v1/acl/bootstrap); *index (may be
 * NULL): the raft index of that bootstrap, Consul's "reset index" (0 if
 * its record cannot be read). */
bool store_acl_bootstrapped(struct store_read *r, uint64_t *index);

/* How many instances and checks are stored, and the bytes LMDB uses. */
int store_stats(struct store *s, uint64_t *instances, uint64_t *checks, uint64_t *bytes);
/* Entries of the derived indexes (for tests: one per check in by_state,
 * one per instance and distinct tag in name_tags, one per instance with a
 * node in node_insts, one per name with instances in summaries, one per
 * instance and IP address of its in addr_insts). */
int store_derived_entries(struct store *s, uint64_t *by_state, uint64_t *name_tags,
                          uint64_t *node_insts, uint64_t *summaries, uint64_t *addr_insts);

/* Every service name that currently has at least one instance. */
typedef int (*store_name_cb)(const char *name, void *arg);
int store_each_name(struct store_read *r, store_name_cb cb, void *arg);
/* Every node name: the nodes instances are on, then those registered
 * through the catalog (a name may come twice); keys only, nothing decoded. */
int store_each_node_name(struct store_read *r, store_name_cb cb, void *arg);
/* Every node that has node-level checks, by name. */
int store_each_check_node(struct store_read *r, store_name_cb cb, void *arg);

/* Every service name (store_each_name's order) with the distinct tags of
 * its instances, in the order of their first appearance walking the name's
 * instances by ID (store_each_instance) and each one's Tags in order: GET
 * /v1/catalog/services. Reads one index entry per (name, tag), not the
 * instances. The tags are borrowed for the call: n of them, each len bytes
 * at p (not NUL-terminated). cb returns non-zero to stop (returned).
 * Returns 0, REG_ENOMEM or REG_ESTORE. */
struct store_str {
    const char *p;
    size_t len;
};
typedef int (*store_name_tags_cb)(const char *name, const struct store_str *tags, size_t n,
                                  void *arg);
int store_each_name_tags(struct store_read *r, store_name_tags_cb cb, void *arg);
/* The same as text, from one record per name kept by every write: for
 * every name (store_each_name's order) the JSON array that json_dumps
 * (JSON_COMPACT) makes of its tags, len bytes at json, borrowed for the
 * call. Returns 0, REG_ENOMEM or REG_ESTORE, or what cb returned. */
typedef int (*store_name_json_cb)(const char *name, const char *json, size_t len, void *arg);
int store_each_name_summary(struct store_read *r, store_name_json_cb cb, void *arg);

/* ---- raw records, for renders that reuse per-record encodings ----------
 * The bytes are LMDB's own (borrowed: valid until store_read_end; a read
 * transaction never sees them change), packed (record.h): to be compared or
 * decoded (record_decode), never parsed as they are. They were checked when
 * written, but a renderer must still decode them before first using them:
 * only the text it rendered from a decoded record may be reused for the
 * same bytes. */
enum store_iter_kind {
    STORE_ITER_INSTANCES, /* every instance, by ID (store_each_instance(NULL)) */
    STORE_ITER_NAME,      /* one name's instances, by ID */
    STORE_ITER_CHECKS,    /* every check, by CheckID (store_each_check) */
    STORE_ITER_STATE,     /* the checks whose Status is name, by CheckID */
};
struct store_iter;
/* A cursor that lives as long as rd and may be resumed across event loop
 * turns. name: the service name for STORE_ITER_NAME, the status for
 * STORE_ITER_STATE (copied). Returns 0 or
 * REG_ENOMEM / REG_ESTORE. */
int store_iter_begin(struct store_read *rd, enum store_iter_kind kind, const char *name,
                     struct store_iter **out) REG_MUSTCHECK;
/* The next record: its key (ID) and value. Returns 0, REG_ENOTFOUND at the
 * end, or REG_ESTORE. Entries whose record is missing are skipped. */
int store_iter_next(struct store_iter *it, const char **key, size_t *klen, const void **val,
                    size_t *vlen) REG_MUSTCHECK;
void store_iter_end(struct store_iter *it);
/* A walk that waits (a stream whose client reads slowly) parks: where it
 * is is kept and its read, shared with whatever else uses rd, is reset,
 * because an open read keeps LMDB from reusing any page a write frees
 * (the store file grows with every write while it waits). Unpark renews
 * the read and goes on from the first entry after the last one returned,
 * in what the store holds now; *moved says whether that is another view
 * than the one parked from (a write came in between). Both return 0 or
 * REG_ESTORE (the read is reset all the same); rd must not be used between
 * them, and no value returned before parking stays valid. */
int store_iter_park(struct store_iter *it) REG_MUSTCHECK;
bool store_iter_parked(const struct store_iter *it);
int store_iter_unpark(struct store_iter *it, bool *moved) REG_MUSTCHECK;
/* One instance's (checks == false) or check's record. 0, REG_ENOTFOUND or
 * REG_ESTORE. */
int store_get_raw(struct store_read *rd, bool checks, const char *id, size_t idlen,
                  const void **val, size_t *vlen) REG_MUSTCHECK;
/* The raw check records store_instance_checks lists for an instance: its
 * own (id given, node NULL) or its node's (node given, id NULL), in that
 * function's order. cb returns non-zero to stop (returned). */
typedef int (*store_raw_cb)(const char *key, size_t klen, const void *val, size_t vlen,
                            void *arg);
int store_owner_checks_raw(struct store_read *rd, const char *id, const char *node,
                           store_raw_cb cb, void *arg);

#endif
