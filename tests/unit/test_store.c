/* Unit tests for store.c: the apply path, indexes, snapshots. Real LMDB in a
 * temporary directory. */
#define _GNU_SOURCE /* memmem */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <lmdb.h>

#include "command.h"
#include "record.h"
#include "registry/error.h"
#include "snapshot.h"
#include "store.h"

struct fixture {
    char dir[64];
    struct store *s;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char err[256];
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_store.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    assert_int_equal(store_open(f->dir, 0, &f->s, err, sizeof(err)), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char path[128];
    store_free(f->s);
    snprintf(path, sizeof(path), "%s/data.mdb", f->dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/lock.mdb", f->dir);
    unlink(path);
    rmdir(f->dir);
    free(f);
    return 0;
}

static int apply(struct store *s, enum cmd_op op, json_t *args, struct store_change *chg)
{
    struct command cmd = {op, args};
    void *buf;
    size_t len;
    assert_int_equal(cmd_encode(&cmd, malloc, &buf, &len), 0);
    int rc = store_apply(s, buf, len, chg);
    free(buf);
    cmd_fini(&cmd);
    return rc;
}

static json_t *reg_args(const char *id, const char *name, const char *check_id)
{
    json_t *checks = json_array();
    if (check_id)
        json_array_append_new(
            checks, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:{s:s}}", "CheckID",
                              check_id, "Name", "ttl check", "Status", "critical", "Notes", "",
                              "Output", "", "ServiceID", id, "ServiceName", name, "Type", "ttl",
                              "Definition", "TTL", "10s"));
    /* the full record, as the HTTP layer builds it (record.h's schema) */
    return json_pack("{s:{s:s, s:s, s:[], s:s, s:i, s:{}, s:{s:i, s:i}, s:b}, s:o}", "Service",
                     "ID", id, "Service", name, "Tags", "Address", "", "Port", 80, "Meta",
                     "Weights", "Passing", 1, "Warning", 1, "EnableTagOverride", 0, "Checks",
                     checks);
}

static int count_cb(json_t *obj, void *arg)
{
    (void)obj;
    (*(int *)arg)++;
    return 0;
}

static int count_instances(struct store *s, const char *name)
{
    struct store_read *r;
    int n = 0;
    assert_int_equal(store_read_begin(s, &r), 0);
    assert_int_equal(store_each_instance(r, name, count_cb, &n), 0);
    store_read_end(r);
    return n;
}

static void test_register_and_indexes(void **state)
{
    struct fixture *f = *state;
    struct store_change chg;
    assert_int_equal(apply(f->s, CMD_REGISTER, reg_args("web-1", "web", "service:web-1"), &chg),
                     0);
    /* the first write is 2: an empty store reads as 1 (X-Consul-Index) */
    assert_int_equal(chg.index, STORE_FIRST_INDEX);
    assert_int_equal(chg.n, 1);
    assert_string_equal(chg.names[0], "web");
    assert_int_equal(apply(f->s, CMD_REGISTER, reg_args("db-1", "db", NULL), &chg), 0);
    assert_int_equal(chg.index, 3);

    struct store_read *r;
    assert_int_equal(store_read_begin(f->s, &r), 0);
    assert_int_equal(store_index(r), 3);
    assert_int_equal(store_name_index(r, "web"), 2);
    assert_int_equal(store_name_index(r, "db"), 3);
    assert_int_equal(store_services_index(r), 3); /* db's name came */
    json_t *inst;
    assert_int_equal(store_get_instance(r, "web-1", &inst), 0);
    assert_int_equal(json_integer_value(json_object_get(inst, "CreateIndex")), 2);
    json_decref(inst);
    json_t *checks;
    assert_int_equal(store_instance_checks(r, "web-1", &checks), 0);
    assert_int_equal(json_array_size(checks), 1);
    json_decref(checks);
    store_read_end(r);
    assert_int_equal(count_instances(f->s, "web"), 1);
    assert_int_equal(count_instances(f->s, NULL), 2);
}

/* The checker's shortcut: an instance without checks (its own or any
 * node's) is known as such without decoding a record. */
static bool may_have_checks(struct store *s, const char *id)
{
    struct store_read *r;
    assert_int_equal(store_read_begin(s, &r), 0);
    bool may = store_instance_may_have_checks(r, id);
    store_read_end(r);
    return may;
}

static void test_instance_may_have_checks(void **state)
{
    struct fixture *f = *state;
    struct store_change chg;
    assert_int_equal(apply(f->s, CMD_REGISTER, reg_args("web-1", "web", "service:web-1"), &chg),
                     0);
    assert_int_equal(apply(f->s, CMD_REGISTER, reg_args("db-1", "db", NULL), &chg), 0);
    assert_true(may_have_checks(f->s, "web-1"));
    assert_false(may_have_checks(f->s, "db-1"));
    assert_false(may_have_checks(f->s, "nosuch"));
    /* a check registered later, then the instance again without it */
    assert_int_equal(apply(f->s, CMD_REGISTER, reg_args("db-1", "db", "service:db-1"), &chg), 0);
    assert_true(may_have_checks(f->s, "db-1"));
    assert_int_equal(apply(f->s, CMD_REGISTER, reg_args("db-1", "db", NULL), &chg), 0);
    assert_false(may_have_checks(f->s, "db-1"));
    /* a node's check counts for the instances on it (any node: unsure) */
    json_t *nc = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:{}}", "CheckID", "n1-alive",
                           "Name", "alive", "Status", "critical", "Notes", "", "Output", "",
                           "ServiceID", "", "ServiceName", "", "Type", "", "Definition");
    assert_int_equal(apply(f->s, CMD_NODE, json_pack("{s:s, s:[o], s:b}", "Node", "n1", "Put", nc,
                                                     "SetStatus", 1),
                           &chg),
                     0);
    assert_true(may_have_checks(f->s, "db-1"));
    assert_int_equal(
        apply(f->s, CMD_NODE, json_pack("{s:s, s:[s]}", "Node", "n1", "Delete", "n1-alive"), &chg),
        0);
    assert_false(may_have_checks(f->s, "db-1"));
}

/* A reset handle, renewed, reads the store as it is then (the DNS workers
 * keep one per thread). */
static void test_read_reset_renew(void **state)
{
    struct fixture *f = *state;
    struct store_change chg;
    struct store_read *r;
    assert_int_equal(store_read_begin(f->s, &r), 0);
    assert_int_equal(store_index(r), 0);
    store_read_reset(r);
    assert_int_equal(apply(f->s, CMD_REGISTER, reg_args("web-1", "web", NULL), &chg), 0);
    assert_int_equal(store_read_renew(r), 0);
    assert_int_equal(store_index(r), chg.index);
    assert_int_not_equal(store_name_index(r, "web"), 0);
    store_read_reset(r);
    store_read_end(r); /* ends a reset handle too */
}

static void test_check_update_only_on_change(void **state)
{
    struct fixture *f = *state;
    struct store_change chg;
    assert_int_equal(apply(f->s, CMD_REGISTER, reg_args("web-1", "web", "service:web-1"), &chg),
                     0);
    json_t *pass = json_pack("{s:s, s:s, s:s}", "CheckID", "service:web-1", "Status", "passing",
                             "Output", "ok");
    assert_int_equal(apply(f->s, CMD_CHECK_UPDATE, json_deep_copy(pass), &chg), 0);
    assert_int_equal(chg.index, 3);
    /* The same heartbeat again changes nothing: no new index. */
    assert_int_equal(apply(f->s, CMD_CHECK_UPDATE, pass, &chg), 0);
    assert_int_equal(chg.n, 0);
    assert_int_equal(apply(f->s, CMD_CHECK_UPDATE,
                           json_pack("{s:s, s:s, s:s}", "CheckID", "nope", "Status", "passing",
                                     "Output", ""),
                           &chg),
                     REG_ENOTFOUND);
}

static void test_reregister_keeps_status_and_moves_name(void **state)
{
    struct fixture *f = *state;
    struct store_change chg;
    apply(f->s, CMD_REGISTER, reg_args("x-1", "old", "service:x-1"), &chg);
    apply(f->s, CMD_CHECK_UPDATE,
          json_pack("{s:s, s:s, s:s}", "CheckID", "service:x-1", "Status", "passing", "Output",
                    ""),
          &chg);
    assert_int_equal(apply(f->s, CMD_REGISTER, reg_args("x-1", "new", "service:x-1"), &chg), 0);
    assert_int_equal(chg.n, 2);
    assert_int_equal(count_instances(f->s, "old"), 0);
    assert_int_equal(count_instances(f->s, "new"), 1);
    struct store_read *r;
    json_t *check;
    assert_int_equal(store_read_begin(f->s, &r), 0);
    assert_int_equal(store_get_check(r, "service:x-1", &check), 0);
    assert_string_equal(json_string_value(json_object_get(check, "Status")), "passing");
    json_decref(check);
    store_read_end(r);
}

/* reg_args with the instance on node. */
static json_t *reg_on(const char *id, const char *name, const char *node, int port)
{
    json_t *args = reg_args(id, name, "service:x");
    json_t *svc = json_object_get(args, "Service");
    json_object_set_new(svc, "Node", json_string(node));
    json_object_set_new(svc, "Port", json_integer(port));
    json_object_set_new(json_array_get(json_object_get(args, "Checks"), 0), "CheckID",
                        json_sprintf("service:%s", id));
    json_object_set_new(json_array_get(json_object_get(args, "Checks"), 0), "ServiceID",
                        json_string(id));
    return args;
}

static uint64_t nodes_index(struct store *s)
{
    struct store_read *r;
    assert_int_equal(store_read_begin(s, &r), 0);
    uint64_t x = store_nodes_index(r);
    store_read_end(r);
    return x;
}

static int collect_name(const char *name, void *arg)
{
    json_array_append_new(arg, json_string(name));
    return 0;
}

/* The same registration again is no write (Consul's IsSame); the nodes
 * index moves when a node comes or goes, only then (DNS rebuilds its map of
 * node names on it). */
static void test_same_again_and_nodes_index(void **state)
{
    struct fixture *f = *state;
    struct store_change chg;
    assert_int_equal(apply(f->s, CMD_REGISTER, reg_on("web-1", "web", "n1", 80), &chg), 0);
    uint64_t first = chg.index;
    assert_int_equal(nodes_index(f->s), first); /* n1 came */
    assert_int_equal(apply(f->s, CMD_REGISTER, reg_on("web-1", "web", "n1", 80), &chg), 0);
    assert_int_equal(chg.n, 0); /* the same again: nothing */
    assert_int_equal(apply(f->s, CMD_REGISTER, reg_on("web-1", "web", "n1", 81), &chg), 0);
    assert_true(chg.n > 0 && chg.index == first + 1);
    assert_int_equal(apply(f->s, CMD_REGISTER, reg_on("web-2", "web", "n1", 80), &chg), 0);
    assert_int_equal(nodes_index(f->s), first); /* n1 already had one */
    json_t *node = json_pack("{s:s, s:{s:s, s:s, s:{}}}", "Node", "Ext", "Record", "Node", "Ext",
                             "NodeAddress", "10.0.0.9", "NodeMeta");
    assert_int_equal(apply(f->s, CMD_NODE, json_deep_copy(node), &chg), 0);
    uint64_t ext = chg.index;
    assert_int_equal(nodes_index(f->s), ext); /* a catalog node came */
    assert_int_equal(apply(f->s, CMD_NODE, node, &chg), 0);
    assert_int_equal(nodes_index(f->s), ext); /* the same node again */
    assert_int_equal(apply(f->s, CMD_DEREGISTER, json_pack("{s:s}", "ServiceID", "web-2"), &chg),
                     0);
    assert_int_equal(nodes_index(f->s), ext); /* n1 still has web-1 */
    void *snap;
    size_t len;
    assert_int_equal(store_snapshot(f->s, &snap, &len), 0); /* Ext and n1 */
    assert_int_equal(apply(f->s, CMD_DEREGISTER, json_pack("{s:s}", "ServiceID", "web-1"), &chg),
                     0);
    assert_int_equal(nodes_index(f->s), chg.index); /* n1 went */
    /* a raft snapshot brings n1 back: its index is the store's own, not
     * the one kept from before */
    assert_int_equal(store_restore(f->s, snap, len), 0);
    assert_int_not_equal(nodes_index(f->s), chg.index);
    free(snap);
    assert_int_equal(apply(f->s, CMD_DEREGISTER, json_pack("{s:s}", "ServiceID", "web-1"), &chg),
                     0);
    struct store_read *r;
    json_t *names = json_array();
    assert_int_equal(store_read_begin(f->s, &r), 0);
    assert_int_equal(store_each_node_name(r, collect_name, names), 0);
    store_read_end(r);
    assert_int_equal(json_array_size(names), 1);
    assert_string_equal(json_string_value(json_array_get(names, 0)), "Ext");
    json_decref(names);
}

/* A check registered on a stored instance (ChecksOnly) leaves the
 * instance as it is stored now: the copy the command carries may be older
 * (a registration applied in between kept its port). */
static void test_checks_only_leaves_the_instance(void **state)
{
    struct fixture *f = *state;
    struct store_change chg;
    assert_int_equal(apply(f->s, CMD_REGISTER, reg_on("db-1", "db", "n1", 80), &chg), 0);
    json_t *stale = reg_on("db-1", "db", "n1", 80); /* read before the port moved */
    assert_int_equal(apply(f->s, CMD_REGISTER, reg_on("db-1", "db", "n1", 81), &chg), 0);
    uint64_t modified = chg.index;
    json_t *check = json_array_get(json_object_get(stale, "Checks"), 0);
    json_object_set_new(check, "CheckID", json_string("db-extra"));
    json_object_set_new(stale, "ChecksOnly", json_true());
    assert_int_equal(apply(f->s, CMD_REGISTER, json_incref(stale), &chg), 0);
    assert_true(chg.n > 0);
    struct store_read *r;
    json_t *inst, *got;
    assert_int_equal(store_read_begin(f->s, &r), 0);
    assert_int_equal(store_get_instance(r, "db-1", &inst), 0);
    assert_int_equal(json_integer_value(json_object_get(inst, "Port")), 81);
    assert_int_equal(json_integer_value(json_object_get(inst, "ModifyIndex")), modified);
    assert_int_equal(store_get_check(r, "db-extra", &got), 0);
    assert_string_equal(json_string_value(json_object_get(got, "ServiceID")), "db-1");
    json_decref(got);
    json_decref(inst);
    store_read_end(r);
    /* the same again: nothing; on an instance that is not there: not found */
    assert_int_equal(apply(f->s, CMD_REGISTER, json_incref(stale), &chg), 0);
    assert_int_equal(chg.n, 0);
    assert_int_equal(apply(f->s, CMD_DEREGISTER, json_pack("{s:s}", "ServiceID", "db-1"), &chg),
                     0);
    assert_int_equal(apply(f->s, CMD_REGISTER, stale, &chg), REG_ENOTFOUND);
}

static void test_maintenance_and_deregister(void **state)
{
    struct fixture *f = *state;
    struct store_change chg;
    apply(f->s, CMD_REGISTER, reg_args("web-1", "web", NULL), &chg);
    assert_int_equal(apply(f->s, CMD_MAINTENANCE,
                           json_pack("{s:s, s:b, s:s}", "ServiceID", "web-1", "Enable", 1,
                                     "Reason", "upgrade"),
                           &chg),
                     0);
    struct store_read *r;
    json_t *check;
    assert_int_equal(store_read_begin(f->s, &r), 0);
    assert_int_equal(store_get_check(r, "_service_maintenance:web-1", &check), 0);
    assert_string_equal(json_string_value(json_object_get(check, "Status")), "critical");
    assert_string_equal(json_string_value(json_object_get(check, "Notes")), "upgrade");
    json_decref(check);
    store_read_end(r);

    assert_int_equal(apply(f->s, CMD_DEREGISTER, json_pack("{s:s}", "ServiceID", "web-1"), &chg),
                     0);
    assert_int_equal(count_instances(f->s, "web"), 0);
    assert_int_equal(store_read_begin(f->s, &r), 0);
    assert_int_equal(store_get_check(r, "_service_maintenance:web-1", &check), REG_ENOTFOUND);
    store_read_end(r);
    assert_int_equal(apply(f->s, CMD_DEREGISTER, json_pack("{s:s}", "ServiceID", "web-1"), &chg),
                     REG_ENOTFOUND);
}

static void test_snapshot_restore(void **state)
{
    struct fixture *f = *state;
    struct store_change chg;
    apply(f->s, CMD_REGISTER, reg_args("a", "svc", "service:a"), &chg);
    apply(f->s, CMD_REGISTER, reg_args("b", "svc", NULL), &chg);
    void *snap;
    size_t len;
    assert_int_equal(store_snapshot(f->s, &snap, &len), 0);
    apply(f->s, CMD_DEREGISTER, json_pack("{s:s}", "ServiceID", "a"), &chg);
    apply(f->s, CMD_REGISTER, reg_args("c", "other", NULL), &chg);
    assert_int_equal(store_restore(f->s, snap, len), 0);
    assert_int_equal(count_instances(f->s, "svc"), 2);
    assert_int_equal(count_instances(f->s, "other"), 0);
    struct store_read *r;
    assert_int_equal(store_read_begin(f->s, &r), 0);
    assert_int_equal(store_index(r), 3);
    /* the names' own index (kept past the register of "other") is the
     * store's again: a restore may change every name */
    assert_int_equal(store_services_index(r), store_index(r));
    store_read_end(r);
    /* A damaged snapshot is refused and leaves the store as it was. */
    ((char *)snap)[len - 3] ^= 0x7f;
    assert_int_equal(store_restore(f->s, snap, len - 7), REG_EINVAL);
    assert_int_equal(count_instances(f->s, "svc"), 2);
    assert_int_equal(store_restore(f->s, "garbage!", 8), REG_EINVAL);
    free(snap);
}

/* A snapshot into a reused buffer (raft keeps one warm) is the same bytes
 * as a fresh one, whether the buffer is too small (grown) or large enough. */
static void test_snapshot_into_reused_buffer(void **state)
{
    struct fixture *f = *state;
    struct store_change chg;
    apply(f->s, CMD_REGISTER, reg_args("a", "svc", "service:a"), &chg);
    void *fresh, *buf = malloc(16);
    size_t fresh_len, cap = 16, len;
    assert_non_null(buf);
    memset(buf, 0xee, 16);
    assert_int_equal(store_snapshot(f->s, &fresh, &fresh_len), 0);
    assert_int_equal(store_snapshot_into(f->s, &buf, &cap, &len), 0);
    assert_true(cap >= len);
    assert_int_equal(len, fresh_len);
    assert_memory_equal(buf, fresh, len);
    free(fresh);
    apply(f->s, CMD_REGISTER, reg_args("b", "svc", NULL), &chg);
    apply(f->s, CMD_DEREGISTER, json_pack("{s:s}", "ServiceID", "a"), &chg);
    void *before = buf;
    size_t before_cap = cap;
    assert_int_equal(store_snapshot(f->s, &fresh, &fresh_len), 0);
    assert_int_equal(store_snapshot_into(f->s, &buf, &cap, &len), 0);
    if (fresh_len <= before_cap) /* it fitted: the same memory was used */
        assert_ptr_equal(buf, before);
    assert_int_equal(len, fresh_len);
    assert_memory_equal(buf, fresh, len);
    assert_int_equal(store_restore(f->s, buf, len), 0);
    assert_int_equal(count_instances(f->s, "svc"), 1);
    free(fresh);
    free(buf);
}

/* Raft's snapshot in two steps: the read copies the records as stored
 * (packed, so less than the snapshot), writes after it are not in it, and
 * finishing it needs no read: the same bytes as store_snapshot's at the
 * copy. A damaged copy is refused and stays the caller's. */
static void test_snapshot_copy_then_finish(void **state)
{
    struct fixture *f = *state;
    struct store_change chg;
    for (int i = 0; i < 30; i++) {
        char id[16], cid[24];
        snprintf(id, sizeof(id), "c%d", i);
        snprintf(cid, sizeof(cid), "check:c%d", i);
        apply(f->s, CMD_REGISTER, reg_args(id, i % 3 ? "copy" : "other", i % 2 ? cid : NULL),
              &chg);
    }
    /* one record past record_plain_view's 2 KiB on the stack, between others */
    char big[3000];
    memset(big, 'm', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    json_t *args = reg_args("c15b", "copy", "check:c15b");
    json_object_set_new(json_object_get(json_object_get(args, "Service"), "Meta"), "big",
                        json_string(big));
    assert_int_equal(apply(f->s, CMD_REGISTER, args, &chg), 0);
    void *want;
    size_t want_len;
    assert_int_equal(store_snapshot(f->s, &want, &want_len), 0);
    struct store_read *r;
    void *buf = NULL;
    size_t cap = 0, len;
    assert_int_equal(store_read_begin(f->s, &r), 0);
    assert_int_equal(store_snapshot_copy(r, &buf, &cap, &len), 0);
    store_read_end(r);
    assert_true(len < want_len); /* packed, no trailer yet */
    apply(f->s, CMD_REGISTER, reg_args("late", "copy", "check:late"), &chg);
    void *damaged = malloc(len);
    assert_non_null(damaged);
    memcpy(damaged, buf, len);
    size_t dcap = len, dlen = len - 3; /* cut inside the last record */
    assert_int_equal(store_snapshot_finish(&damaged, &dcap, &dlen), REG_ESTORE);
    free(damaged);
    assert_int_equal(store_snapshot_finish(&buf, &cap, &len), 0);
    assert_int_equal(len, want_len);
    assert_memory_equal(buf, want, len);
    struct snap_info info;
    char err[200];
    assert_int_equal(snap_validate(buf, len, 0, &info, err, sizeof(err)), 0);
    assert_int_equal(info.records, snap_header_records(want));
    assert_non_null(memmem(buf, len, big, sizeof(big) - 1));
    free(want);
    free(buf);
}

/* The next n keys of a walk, joined with ' '. */
static void walk_keys(struct store_iter *it, int n, char *out, size_t cap)
{
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        const char *k;
        const void *v;
        size_t kl, vl;
        int rc = store_iter_next(it, &k, &kl, &v, &vl);
        if (rc == REG_ENOTFOUND)
            return;
        assert_int_equal(rc, 0);
        size_t at = strlen(out);
        snprintf(out + at, cap - at, "%s%.*s", at ? " " : "", (int)kl, k);
    }
}

/* Register or deregister instance id of "walk", with check "c:<id>". */
static void walk_add(struct store *s, const char *id)
{
    char cid[16];
    struct store_change chg;
    snprintf(cid, sizeof(cid), "c:%s", id);
    assert_int_equal(apply(s, CMD_REGISTER, reg_args(id, "walk", cid), &chg), 0);
}

static void walk_del(struct store *s, const char *id)
{
    struct store_change chg;
    assert_int_equal(apply(s, CMD_DEREGISTER, json_pack("{s:s}", "ServiceID", id), &chg), 0);
}

/* A parked walk (its read reset while a slow client waits) goes on after
 * unpark from the first entry after the last it returned, in what the
 * store holds then: the last one removed, the next one removed, one added
 * between them; whether it had not started, had ended, or was parked
 * twice. Each kind: every instance, one name's (an index), a state's
 * checks (an index). */
static void test_iter_park_unpark(void **state)
{
    struct fixture *f = *state;
    const char *ids[] = {"w0", "w1", "w2", "w3", "w4"};
    for (int i = 0; i < 5; i++)
        walk_add(f->s, ids[i]);
    const struct {
        enum store_iter_kind kind;
        const char *name, *prefix;
    } kinds[] = {{STORE_ITER_INSTANCES, NULL, ""},
                 {STORE_ITER_NAME, "walk", ""},
                 {STORE_ITER_STATE, "critical", "c:"}};
    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        const char *p = kinds[k].prefix;
        struct store_read *r;
        struct store_iter *it;
        char got[256], want[256];
        assert_int_equal(store_read_begin(f->s, &r), 0);
        assert_int_equal(store_iter_begin(r, kinds[k].kind, kinds[k].name, &it), 0);
        bool moved;
        assert_int_equal(store_iter_park(it), 0); /* before the first entry */
        assert_int_equal(store_iter_unpark(it, &moved), 0);
        assert_false(moved); /* no write in between: the same view */
        walk_keys(it, 2, got, sizeof(got));
        snprintf(want, sizeof(want), "%sw0 %sw1", p, p);
        assert_string_equal(got, want);
        assert_int_equal(store_iter_park(it), 0);
        assert_int_equal(store_iter_park(it), 0); /* twice: no change */
        /* the last returned removed, the next removed, two added between */
        walk_del(f->s, "w1");
        walk_del(f->s, "w2");
        walk_add(f->s, "w1a");
        walk_add(f->s, "w1b");
        assert_int_equal(store_iter_unpark(it, &moved), 0);
        assert_true(moved);
        assert_int_equal(store_iter_unpark(it, &moved), 0); /* twice: no change */
        assert_false(moved);
        /* parked again before the entry unpark found (w1a) is returned, and
         * that entry removed meanwhile */
        assert_int_equal(store_iter_park(it), 0);
        walk_del(f->s, "w1a");
        assert_int_equal(store_iter_unpark(it, &moved), 0);
        assert_true(moved);
        walk_keys(it, 1, got, sizeof(got));
        snprintf(want, sizeof(want), "%sw1b", p);
        assert_string_equal(got, want);
        /* parked after the entry returned last, still there */
        assert_int_equal(store_iter_park(it), 0);
        assert_int_equal(store_iter_unpark(it, &moved), 0);
        assert_int_equal(store_iter_park(it), 0);
        assert_int_equal(store_iter_unpark(it, &moved), 0);
        walk_keys(it, 10, got, sizeof(got));
        snprintf(want, sizeof(want), "%sw3 %sw4", p, p);
        assert_string_equal(got, want);
        /* after the end, even with an entry added after the last */
        assert_int_equal(store_iter_park(it), 0);
        walk_add(f->s, "w9");
        assert_int_equal(store_iter_unpark(it, &moved), 0);
        walk_keys(it, 1, got, sizeof(got));
        assert_string_equal(got, "");
        store_iter_end(it);
        store_read_end(r);
        /* as it was, for the next kind */
        walk_del(f->s, "w1b");
        walk_del(f->s, "w9");
        walk_add(f->s, "w1");
        walk_add(f->s, "w2");
    }
}

/* A streamed snapshot is the same bytes as store_snapshot's, whatever the
 * piece size (1 byte splits every head, key, value and the trailer), and a
 * restore accepts it. */
static void test_snapshot_stream_same_bytes(void **state)
{
    struct fixture *f = *state;
    struct store_change chg;
    for (int i = 0; i < 20; i++) {
        char id[16];
        snprintf(id, sizeof(id), "s%d", i);
        apply(f->s, CMD_REGISTER, reg_args(id, i % 2 ? "odd" : "even", NULL), &chg);
    }
    void *fresh;
    size_t fresh_len;
    assert_int_equal(store_snapshot(f->s, &fresh, &fresh_len), 0);
    const size_t caps[] = {1, 7, 4096, 1 << 20};
    for (size_t c = 0; c < sizeof(caps) / sizeof(caps[0]); c++) {
        struct store_snap_stream *st;
        assert_int_equal(store_snap_stream_begin(f->s, &st), 0);
        unsigned char *all = malloc(fresh_len + caps[c]), *piece = malloc(caps[c]);
        assert_non_null(all);
        assert_non_null(piece);
        size_t total = 0, n;
        do {
            assert_int_equal(store_snap_stream_read(st, piece, caps[c], &n), 0);
            assert_true(total + n <= fresh_len);
            memcpy(all + total, piece, n);
            total += n;
        } while (n > 0);
        store_snap_stream_end(st);
        assert_int_equal(total, fresh_len);
        assert_memory_equal(all, fresh, fresh_len);
        if (c == 0)
            assert_int_equal(store_restore(f->s, all, total), 0);
        free(all);
        free(piece);
    }
    assert_int_equal(count_instances(f->s, "odd"), 10);
    free(fresh);
}

/* snap_each: any byte below 0x20 in a value of the instance or check tables */
static int find_packed(enum snap_table t, const void *key, uint32_t klen, const void *val,
                       uint32_t vlen, void *arg)
{
    (void)key;
    (void)klen;
    const unsigned char *v = val;
    if (t == SNAP_SERVICES || t == SNAP_CHECKS)
        for (uint32_t i = 0; i < vlen; i++)
            if (v[i] < 0x20)
                ++*(int *)arg;
    return 0;
}

/* Instances and checks are stored packed (record.h), and read back as they
 * were; snapshots, taken whole or streamed, and what a restore keeps carry
 * the plain text (other versions, tools and tests read it). */
static void test_records_stored_packed_snapshots_plain(void **state)
{
    struct fixture *f = *state;
    struct store_change chg;
    apply(f->s, CMD_REGISTER, reg_args("p1", "packed", "c:p1"), &chg);
    struct store_read *r;
    const void *raw;
    size_t rawlen;
    json_t *inst = NULL;
    assert_int_equal(store_read_begin(f->s, &r), 0);
    assert_int_equal(store_get_raw(r, false, "p1", 2, &raw, &rawlen), 0);
    assert_true(rawlen > 0 && *(const unsigned char *)raw < 0x20); /* a run's code first */
    char err[200];
    assert_int_equal(record_decode(RECORD_INSTANCE, raw, rawlen, &inst, err, sizeof(err)), 0);
    char *plain = json_dumps(inst, JSON_COMPACT);
    assert_true(rawlen * 2 < strlen(plain));
    assert_string_equal(json_string_value(json_object_get(inst, "Service")), "packed");
    assert_int_equal(store_get_raw(r, true, "c:p1", 4, &raw, &rawlen), 0);
    assert_true(*(const unsigned char *)raw < 0x20);
    store_read_end(r);
    void *snap;
    size_t len;
    assert_int_equal(store_snapshot(f->s, &snap, &len), 0);
    int packed = 0;
    assert_int_equal(snap_each(snap, len, find_packed, &packed), 0);
    assert_int_equal(packed, 0);
    /* restored: packed again in the store, the same record read back */
    assert_int_equal(store_restore(f->s, snap, len), 0);
    json_t *again = NULL;
    assert_int_equal(store_read_begin(f->s, &r), 0);
    assert_int_equal(store_get_raw(r, false, "p1", 2, &raw, &rawlen), 0);
    assert_true(*(const unsigned char *)raw < 0x20);
    assert_int_equal(record_decode(RECORD_INSTANCE, raw, rawlen, &again, err, sizeof(err)), 0);
    store_read_end(r);
    char *plain_again = json_dumps(again, JSON_COMPACT);
    assert_string_equal(plain, plain_again);
    free(plain);
    free(plain_again);
    json_decref(inst);
    json_decref(again);
    free(snap);
}

/* A clean stop's record lets the next open keep the file, only with the
 * same raft fingerprint; the record is used up by the open that reads it. */
static void test_restart_record(void **state)
{
    struct fixture *f = *state;
    struct store_change chg;
    char err[256], file[4200];
    apply(f->s, CMD_REGISTER, reg_args("kept", "svc", NULL), &chg);
    assert_int_equal(store_mark_clean(f->s, 0, 42), REG_EINVAL); /* raft never ran */
    assert_int_equal(store_mark_clean(f->s, 7, 42), 0);
    store_free(f->s);
    snprintf(file, sizeof(file), "%s/data.mdb", f->dir);
    assert_false(store_restart_possible(file, 43));
    assert_true(store_restart_possible(file, 42));
    assert_int_equal(store_open(f->dir, 42, &f->s, err, sizeof(err)), 0);
    assert_int_equal(store_reused_applied(f->s), 7);
    assert_int_equal(count_instances(f->s, "svc"), 1);
    /* the snapshot of a kept file carries no restart record */
    void *snap;
    size_t len;
    assert_int_equal(store_mark_clean(f->s, 9, 42), 0);
    assert_int_equal(store_snapshot(f->s, &snap, &len), 0);
    assert_null(memmem(snap, len, "restart", 7));
    free(snap);
    store_free(f->s);
    /* another fingerprint: rebuilt, empty */
    assert_int_equal(store_open(f->dir, 43, &f->s, err, sizeof(err)), 0);
    assert_int_equal(store_reused_applied(f->s), 0);
    assert_int_equal(count_instances(f->s, "svc"), 0);
    store_free(f->s);
    /* the record was used up: the same fingerprint again rebuilds too */
    assert_int_equal(store_open(f->dir, 42, &f->s, err, sizeof(err)), 0);
    assert_int_equal(store_reused_applied(f->s), 0);
}

static void test_undecodable_command(void **state)
{
    struct fixture *f = *state;
    struct store_change chg;
    assert_int_equal(store_apply(f->s, "\x01\x01{oops", 7, &chg), REG_EINVAL);
    assert_int_equal(chg.n, 0);
}

/* A server record from the raft log is input: Node and Address come
 * together, a node name and an IP, or the command is refused and nothing
 * is stored (only the announcing server's HTTP side checked them). */
static void test_server_record_checked(void **state)
{
    struct fixture *f = *state;
    struct store_change chg;
    static const char *const bad[][2] = {
        {"bad name!", "127.0.0.1"}, {"good", "not-an-ip"}, {"good", NULL}, {NULL, "127.0.0.1"},
        {"", "127.0.0.1"}, {"n.n", "::1 "}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *args = json_pack("{s:i, s:s, s:s}", "ID", 7, "Raft", "127.0.0.1:9", "HTTP",
                                 "127.0.0.1:8");
        if (bad[i][0])
            json_object_set_new(args, "Node", json_string(bad[i][0]));
        if (bad[i][1])
            json_object_set_new(args, "Address", json_string(bad[i][1]));
        assert_int_equal(apply(f->s, CMD_SERVER, args, &chg), REG_EINVAL);
    }
    json_t *args = json_pack("{s:i, s:s, s:s, s:i, s:s}", "ID", 7, "Raft", "127.0.0.1:9",
                             "HTTP", "127.0.0.1:8", "Node", 7, "Address", "127.0.0.1");
    assert_int_equal(apply(f->s, CMD_SERVER, args, &chg), REG_EINVAL);
    args = json_pack("{s:i, s:s, s:s, s:s, s:s, s:{s:i}}", "ID", 7, "Raft", "127.0.0.1:9", "HTTP",
                     "127.0.0.1:8", "Node", "n", "Address", "127.0.0.1", "NodeMeta", "k", 1);
    assert_int_equal(apply(f->s, CMD_SERVER, args, &chg), REG_EINVAL);
    struct store_read *r;
    json_t *out = NULL;
    assert_int_equal(store_read_begin(f->s, &r), 0);
    assert_int_not_equal(store_get_server(r, "127.0.0.1:9", &out), 0);
    store_read_end(r);
    args = json_pack("{s:i, s:s, s:s, s:s, s:s}", "ID", 7, "Raft", "127.0.0.1:9", "HTTP",
                     "127.0.0.1:8", "Node", "s-1.dc", "Address", "::1");
    assert_int_equal(apply(f->s, CMD_SERVER, args, &chg), 0);
    args = json_pack("{s:i, s:s, s:s}", "ID", 8, "Raft", "127.0.0.1:10", "HTTP", "127.0.0.1:11");
    assert_int_equal(apply(f->s, CMD_SERVER, args, &chg), 0); /* an older server's */
    assert_int_equal(store_read_begin(f->s, &r), 0);
    assert_int_equal(store_get_server(r, "127.0.0.1:9", &out), 0);
    assert_string_equal(json_string_value(json_object_get(out, "Node")), "s-1.dc");
    json_decref(out);
    store_read_end(r);
}

/* A server's record names its node, which the catalog lists: storing a new
 * or changed one moves the index and the nodes' index (an answer cached at
 * the index before was served on for good, and blocking queries on the
 * catalog's nodes slept through a server's arrival); the same record again
 * moves nothing. */
static void test_server_record_moves_the_index(void **state)
{
    struct fixture *f = *state;
    struct store_change chg;
    struct store_read *r;
    uint64_t before, nodes_before;
    assert_int_equal(apply(f->s, CMD_REGISTER, reg_args("a", "web", NULL), &chg), 0);
    assert_int_equal(store_read_begin(f->s, &r), 0);
    before = store_index(r);
    nodes_before = store_nodes_index(r);
    store_read_end(r);
    json_t *args = json_pack("{s:i, s:s, s:s, s:s, s:s}", "ID", 7, "Raft", "127.0.0.1:9", "HTTP",
                             "127.0.0.1:8", "Node", "s1", "Address", "127.0.0.1");
    assert_int_equal(apply(f->s, CMD_SERVER, json_incref(args), &chg), 0);
    assert_true(chg.n > 0);
    assert_int_equal(store_read_begin(f->s, &r), 0);
    assert_true(store_index(r) > before);
    assert_true(store_nodes_index(r) > nodes_before);
    before = store_index(r);
    store_read_end(r);
    assert_int_equal(apply(f->s, CMD_SERVER, json_incref(args), &chg), 0);
    assert_int_equal(chg.n, 0);
    assert_int_equal(store_read_begin(f->s, &r), 0);
    assert_int_equal(store_index(r), before);
    store_read_end(r);
    json_object_set_new(args, "Address", json_string("127.0.0.2"));
    assert_int_equal(apply(f->s, CMD_SERVER, json_incref(args), &chg), 0);
    assert_true(chg.n > 0);
    assert_int_equal(store_read_begin(f->s, &r), 0);
    assert_true(store_index(r) > before);
    before = store_index(r);
    store_read_end(r);
    /* marked removed (cluster.c, when it leaves the configuration): a
     * change too, which an older server stores as it is */
    json_object_set_new(args, "Removed", json_true());
    assert_int_equal(apply(f->s, CMD_SERVER, args, &chg), 0);
    assert_true(chg.n > 0);
    assert_int_equal(store_read_begin(f->s, &r), 0);
    assert_true(store_index(r) > before);
    store_read_end(r);
}

static int collect_server(json_t *rec, void *arg)
{
    json_array_append(arg, json_object_get(rec, "Raft"));
    return 0;
}

static int collect_two_servers(json_t *rec, void *arg)
{
    collect_server(rec, arg);
    return json_array_size(arg) == 2 ? 9 : 0; /* stops at the second */
}

/* Every server record, by raft address, and nothing else of meta (the
 * nodes, ACL records and indexes that share the table). */
static void test_each_server(void **state)
{
    struct fixture *f = *state;
    struct store_change chg;
    struct store_read *r;
    const char *addrs[] = {"127.0.0.1:9", "127.0.0.3:9", "127.0.0.2:9"};
    for (int i = 0; i < 3; i++)
        assert_int_equal(apply(f->s, CMD_SERVER, json_pack("{s:i, s:s, s:s}", "ID", i + 1, "Raft",
                                                           addrs[i], "HTTP", "127.0.0.1:8"),
                               &chg),
                         0);
    assert_int_equal(apply(f->s, CMD_REGISTER, reg_args("a", "web", NULL), &chg), 0);
    json_t *seen = json_array();
    assert_int_equal(store_read_begin(f->s, &r), 0);
    assert_int_equal(store_each_server(r, collect_server, seen), 0);
    assert_int_equal(json_array_size(seen), 3);
    for (int i = 0; i < 3; i++) {
        char want[16];
        snprintf(want, sizeof(want), "127.0.0.%d:9", i + 1);
        assert_string_equal(json_string_value(json_array_get(seen, (size_t)i)), want);
    }
    json_array_clear(seen);
    assert_int_equal(store_each_server(r, collect_two_servers, seen), 9);
    assert_int_equal(json_array_size(seen), 2);
    store_read_end(r);
    json_decref(seen);
}

/* ---- derived indexes: by_state and name_tags ------------------------------
 * After every change, each index must give exactly what a walk of every
 * record gives (the answers before the indexes existed). */

struct ids {
    json_t *arr;
    const char *state; /* NULL: every check */
};

static int collect_check_id(json_t *check, void *arg)
{
    struct ids *x = arg;
    const char *st = json_string_value(json_object_get(check, "Status"));
    if (x->state == NULL || strcmp(st, x->state) == 0)
        json_array_append(x->arr, json_object_get(check, "CheckID"));
    return 0;
}

/* Instance IDs by each IP address of theirs (Address, NodeAddress; the
 * address as inet_ntop writes it), once each. */
static void file_at(json_t *at, const char *text, const char *id)
{
    unsigned char bin[16];
    char norm[64];
    int family = inet_pton(AF_INET, text, bin) == 1    ? AF_INET
                 : inet_pton(AF_INET6, text, bin) == 1 ? AF_INET6
                                                        : 0;
    if (family == 0 || inet_ntop(family, bin, norm, sizeof(norm)) == NULL)
        return;
    json_t *ids = json_object_get(at, norm);
    if (ids == NULL)
        json_object_set_new(at, norm, ids = json_array());
    size_t n = json_array_size(ids);
    if (n == 0 || strcmp(json_string_value(json_array_get(ids, n - 1)), id) != 0)
        json_array_append_new(ids, json_string(id)); /* walked by ID: sorted */
}

static int collect_at_addr(json_t *inst, void *arg)
{
    const char *id = json_string_value(json_object_get(inst, "ID"));
    const char *a = json_string_value(json_object_get(inst, "Address"));
    const char *na = json_string_value(json_object_get(inst, "NodeAddress"));
    if (id == NULL)
        return 0;
    if (a != NULL)
        file_at(arg, a, id);
    if (na != NULL)
        file_at(arg, na, id);
    return 0;
}

static int collect_id(json_t *inst, void *arg)
{
    json_array_append(arg, json_object_get(inst, "ID"));
    return 0;
}

/* Node-level checks (ServiceID ""): their IDs by node. */
static int collect_node_level(json_t *check, void *arg)
{
    json_t *by_node = arg;
    const char *sid = json_string_value(json_object_get(check, "ServiceID"));
    const char *node = json_string_value(json_object_get(check, "Node"));
    if (sid != NULL && *sid == '\0' && node != NULL) {
        if (json_object_get(by_node, node) == NULL)
            json_object_set_new(by_node, node, json_array());
        json_array_append(json_object_get(by_node, node), json_object_get(check, "CheckID"));
    }
    return 0;
}

struct walk_names {
    struct store_read *r;
    json_t *out;
};

static int walk_tags(json_t *inst, void *arg)
{
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(inst, "Tags"), i, t)
        json_object_set_new(arg, json_string_value(t), json_true());
    return 0;
}

/* what a walk of a name's instances gives: tags by first appearance */
static int walk_name(const char *name, void *arg)
{
    struct walk_names *w = arg;
    json_t *seen = json_object(), *arr = json_array();
    assert_int_equal(store_each_instance(w->r, name, walk_tags, seen), 0);
    const char *k;
    json_t *v;
    json_object_foreach(seen, k, v) json_array_append_new(arr, json_string(k));
    json_decref(seen);
    json_object_set_new(w->out, name, arr);
    return 0;
}

static int indexed_name(const char *name, const struct store_str *tags, size_t n, void *arg)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, json_stringn(tags[i].p, tags[i].len));
    json_object_set_new(arg, name, arr);
    return 0;
}

struct summary_text {
    char buf[65536];
    size_t len;
};

static int summary_append(const char *name, const char *json, size_t len, void *arg)
{
    struct summary_text *st = arg;
    json_t *js = json_string(name);
    char *t = json_dumps(js, JSON_ENCODE_ANY);
    json_decref(js);
    int n = snprintf(st->buf + st->len, sizeof(st->buf) - st->len, "%s%s:%.*s",
                     st->len > 1 ? "," : "", t, (int)len, json);
    free(t);
    assert_true(n > 0 && st->len + (size_t)n < sizeof(st->buf));
    st->len += (size_t)n;
    return 0;
}

/* The listing as the per-name summaries give it. */
static char *summary_listing(struct store *s)
{
    struct store_read *r;
    struct summary_text *st = calloc(1, sizeof(*st));
    st->buf[st->len++] = '{';
    assert_int_equal(store_read_begin(s, &r), 0);
    assert_int_equal(store_each_name_summary(r, summary_append, st), 0);
    store_read_end(r);
    st->buf[st->len++] = '}';
    char *out = strndup(st->buf, st->len);
    free(st);
    return out;
}

/* The catalog listing from the index, as text (order matters). */
static char *indexed_listing(struct store *s)
{
    struct store_read *r;
    json_t *got = json_object();
    assert_int_equal(store_read_begin(s, &r), 0);
    assert_int_equal(store_each_name_tags(r, indexed_name, got), 0);
    store_read_end(r);
    char *text = json_dumps(got, JSON_COMPACT);
    json_decref(got);
    return text;
}

/* name_tags entries an instance should have: one per distinct tag, and
 * one for all its tags too long for a key (511 bytes with name and NUL) */
static int count_tag_entries(json_t *inst, void *arg)
{
    json_t *seen = json_object(), *t;
    size_t i, nlen = strlen(json_string_value(json_object_get(inst, "Service")));
    bool overflow = false;
    json_array_foreach(json_object_get(inst, "Tags"), i, t)
    {
        if (nlen + 1 + json_string_length(t) > 511)
            overflow = true;
        else
            json_object_set_new(seen, json_string_value(t), json_true());
    }
    *(uint64_t *)arg += json_object_size(seen) + overflow;
    json_decref(seen);
    return 0;
}

struct node_walk {
    json_t *first; /* node -> ID of the first instance met there */
    uint64_t with_node;
};

static int walk_node(json_t *inst, void *arg)
{
    struct node_walk *w = arg;
    const char *node = json_string_value(json_object_get(inst, "Node"));
    if (node == NULL)
        return 0;
    w->with_node++;
    if (json_object_get(w->first, node) == NULL)
        json_object_set(w->first, node, json_object_get(inst, "ID"));
    return 0;
}

static int indexed_node(json_t *inst, void *arg)
{
    const char *node = json_string_value(json_object_get(inst, "Node"));
    assert_non_null(node);
    assert_null(json_object_get(arg, node)); /* each node once */
    json_object_set(arg, node, json_object_get(inst, "ID"));
    return 0;
}

struct on_node {
    const char *node;
    json_t *ids;
};

static int walk_on_node(json_t *inst, void *arg)
{
    struct on_node *o = arg;
    const char *node = json_string_value(json_object_get(inst, "Node"));
    if (node != NULL && strcmp(node, o->node) == 0)
        json_array_append(o->ids, json_object_get(inst, "ID"));
    return 0;
}

static void assert_indexes_right(struct store *s)
{
    static const char *const states[] = {"passing", "warning", "critical"};
    struct store_read *r;
    assert_int_equal(store_read_begin(s, &r), 0);
    for (int i = 0; i < 3; i++) {
        struct ids want = {json_array(), states[i]}, got = {json_array(), NULL};
        assert_int_equal(store_each_check(r, collect_check_id, &want), 0);
        assert_int_equal(store_each_check_state(r, states[i], collect_check_id, &got), 0);
        char *a = json_dumps(want.arr, JSON_COMPACT), *b = json_dumps(got.arr, JSON_COMPACT);
        assert_string_equal(a, b);
        /* the raw iterator render uses: the same IDs */
        struct store_iter *it;
        json_t *raw = json_array();
        const char *k;
        size_t kl, vl;
        const void *v;
        assert_int_equal(store_iter_begin(r, STORE_ITER_STATE, states[i], &it), 0);
        while (store_iter_next(it, &k, &kl, &v, &vl) == 0)
            json_array_append_new(raw, json_stringn(k, kl));
        store_iter_end(it);
        char *c = json_dumps(raw, JSON_COMPACT);
        assert_string_equal(a, c);
        free(a);
        free(b);
        free(c);
        json_decref(raw);
        json_decref(want.arr);
        json_decref(got.arr);
    }
    struct walk_names w = {r, json_object()};
    assert_int_equal(store_each_name(r, walk_name, &w), 0);
    /* nothing stale left behind either (readers would skip it) */
    struct ids all = {json_array(), NULL};
    assert_int_equal(store_each_check(r, collect_check_id, &all), 0);
    uint64_t tag_entries = 0, by_state, name_tags, node_insts, summaries, addr_insts;
    assert_int_equal(store_each_instance(r, NULL, count_tag_entries, &tag_entries), 0);
    assert_int_equal(store_derived_entries(s, &by_state, &name_tags, &node_insts, &summaries,
                                           &addr_insts),
                     0);
    /* one summary per name with instances, tagged or not: none left over */
    assert_int_equal(summaries, json_object_size(w.out));
    assert_int_equal(by_state, json_array_size(all.arr));
    assert_int_equal(name_tags, tag_entries);
    /* nodes: the first instance on each, as a walk of every instance by ID
     * meets them */
    struct node_walk nw = {json_object(), 0};
    json_t *got_nodes = json_object();
    assert_int_equal(store_each_instance(r, NULL, walk_node, &nw), 0);
    assert_int_equal(store_each_node_instance(r, indexed_node, got_nodes), 0);
    char *wn = json_dumps(nw.first, JSON_COMPACT | JSON_SORT_KEYS),
         *gn = json_dumps(got_nodes, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(wn, gn);
    assert_int_equal(node_insts, nw.with_node);
    /* each node's instances, by ID */
    const char *node;
    json_t *first;
    json_object_foreach(nw.first, node, first)
    {
        struct on_node want = {node, json_array()}, got = {node, json_array()};
        assert_int_equal(store_each_instance(r, NULL, walk_on_node, &want), 0);
        assert_int_equal(store_each_instance_on(r, node, walk_on_node, &got), 0);
        assert_true(json_equal(want.ids, got.ids));
        assert_true(json_array_size(got.ids) > 0);
        json_decref(want.ids);
        json_decref(got.ids);
    }
    free(wn);
    free(gn);
    json_decref(nw.first);
    json_decref(got_nodes);
    json_decref(all.arr);
    /* the instances at each IP address, from the index as from a walk */
    json_t *at = json_object();
    assert_int_equal(store_each_instance(r, NULL, collect_at_addr, at), 0);
    size_t addr_entries = 0;
    const char *addr;
    json_t *ids;
    json_object_foreach(at, addr, ids)
    {
        json_t *got_ids = json_array();
        assert_int_equal(store_each_instance_at(r, addr, collect_id, got_ids), 0);
        assert_true(json_equal(ids, got_ids));
        addr_entries += json_array_size(ids);
        json_decref(got_ids);
    }
    assert_int_equal(addr_insts, addr_entries);
    json_t *none_at = json_array();
    assert_int_equal(store_each_instance_at(r, "not-an-address", collect_id, none_at), 0);
    assert_int_equal(store_each_instance_at(r, "192.0.2.254", collect_id, none_at), 0);
    assert_int_equal(json_array_size(none_at), 0);
    json_decref(none_at);
    json_decref(at);
    /* each node's own checks, from the index as from a walk of them all */
    json_t *node_level = json_object();
    assert_int_equal(store_each_check(r, collect_node_level, node_level), 0);
    json_object_foreach(node_level, node, first)
    {
        json_t *got_ids = json_object();
        assert_int_equal(store_each_node_check(r, node, collect_node_level, got_ids), 0);
        assert_true(json_equal(first, json_object_get(got_ids, node)));
        assert_int_equal(json_object_size(got_ids), 1);
        json_decref(got_ids);
    }
    json_t *none = json_object();
    assert_int_equal(store_each_node_check(r, "no-such-node", collect_node_level, none), 0);
    assert_int_equal(json_object_size(none), 0);
    json_decref(none);
    json_decref(node_level);
    store_read_end(r);
    char *want = json_dumps(w.out, JSON_COMPACT), *got = indexed_listing(s),
         *text = summary_listing(s);
    assert_string_equal(want, got);
    assert_string_equal(want, text);
    free(want);
    free(got);
    free(text);
    json_decref(w.out);
}

/* A registration with tags (a JSON array text), one check in status, on
 * node (NULL: none). */
static json_t *reg_tagged(const char *id, const char *name, const char *tags, const char *node,
                          const char *check_id, const char *status)
{
    json_t *args = reg_args(id, name, check_id);
    json_t *svc = json_object_get(args, "Service");
    json_object_set_new(svc, "Tags", json_loads(tags, 0, NULL));
    if (node)
        json_object_set_new(svc, "Node", json_string(node));
    if (check_id) {
        json_t *c = json_array_get(json_object_get(args, "Checks"), 0);
        json_object_set_new(c, "Status", json_string(status));
        json_object_set_new(args, "SetStatus", json_true());
    }
    return args;
}

static json_t *reg_at(const char *id, const char *node, const char *addr, const char *node_addr)
{
    json_t *args = reg_tagged(id, "ip", "[]", node, NULL, NULL);
    json_t *svc = json_object_get(args, "Service");
    json_object_set_new(svc, "Address", json_string(addr));
    json_object_set_new(svc, "NodeAddress", json_string(node_addr));
    return args;
}

static void set_status(struct store *s, const char *cid, const char *status)
{
    struct store_change chg;
    assert_int_equal(
        apply(s, CMD_CHECK_UPDATE,
              json_pack("{s:s, s:s, s:s}", "CheckID", cid, "Status", status, "Output", status),
              &chg),
        0);
}

static void test_indexes_follow_every_change(void **state)
{
    struct fixture *f = *state;
    struct store_change chg;
    char longtag[600];
    memset(longtag, 'L', sizeof(longtag) - 1);
    longtag[sizeof(longtag) - 1] = '\0';
    assert_indexes_right(f->s);
    /* tags in several orders, repeated within an instance, shared */
    assert_int_equal(
        apply(f->s, CMD_REGISTER,
              reg_tagged("web-2", "web", "[\"b\",\"a\",\"b\"]", NULL, "c:web-2", "passing"), &chg),
        0);
    assert_int_equal(apply(f->s, CMD_REGISTER,
                           reg_tagged("web-1", "web", "[\"c\",\"a\"]", NULL, "c:web-1", "critical"),
                           &chg),
                     0);
    assert_int_equal(
        apply(f->s, CMD_REGISTER,
              reg_tagged("web-10", "web", "[\"z\",\"\",\"c\"]", "n1", "c:web-10", "warning"), &chg),
        0);
    assert_int_equal(
        apply(f->s, CMD_REGISTER, reg_tagged("db", "db", "[]", "n1", NULL, NULL), &chg), 0);
    assert_int_equal(
        apply(f->s, CMD_REGISTER, reg_tagged("a-db", "db", "[]", "n2", NULL, NULL), &chg), 0);
    assert_indexes_right(f->s);
    /* an instance moved to another node, then back */
    assert_int_equal(
        apply(f->s, CMD_REGISTER, reg_tagged("a-db", "db", "[]", "n1", NULL, NULL), &chg), 0);
    assert_indexes_right(f->s);
    assert_int_equal(
        apply(f->s, CMD_REGISTER, reg_tagged("a-db", "db", "[]", "n2", NULL, NULL), &chg), 0);
    /* addresses: two of an instance, the same one twice (also as IPv6 text
     * written two ways), a host name (not indexed), moved, gone */
    assert_int_equal(apply(f->s, CMD_REGISTER, reg_at("ip-1", "n1", "10.0.0.1", "10.0.0.9"), &chg),
                     0);
    assert_int_equal(apply(f->s, CMD_REGISTER, reg_at("ip-2", "n2", "fd00::7", "fd00:0::7"), &chg),
                     0);
    assert_int_equal(
        apply(f->s, CMD_REGISTER, reg_at("ip-3", "n2", "host.example", "10.0.0.9"), &chg), 0);
    assert_indexes_right(f->s);
    assert_int_equal(apply(f->s, CMD_REGISTER, reg_at("ip-1", "n1", "10.0.0.9", "10.0.0.9"), &chg),
                     0);
    assert_indexes_right(f->s);
    assert_int_equal(apply(f->s, CMD_REGISTER, reg_at("ip-1", "n1", "10.0.0.2", "10.0.0.9"), &chg),
                     0);
    assert_int_equal(apply(f->s, CMD_REGISTER, reg_at("ip-2", "n2", "fd00::8", "fd00::7"), &chg),
                     0);
    assert_indexes_right(f->s);
    assert_int_equal(
        apply(f->s, CMD_DEREGISTER, json_pack("{s:s}", "ServiceID", "ip-3"), &chg), 0);
    assert_indexes_right(f->s);
    assert_int_equal(
        apply(f->s, CMD_REGISTER,
              reg_tagged("we", "we", "[\"q\\\"uote\",\"\\u00e9\"]", NULL, "c:we", "passing"), &chg),
        0);
    assert_indexes_right(f->s);
    char *text = indexed_listing(f->s);
    /* web: web-1 (c, a), web-10 (z, "", c), web-2 (b, a, b) */
    assert_string_equal(text, "{\"db\":[],\"ip\":[],\"we\":[\"q\\\"uote\",\"\xc3\xa9\"],"
                              "\"web\":[\"c\",\"a\",\"z\",\"\",\"b\"]}");
    free(text);
    /* status changes, every way round */
    set_status(f->s, "c:web-2", "critical");
    set_status(f->s, "c:web-1", "warning");
    set_status(f->s, "c:web-1", "passing");
    assert_indexes_right(f->s);
    /* tags changed, then the name too; the smallest ID goes */
    assert_int_equal(apply(f->s, CMD_REGISTER,
                           reg_tagged("web-2", "web", "[\"a\",\"y\"]", NULL, "c:web-2", "passing"),
                           &chg),
                     0);
    assert_indexes_right(f->s);
    assert_int_equal(apply(f->s, CMD_REGISTER,
                           reg_tagged("web-2", "api", "[\"a\"]", NULL, "c:web-2", "warning"), &chg),
                     0);
    assert_indexes_right(f->s);
    /* a name without tags: listed while it has an instance, gone after its
     * last goes by a rename and by a deregistration */
    assert_int_equal(
        apply(f->s, CMD_REGISTER, reg_tagged("solo", "solo", "[]", NULL, NULL, NULL), &chg), 0);
    assert_indexes_right(f->s);
    assert_int_equal(
        apply(f->s, CMD_REGISTER, reg_tagged("solo", "solo2", "[]", NULL, NULL, NULL), &chg), 0);
    assert_indexes_right(f->s);
    assert_int_equal(
        apply(f->s, CMD_REGISTER, reg_tagged("solo", "solo2", "[\"t\"]", NULL, NULL, NULL), &chg),
        0);
    assert_indexes_right(f->s);
    assert_int_equal(
        apply(f->s, CMD_REGISTER, reg_tagged("solo", "solo2", "[]", NULL, NULL, NULL), &chg), 0);
    assert_indexes_right(f->s);
    assert_int_equal(apply(f->s, CMD_DEREGISTER, json_pack("{s:s}", "ServiceID", "solo"), &chg),
                     0);
    assert_indexes_right(f->s);
    assert_int_equal(apply(f->s, CMD_DEREGISTER, json_pack("{s:s}", "ServiceID", "web-1"), &chg),
                     0);
    assert_indexes_right(f->s);
    /* maintenance on and off */
    assert_int_equal(
        apply(f->s, CMD_MAINTENANCE,
              json_pack("{s:s, s:b, s:s}", "ServiceID", "web-10", "Enable", 1, "Reason", "r"),
              &chg),
        0);
    assert_indexes_right(f->s);
    assert_int_equal(apply(f->s, CMD_MAINTENANCE,
                           json_pack("{s:s, s:b}", "ServiceID", "web-10", "Enable", 0), &chg),
                     0);
    assert_indexes_right(f->s);
    /* a node-level check: put, changed, deleted, put again */
    json_t *nc = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:{}}", "CheckID", "n1-alive",
                           "Name", "alive", "Status", "critical", "Notes", "", "Output", "",
                           "ServiceID", "", "ServiceName", "", "Type", "", "Definition");
    assert_int_equal(apply(f->s, CMD_NODE,
                           json_pack("{s:s, s:[O], s:b}", "Node", "n1", "Put", nc, "SetStatus", 1),
                           &chg),
                     0);
    assert_indexes_right(f->s);
    set_status(f->s, "n1-alive", "passing");
    assert_indexes_right(f->s);
    assert_int_equal(
        apply(f->s, CMD_NODE, json_pack("{s:s, s:[s]}", "Node", "n1", "Delete", "n1-alive"), &chg),
        0);
    assert_indexes_right(f->s);
    assert_int_equal(apply(f->s, CMD_NODE,
                           json_pack("{s:s, s:[O], s:b}", "Node", "n1", "Put", nc, "SetStatus", 1),
                           &chg),
                     0);
    /* a tag too long for an index key: that name is walked */
    char tags[700];
    snprintf(tags, sizeof(tags), "[\"m\",\"%s\",\"k\"]", longtag);
    assert_int_equal(apply(f->s, CMD_REGISTER,
                           reg_tagged("long-1", "long", tags, "n1", "c:long-1", "critical"), &chg),
                     0);
    assert_int_equal(apply(f->s, CMD_REGISTER,
                           reg_tagged("long-0", "long", "[\"k\",\"j\"]", NULL, NULL, NULL), &chg),
                     0);
    assert_indexes_right(f->s);
    /* the node goes, with its instances and checks */
    assert_int_equal(
        apply(f->s, CMD_NODE, json_pack("{s:s, s:b}", "Node", "n1", "Deregister", 1), &chg), 0);
    assert_int_equal(count_instances(f->s, "long"), 1);
    assert_indexes_right(f->s);
    json_decref(nc);

    /* a snapshot restored into a store that held something else */
    void *snap;
    size_t len;
    assert_int_equal(store_snapshot(f->s, &snap, &len), 0);
    char *before = indexed_listing(f->s);
    assert_int_equal(apply(f->s, CMD_REGISTER,
                           reg_tagged("other", "other", "[\"o\"]", "n9", "c:other", "critical"),
                           &chg),
                     0);
    set_status(f->s, "c:we", "critical");
    assert_int_equal(store_restore(f->s, snap, len), 0);
    assert_indexes_right(f->s);
    char *after = indexed_listing(f->s);
    assert_string_equal(before, after);
    free(before);
    free(after);
    /* and the same through a restore command (PUT /v1/snapshot) */
    void *cmd;
    size_t clen;
    apply(f->s, CMD_REGISTER, reg_tagged("other", "other", "[\"o\"]", NULL, "c:o", "warning"),
          &chg);
    assert_int_equal(cmd_restore_raw_encode(snap, len, malloc, &cmd, &clen), 0);
    assert_int_equal(store_apply(f->s, cmd, clen, &chg), 0);
    free(cmd);
    assert_indexes_right(f->s);
    assert_int_equal(count_instances(f->s, "other"), 0);
    free(snap);
}

/* A kept store file whose derived indexes are missing or stale (a file
 * from before them) is indexed again at open. */
static void test_kept_file_without_indexes(void **state)
{
    struct fixture *f = *state;
    struct store_change chg;
    char err[256];
    apply(f->s, CMD_REGISTER, reg_tagged("a-1", "a", "[\"x\",\"y\"]", "n1", "c:a-1", "warning"),
          &chg);
    apply(f->s, CMD_REGISTER, reg_tagged("a-0", "a", "[\"y\"]", NULL, "c:a-0", "passing"), &chg);
    assert_int_equal(store_mark_clean(f->s, 2, 42), 0);
    store_free(f->s);
    /* make it look like an older registryd's file: no derived tables */
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 16), 0);
    assert_int_equal(mdb_env_set_mapsize(env, 16ULL << 30), 0);
    assert_int_equal(mdb_env_open(env, f->dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    static const char *const derived[] = {"by_state", "name_tags", "node_insts", "derived"};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(mdb_dbi_open(txn, derived[i], 0, &dbi), 0);
        assert_int_equal(mdb_drop(txn, dbi, 1), 0);
    }
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    assert_int_equal(store_open(f->dir, 42, &f->s, err, sizeof(err)), 0);
    assert_int_equal(store_reused_applied(f->s), 2);
    assert_int_equal(count_instances(f->s, "a"), 2);
    assert_indexes_right(f->s);
    char *text = indexed_listing(f->s);
    assert_string_equal(text, "{\"a\":[\"y\",\"x\"]}");
    free(text);
    /* and it goes on being kept right */
    set_status(f->s, "c:a-1", "critical");
    assert_indexes_right(f->s);

    /* an older registryd keeps the file and writes to it without the
     * derived tables: a check goes, the index moves on */
    assert_int_equal(store_mark_clean(f->s, 3, 42), 0);
    store_free(f->s);
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 16), 0);
    assert_int_equal(mdb_env_set_mapsize(env, 16ULL << 30), 0);
    assert_int_equal(mdb_env_open(env, f->dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    MDB_val k = {5, "c:a-0"}, v;
    assert_int_equal(mdb_dbi_open(txn, "checks", 0, &dbi), 0);
    assert_int_equal(mdb_del(txn, dbi, &k, NULL), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
    uint64_t index = 5; /* one past the store's own (writes 2, 3 and 4) */
    k = (MDB_val){5, "index"};
    v = (MDB_val){sizeof(index), &index};
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    assert_int_equal(store_open(f->dir, 42, &f->s, err, sizeof(err)), 0);
    assert_int_equal(store_reused_applied(f->s), 3);
    assert_indexes_right(f->s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_register_and_indexes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_record_checked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_record_moves_the_index, setup, teardown),
        cmocka_unit_test_setup_teardown(test_each_server, setup, teardown),
        cmocka_unit_test_setup_teardown(test_instance_may_have_checks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_reset_renew, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_update_only_on_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reregister_keeps_status_and_moves_name, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_maintenance_and_deregister, setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_again_and_nodes_index, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checks_only_leaves_the_instance, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_restore, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_into_reused_buffer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_stream_same_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_copy_then_finish, setup, teardown),
        cmocka_unit_test_setup_teardown(test_iter_park_unpark, setup, teardown),
        cmocka_unit_test_setup_teardown(test_records_stored_packed_snapshots_plain, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_restart_record, setup, teardown),
        cmocka_unit_test_setup_teardown(test_undecodable_command, setup, teardown),
        cmocka_unit_test_setup_teardown(test_indexes_follow_every_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kept_file_without_indexes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
