/*
 * filter.h — Consul's ?filter= expression language (go-bexpr), compiled
 * against a schema of the selectors an endpoint documents and evaluated on
 * the JSON objects the endpoint renders.
 *
 *   expr     := or
 *   or       := and ("or" and)*
 *   and      := not ("and" not)*
 *   not      := "not" not | "(" or ")" | match
 *   match    := Selector ("==" | "!=" | "contains" | "not contains" |
 *                         "matches" | "not matches") Value
 *             | Selector "is" ["not"] "empty"
 *             | Value ("in" | "not in") Selector
 *   Selector := Ident ("." Ident | "." Digits | "[" String "]")*
 *   Value    := String ("..." or `...`) | Number | a bare selector-like word
 *
 * Selectors are checked at compile time against the schema (unknown
 * selectors and operators a field's type does not support are errors, as in
 * Consul); values are coerced to the field's type (Port == "x" is an error).
 * A selector that steps through an array of objects (Checks.Status) matches
 * when any element does. A key missing from a map answers as go-bexpr does:
 * false for ==, in, matches, is not empty; true for their negations.
 * `matches` takes Go's RE2 syntax, as Consul does, and runs in time linear
 * in the value (filter_regex.h).
 *
 * Depends on jansson and libc only, so that the fuzz target links it alone.
 */
#ifndef REGISTRYD_FILTER_H
#define REGISTRYD_FILTER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define FILTER_MAX_LEN 4096 /* longest expression accepted, bytes */

/* A schema entry: a selector pattern ("*" matches any one map key) and the
 * type found there:
 *   's' string, 'i' integer, 'b' boolean,
 *   'L' list of strings, 'M' map of string to string (keys: `in`),
 *   'O' object or map of objects (only `is empty` on itself). */
struct filter_field {
    const char *path;
    char type;
};

struct filter;

/*
 * Compile text against schema (borrowed; must outlive the filter, a static
 * table). Returns 0 and *out (free with filter_free), or REG_EINVAL with a
 * one-line reason in err.
 */
int filter_compile(const char *text, const struct filter_field *schema, size_t n_fields,
                   struct filter **out, char *err, size_t errlen);
void filter_free(struct filter *f);

/* Does obj (borrowed) match? */
bool filter_match(const struct filter *f, json_t *obj);

#endif
