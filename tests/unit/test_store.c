/* Unit tests for store.c: the apply path, indexes, snapshots. Real LMDB in a
 * temporary directory. */
#define _GNU_SOURCE /* memmem */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "command.h"
#include "registry/error.h"
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
    assert_int_equal(chg.index, 1);
    assert_int_equal(chg.n, 1);
    assert_string_equal(chg.names[0], "web");
    assert_int_equal(apply(f->s, CMD_REGISTER, reg_args("db-1", "db", NULL), &chg), 0);
    assert_int_equal(chg.index, 2);

    struct store_read *r;
    assert_int_equal(store_read_begin(f->s, &r), 0);
    assert_int_equal(store_index(r), 2);
    assert_int_equal(store_name_index(r, "web"), 1);
    assert_int_equal(store_name_index(r, "db"), 2);
    json_t *inst;
    assert_int_equal(store_get_instance(r, "web-1", &inst), 0);
    assert_int_equal(json_integer_value(json_object_get(inst, "CreateIndex")), 1);
    json_decref(inst);
    json_t *checks;
    assert_int_equal(store_instance_checks(r, "web-1", &checks), 0);
    assert_int_equal(json_array_size(checks), 1);
    json_decref(checks);
    store_read_end(r);
    assert_int_equal(count_instances(f->s, "web"), 1);
    assert_int_equal(count_instances(f->s, NULL), 2);
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
    assert_int_equal(chg.index, 2);
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
    assert_int_equal(store_index(r), 2);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_register_and_indexes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_reset_renew, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_update_only_on_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reregister_keeps_status_and_moves_name, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_maintenance_and_deregister, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_restore, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_into_reused_buffer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_stream_same_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_record, setup, teardown),
        cmocka_unit_test_setup_teardown(test_undecodable_command, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
