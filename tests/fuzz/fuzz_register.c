/*
 * fuzz_register — libFuzzer target for the registration body decoder
 * (PUT /v1/agent/service/register and the catalog's: http_build_registration,
 * with the check decoders): bytes -> JSON (as http_body_json reads it) ->
 * the instance and check records, or a 400. The first byte's low bits pick
 * agent or catalog checks and whether script checks are enabled. What it
 * accepts must encode and decode as a CMD_REGISTER unchanged (it goes
 * through the Raft log that way). See fuzz_dns_query.c for the build modes.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "command.h"
#include "http_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct http_server srv; /* only its options are read */
    static struct http_req r;
    uint8_t mode = size > 0 ? data[0] : 0;
    json_error_t jerr;
    json_t *body = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(body)) {
        json_decref(body);
        return 0;
    }
    srv.opt.node = "node-1";
    srv.opt.node_addr = "127.0.0.1";
    srv.opt.datacenter = "dc1";
    srv.opt.enable_script_checks = mode & 2;
    memset(&r, 0, sizeof(r));
    r.srv = &srv;
    json_t *meta = json_pack("{s:s}", "rack", "r1");
    struct http_node node = {"node-1", "127.0.0.1", meta, NULL};
    json_t *svc = NULL, *checks = NULL;
    int rc = http_build_registration(&r, body, &node, mode & 1, &svc, &checks);
    if (rc != 0) {
        if ((r.status != 400 && r.status != 500) || r.errmsg[0] == '\0' || svc || checks)
            __builtin_trap();
        json_decref(meta);
        json_decref(body);
        return 0;
    }
    if (!json_is_string(json_object_get(svc, "ID")) ||
        !json_is_string(json_object_get(svc, "Service")) || !json_is_array(checks))
        __builtin_trap();
    struct command cmd = {CMD_REGISTER,
                          json_pack("{s:o, s:o, s:b}", "Service", svc, "Checks", checks,
                                    "ReplaceChecks", 0)};
    void *buf = NULL;
    size_t len = 0;
    if (cmd.args != NULL && cmd_encode(&cmd, malloc, &buf, &len) == 0) {
        struct command back = {0};
        if (cmd_decode(buf, len, &back) != 0 || back.op != cmd.op ||
            !json_equal(back.args, cmd.args))
            __builtin_trap();
        cmd_fini(&back);
        free(buf);
    }
    cmd_fini(&cmd);
    json_decref(meta);
    json_decref(body);
    return 0;
}
