/* Unit tests for record.c's packed form: records pack smaller and unpack to
 * the very same text; text that is not compact JSON stays as it is; a
 * packed record decodes like its plain text; expansion is bounded. And the
 * checks of ACL token records (from the raft log and snapshots: input). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "record.h"
#include "registry/error.h"

/* As the store writes them (json_dumps, JSON_COMPACT). */
static const char *const instance_text =
    "{\"Address\":\"10.0.0.5\",\"EnableTagOverride\":false,\"ID\":\"web-5\",\"Meta\":{\"v\":"
    "\"1\"},\"Node\":\"vm\",\"NodeAddress\":\"127.0.0.1\",\"Port\":8005,\"Service\":\"web\","
    "\"Tags\":[\"v1\",\"zone-2\"],\"Weights\":{\"Passing\":1,\"Warning\":1},\"CreateIndex\":"
    "12,\"ModifyIndex\":14}";
static const char *const check_text =
    "{\"CheckID\":\"service:web-5\",\"Definition\":{\"FailuresBeforeCritical\":0,"
    "\"SuccessBeforePassing\":0,\"TTL\":\"10m0s\",\"Timeout\":\"10s\"},\"Name\":\"Service "
    "'web' check\",\"Node\":\"vm\",\"Notes\":\"\",\"Output\":\"\",\"ServiceID\":\"web-5\","
    "\"ServiceName\":\"web\",\"Status\":\"critical\",\"Type\":\"ttl\",\"CreateIndex\":12,"
    "\"ModifyIndex\":12}";

static char *roundtrip(const char *text, size_t *packed_len)
{
    size_t len = strlen(text);
    char *packed = malloc(len), *plain;
    assert_non_null(packed);
    *packed_len = record_pack(text, len, packed);
    assert_true(*packed_len <= len);
    size_t n = record_unpacked_len(packed, *packed_len);
    assert_int_equal(n, len);
    plain = calloc(1, n + 1);
    assert_non_null(plain);
    record_unpack(packed, *packed_len, plain);
    free(packed);
    return plain;
}

static void test_records_pack_smaller_and_unpack_exactly(void **state)
{
    (void)state;
    const char *texts[] = {instance_text, check_text};
    for (size_t i = 0; i < 2; i++) {
        size_t packed_len;
        char *back = roundtrip(texts[i], &packed_len);
        assert_string_equal(back, texts[i]);
        assert_true(packed_len * 2 < strlen(texts[i])); /* more than halved */
        free(back);
    }
    /* runs inside string values (escaped quotes break them) and runs that
     * overlap come back exactly too */
    const char *odd = "{\"ID\":\"a\\\",\\\"Node\\\":\\\"b\",\"Meta\":{\"x\":\"\\\",\\\"Port\\\":\"},"
                      "\"Node\":\"\",\"NodeAddress\":\"\",\"Port\":0,\"Service\":\"'\"}";
    size_t packed_len;
    char *back = roundtrip(odd, &packed_len);
    assert_string_equal(back, odd);
    free(back);
}

static void test_text_with_control_bytes_is_kept_as_it_is(void **state)
{
    (void)state;
    const char text[] = "{\"Address\":\"\x01\",\"Port\":1}";
    char out[sizeof(text)];
    size_t n = record_pack(text, sizeof(text) - 1, out);
    assert_int_equal(n, sizeof(text) - 1);
    assert_memory_equal(out, text, n);
    /* plain JSON (what snapshots carry) is its own packed form */
    assert_int_equal(record_unpacked_len("{\"a\":1}", 7), 7);
}

static void test_packed_record_decodes_like_plain(void **state)
{
    (void)state;
    const char *texts[] = {instance_text, check_text};
    enum record_kind kinds[] = {RECORD_INSTANCE, RECORD_CHECK};
    for (size_t i = 0; i < 2; i++) {
        size_t len = strlen(texts[i]);
        char *packed = malloc(len);
        size_t n = record_pack(texts[i], len, packed);
        json_t *a, *b;
        char err[200];
        assert_int_equal(record_decode(kinds[i], texts[i], len, &a, err, sizeof(err)), 0);
        assert_int_equal(record_decode(kinds[i], packed, n, &b, err, sizeof(err)), 0);
        assert_true(json_equal(a, b));
        char *ta = json_dumps(a, JSON_COMPACT), *tb = json_dumps(b, JSON_COMPACT);
        assert_string_equal(ta, tb); /* same keys in the same order */
        free(ta);
        free(tb);
        json_decref(a);
        json_decref(b);
        free(packed);
    }
}

static void test_expansion_is_bounded(void **state)
{
    (void)state;
    /* a hostile record (a snapshot's, say) of nothing but the longest run */
    size_t len = 2u << 20;
    unsigned char *bomb = malloc(len);
    assert_non_null(bomb);
    memset(bomb, 15, len);
    assert_int_equal(record_unpacked_len(bomb, len), SIZE_MAX);
    json_t *out = NULL;
    char err[200] = "";
    assert_int_equal(record_decode(RECORD_CHECK, bomb, len, &out, err, sizeof(err)), REG_EINVAL);
    assert_null(out);
    assert_non_null(strstr(err, "expands past"));
    free(bomb);
}

/* A token record with `extra` (",\"Key\":value..." or "") spliced in. */
static int token_record(const char *extra, char *err, size_t errlen)
{
    char text[1024];
    json_t *out = NULL;
    snprintf(text, sizeof(text),
             "{\"AccessorID\":\"a1\",\"Description\":\"\",\"Policies\":[],\"Local\":false,"
             "\"CreateTime\":\"2024-01-01T00:00:00Z\"%s,\"CreateIndex\":1,\"ModifyIndex\":1}",
             extra);
    int rc = record_decode(RECORD_ACL_TOKEN, text, strlen(text), &out, err, errlen);
    json_decref(out);
    return rc;
}

static void test_acl_token_records(void **state)
{
    (void)state;
    char err[200];
    static const char *const good[] = {
        "",
        ",\"ExpirationTime\":\"2024-01-01T00:01:00Z\"",
        ",\"ExpirationTime\":\"2024-01-01T02:01:00.25+02:00\"",
        ",\"ServiceIdentities\":[{\"ServiceName\":\"web\"},{\"ServiceName\":\"a_b-9\","
        "\"Datacenters\":[\"dc1\",\"dc2\"]}],\"NodeIdentities\":[{\"NodeName\":\"n1\","
        "\"Datacenter\":\"dc1\"}]",
        ",\"ServiceIdentities\":[],\"NodeIdentities\":[]",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (token_record(good[i], err, sizeof(err)) != 0)
            fail_msg("%s refused: %s", good[i], err);
    static const struct {
        const char *extra, *why;
    } bad[] = {
        {",\"ExpirationTime\":1704067260", "ExpirationTime"},
        {",\"ExpirationTime\":\"tomorrow\"", "ExpirationTime is not an RFC 3339 time"},
        {",\"ExpirationTime\":\"2024-02-30T00:00:00Z\"", "ExpirationTime"},
        {",\"ServiceIdentities\":{}", "ServiceIdentities is not an array"},
        {",\"ServiceIdentities\":[\"web\"]", "ServiceIdentities holds a non-object"},
        {",\"ServiceIdentities\":[{}]", "ServiceName missing"},
        {",\"ServiceIdentities\":[{\"ServiceName\":\"Web\"}]", "invalid ServiceName"},
        {",\"ServiceIdentities\":[{\"ServiceName\":\"web\\\" { policy = \\\"write\\\" }\"}]",
         "invalid ServiceName"},
        {",\"ServiceIdentities\":[{\"ServiceName\":\"web\",\"Datacenters\":[1]}]",
         "Datacenters holds a non-string"},
        {",\"NodeIdentities\":[{\"NodeName\":\"n1\"}]", "Datacenter missing"},
        {",\"NodeIdentities\":[{\"NodeName\":\"n1\",\"Datacenter\":\"\"}]",
         "empty Datacenter"},
        {",\"NodeIdentities\":[{\"NodeName\":\"-n1\",\"Datacenter\":\"dc1\"}]",
         "invalid NodeName"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_int_equal(token_record(bad[i].extra, err, sizeof(err)), REG_EINVAL);
        if (strstr(err, bad[i].why) == NULL)
            fail_msg("%s: \"%s\" does not say %s", bad[i].extra, err, bad[i].why);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_records_pack_smaller_and_unpack_exactly),
        cmocka_unit_test(test_text_with_control_bytes_is_kept_as_it_is),
        cmocka_unit_test(test_packed_record_decodes_like_plain),
        cmocka_unit_test(test_expansion_is_bounded),
        cmocka_unit_test(test_acl_token_records),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
