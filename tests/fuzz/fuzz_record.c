/*
 * fuzz_record.c — the record decoder (record.h): the first byte picks the
 * kind (below 0x80: instance, check, server, node by the byte mod 4; from
 * 0x80: ACL token, policy, bootstrap mark by the byte mod 3), the rest is
 * the record's JSON text, plain or packed (record.h).
 * Anything accepted must carry every field the daemon relies on; and any
 * text without a byte below 0x20 unpacks from its packed form unchanged.
 */
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256] = "";
    json_t *rec;
    if (size < 1)
        return 0;
    bool control = false;
    for (size_t i = 0; i < size; i++)
        control |= data[i] < 0x20;
    char *packed = control ? NULL : malloc(size), *back = NULL;
    if (packed != NULL) {
        size_t n = record_pack((const char *)data, size, packed);
        size_t m = record_unpacked_len(packed, n);
        if (m != size || n > size || (back = malloc(size)) == NULL)
            __builtin_trap();
        record_unpack(packed, n, back);
        if (memcmp(back, data, size) != 0)
            __builtin_trap();
        free(back);
        free(packed);
    }
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
