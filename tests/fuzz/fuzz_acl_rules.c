/*
 * fuzz_acl_rules — libFuzzer target for the ACL rule language (acl_rules.c):
 * any bytes as policy rules (HCL or JSON form). A parse either succeeds or
 * says line and column; the rules it produced are then decided on. Built
 * with -fsanitize=fuzzer when REGISTRY_FUZZ is on; otherwise replay_main.c
 * replays the corpus and bounded mutations as an ordinary test.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "acl_rules.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct acl_rules r = {0};
    char err[256] = "";
    int rc = acl_rules_parse((const char *)data, size, &r, err, sizeof(err));
    if (rc != 0 && strncmp(err, "line ", 5) != 0 && strncmp(err, "byte ", 5) != 0)
        abort(); /* every error says where */
    for (int res = 0; res < ACL_RES_COUNT; res++) {
        (void)acl_rules_decide(&r, (enum acl_resource)res, "web");
        (void)acl_rules_decide(&r, (enum acl_resource)res, "");
    }
    for (size_t i = 0; i < r.n; i++)
        if (r.v[i].access != ACL_READ && r.v[i].access != ACL_WRITE && r.v[i].access != ACL_DENY)
            abort();
    acl_rules_fini(&r);
    return 0;
}
