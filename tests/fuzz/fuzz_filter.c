/*
 * fuzz_filter — libFuzzer target for the ?filter= expression parser
 * (filter.c): compile any bytes against a schema with every field type and,
 * when they compile, evaluate the filter on a rendered health entry (maps,
 * lists, arrays of objects, integers, booleans). Built with
 * -fsanitize=fuzzer when REGISTRY_FUZZ is on; otherwise replay_main.c
 * replays the corpus and bounded deterministic mutations as a test.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "filter.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct filter_field schema[] = {
    {"Node.Node", 's'},        {"Node.Meta", 'M'},          {"Node.Meta.*", 's'},
    {"Service.Service", 's'},  {"Service.Tags", 'L'},       {"Service.Port", 'i'},
    {"Service.EnableTagOverride", 'b'}, {"Service.Weights", 'O'},
    {"Service.Weights.Passing", 'i'},   {"Checks", 'O'},    {"Checks.Status", 's'},
    {"Checks.ServiceTags", 'L'},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static json_t *entry;
    if (entry == NULL)
        entry = json_loads("{\"Node\":{\"Node\":\"n1\",\"Meta\":{\"rack\":\"r1\"}},"
                           "\"Service\":{\"Service\":\"web\",\"Tags\":[\"v1\",\"blue\"],"
                           "\"Port\":8080,\"EnableTagOverride\":false,"
                           "\"Weights\":{\"Passing\":1,\"Warning\":1}},"
                           "\"Checks\":[{\"Status\":\"passing\",\"ServiceTags\":[]},"
                           "{\"Status\":\"critical\",\"ServiceTags\":[\"v1\"]}]}",
                           0, NULL);
    char *text = malloc(size + 1);
    if (text == NULL || entry == NULL) {
        free(text);
        return 0;
    }
    memcpy(text, data, size);
    text[size] = '\0';
    struct filter *f;
    char err[200];
    if (filter_compile(text, schema, sizeof(schema) / sizeof(schema[0]), &f, err,
                       sizeof(err)) == 0) {
        (void)filter_match(f, entry);
        filter_free(f);
    } else if (err[0] == '\0') {
        abort(); /* a refusal always says why */
    }
    free(text);
    return 0;
}
