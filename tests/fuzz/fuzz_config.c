/*
 * fuzz_config — libFuzzer target for the YAML configuration loader: the
 * defaults of a --dev server, then the input as the --config file
 * (conf_load_yaml_buffer). Any input gets 0 or a "fuzz.yaml:line:col:"
 * message; what was set must survive conf_diff and conf_fini. See
 * fuzz_dns_query.c for the build modes.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "registry/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void count(const char *key, void *arg)
{
    (void)key;
    (*(size_t *)arg)++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char *argv[] = {"registryd", "--dev", NULL};
    struct conf c, d;
    char err[512] = "";
    if (conf_load(&c, 2, argv, stderr, err, sizeof(err)) != 0 ||
        conf_load(&d, 2, argv, stderr, err, sizeof(err)) != 0)
        __builtin_trap();
    int rc = conf_load_yaml_buffer(&c, "fuzz.yaml", data, size, err, sizeof(err));
    if (rc != 0 && (rc != REG_ECONFIG && rc != REG_ENOMEM))
        __builtin_trap();
    if (rc == REG_ECONFIG && strncmp(err, "fuzz.yaml:", 10) != 0)
        __builtin_trap();
    size_t changed = 0;
    conf_diff(&c, &d, count, &changed);
    conf_fini(&c);
    conf_fini(&d);
    return 0;
}
