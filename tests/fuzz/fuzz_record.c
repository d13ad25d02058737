/*
 * fuzz_record.c — the record decoder (record.h): the first byte picks the
 * kind (below 0x80: instance, check, server, node by the byte mod 4; from
 * 0x80: ACL token, policy, bootstrap mark by the byte mod 3), the rest is
 * the record's JSON text.
 * Anything accepted must carry every field the daemon relies on.
 */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256] = "";
    json_t *rec;
    if (size < 1)
        return 0;
    enum record_kind kind =
        (enum record_kind)(data[0] < 0x80 ? data[0] % 4 : RECORD_ACL_TOKEN + data[0] % 3);
    if (record_decode(kind, data + 1, size - 1, &rec, err, sizeof(err)) != 0) {
        if (err[0] == '\0')
            __builtin_trap();
        return 0;
    }
    static const char *const needed[7][3] = {{"ID", "Service", "Address"},
                                             {"CheckID", "ServiceID", "Status"},
                                             {"Raft", "HTTP", NULL},
                                             {"Node", "NodeAddress", NULL},
                                             {"AccessorID", "Description", "CreateTime"},
                                             {"ID", "Name", "Rules"},
                                             {NULL, NULL, NULL}};
    for (int i = 0; i < 3; i++)
        if (needed[kind][i] && !json_is_string(json_object_get(rec, needed[kind][i])))
            __builtin_trap();
    json_decref(rec);
    return 0;
}
