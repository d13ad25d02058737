/*
 * filter_regex.h — the regular expressions of ?filter='s `matches`: Go's RE2
 * syntax, as Consul takes them, run in time linear in the subject.
 *
 * glibc's regexec is not: its state cache grows without bound and some
 * patterns take seconds and gigabytes on a 4 KB check output (measured:
 * ".*a[ab]{100}c" took 33 s and 570 MB). Here a pattern compiles to a
 * program of at most REGEX_MAX_INSNS instructions that a Pike VM runs over
 * the subject once: time at most program size times subject length, memory
 * three arrays of the program's size, nothing kept between calls.
 *
 * Syntax (bytes, not runes): literals; . (any byte but \n); [...] and [^...]
 * with ranges, [:alpha:] and the other POSIX classes, and escapes inside;
 * \d \D \w \W \s \S; \b \B \A \z; \n \t \r \f \v \a \xHH; a backslash
 * before any other ASCII byte but a letter or digit quotes it; ^ $; ( ) (?: ) and the flags (?i) (?m)
 * (?s) (?U), also scoped as (?i:...); | ; * + ? {n} {n,} {n,m}, each
 * optionally followed by ? (lazy: the same yes or no). Refused, as Go
 * refuses them: a repetition of a repetition (a**), a count above 1000,
 * backreferences, unknown escapes, unbalanced parentheses. Refused here
 * though Go takes them (the safe direction): \x{...}, octal escapes, \Q...\E,
 * \p classes, and programs over REGEX_MAX_INSNS (a{0,1000} among them).
 *
 * Depends on libc only.
 */
#ifndef REGISTRYD_FILTER_REGEX_H
#define REGISTRYD_FILTER_REGEX_H

#include <stdbool.h>
#include <stddef.h>

#define REGEX_MAX_LEN 256     /* bytes of a pattern */
#define REGEX_MAX_REPEAT 1000 /* largest {n,m} count, as Go */
#define REGEX_MAX_INSNS 2000  /* program size, repetitions unrolled */
#define REGEX_MAX_DEPTH 32    /* nested groups */

struct regex;

/* Compile pattern. Returns 0 and *out (free with regex_free), or REG_EINVAL
 * with a one-line reason in err. */
int regex_compile(const char *pattern, struct regex **out, char *err, size_t errlen);
void regex_free(struct regex *re);

/* Does re match anywhere in s[0..len)? false also when out of memory. */
bool regex_search(const struct regex *re, const char *s, size_t len);

#endif
