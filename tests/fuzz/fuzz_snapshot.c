/*
 * fuzz_snapshot.c — snapshot files (snapshot.h): whatever the bytes,
 * snap_validate answers (accepts or refuses with a reason) without crashing,
 * and what it accepts can be walked record by record.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "snapshot.h"

static int count(enum snap_table t, const void *key, uint32_t klen, const void *val, uint32_t vlen,
                 void *arg)
{
    (void)t;
    (void)key;
    (void)klen;
    (void)val;
    (void)vlen;
    (*(uint64_t *)arg)++;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    struct snap_info info;
    for (unsigned flags = 0; flags <= SNAP_LEGACY_OK; flags += SNAP_LEGACY_OK) {
        if (snap_validate(data, size, flags, &info, err, sizeof(err)) == 0) {
            uint64_t n = 0;
            if (snap_each(data, size, count, &n) != 0 || n != info.records)
                __builtin_trap(); /* validated, yet not walkable: a bug */
        } else if (strlen(err) == 0) {
            __builtin_trap(); /* refused without a reason */
        }
    }
    return 0;
}
