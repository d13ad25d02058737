/*
 * probe_script.h — Consul's script check (Args): run the program with its
 * arguments (no shell), its stdout and stderr together as the output (the
 * first 4 KiB). Exit 0 is passing, 1 warning, anything else critical; past
 * the timeout the process group is killed and the check is critical.
 * Only when enable_script_checks is set (probe.c refuses otherwise). Runs on
 * the checker's loop; the child is reaped without blocking it.
 */
#ifndef REGISTRYD_PROBE_SCRIPT_H
#define REGISTRYD_PROBE_SCRIPT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct probe_script;

/* status: 0 passing, 1 warning, 2 critical; output borrowed for the call. */
typedef void (*probe_script_cb)(void *arg, int status, const char *output);

/* args: a JSON array of strings (borrowed). 0 and *out, or -1 with err. The
 * callback runs once, later, unless probe_script_free (which kills). */
int probe_script_start(struct event_base *base, json_t *args, uint64_t timeout_ms,
                       probe_script_cb cb, void *arg, struct probe_script **out, char *err,
                       size_t errlen);
void probe_script_free(struct probe_script *s);

#endif
