/* Unit tests for command.c: round trips and rejection of damaged input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "command.h"
#include "registry/error.h"

static void test_round_trip(void **state)
{
    (void)state;
    struct command in = {CMD_REGISTER, json_pack("{s:{s:s, s:i}}", "Service", "ID", "web-1",
                                                 "Port", 8080)};
    void *buf;
    size_t len;
    assert_int_equal(cmd_encode(&in, malloc, &buf, &len), 0);
    assert_true(len > 2);
    assert_int_equal(len % 8, 0); /* libraft 0.15 reads unpadded entries wrongly */
    assert_int_equal(((unsigned char *)buf)[0], CMD_FORMAT_VERSION);
    assert_int_equal(((unsigned char *)buf)[1], CMD_REGISTER);

    struct command out;
    assert_int_equal(cmd_decode(buf, len, &out), 0);
    assert_int_equal(out.op, CMD_REGISTER);
    assert_true(json_equal(in.args, out.args));
    assert_string_equal(cmd_op_name(out.op), "register");
    cmd_fini(&out);
    cmd_fini(&in);
    free(buf);
}

static void test_encode_rejects(void **state)
{
    (void)state;
    void *buf;
    size_t len;
    struct command bad_op = {(enum cmd_op)99, json_object()};
    assert_int_equal(cmd_encode(&bad_op, malloc, &buf, &len), REG_EINVAL);
    cmd_fini(&bad_op);
    struct command not_obj = {CMD_DEREGISTER, json_array()};
    assert_int_equal(cmd_encode(&not_obj, malloc, &buf, &len), REG_EINVAL);
    cmd_fini(&not_obj);
}

static void test_decode_rejects(void **state)
{
    (void)state;
    struct command out;
    const unsigned char wrong_version[] = {9, CMD_REGISTER, '{', '}'};
    const unsigned char unknown_op[] = {CMD_FORMAT_VERSION, 77, '{', '}'};
    const unsigned char not_json[] = {CMD_FORMAT_VERSION, CMD_REGISTER, '{', 'x'};
    const unsigned char array[] = {CMD_FORMAT_VERSION, CMD_REGISTER, '[', ']'};
    const unsigned char dup[] = "\x01\x02{\"a\":1,\"a\":2}";
    assert_int_equal(cmd_decode(wrong_version, sizeof(wrong_version), &out), REG_EINVAL);
    assert_int_equal(cmd_decode(unknown_op, sizeof(unknown_op), &out), REG_EINVAL);
    assert_int_equal(cmd_decode(not_json, sizeof(not_json), &out), REG_EINVAL);
    assert_int_equal(cmd_decode(array, sizeof(array), &out), REG_EINVAL);
    assert_int_equal(cmd_decode(dup, sizeof(dup) - 1, &out), REG_EINVAL);
    assert_int_equal(cmd_decode("", 0, &out), REG_EINVAL);
    assert_null(out.args);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_encode_rejects),
        cmocka_unit_test(test_decode_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
