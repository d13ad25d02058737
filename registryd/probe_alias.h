/*
 * probe_alias.h — Consul's alias check: the status of another service
 * instance (AliasService: its checks and its node's) or of a node
 * (AliasNode: its node-level checks), read from the store: the worst of
 * them (maintenance counts as critical), passing when there are none,
 * critical when the aliased service does not exist. Evaluated every second
 * by the checker (Consul follows the aliased checks with a blocking query).
 */
#ifndef REGISTRYD_PROBE_ALIAS_H
#define REGISTRYD_PROBE_ALIAS_H

#include <jansson.h>
#include <stddef.h>

struct event_base;
struct store;
struct probe_alias;

/* status: 0 passing, 1 warning, 2 critical; output borrowed for the call. */
typedef void (*probe_alias_cb)(void *arg, int status, const char *output);

int probe_alias_start(struct event_base *base, struct store *store, json_t *def,
                      probe_alias_cb cb, void *arg, struct probe_alias **out, char *err,
                      size_t errlen);
void probe_alias_free(struct probe_alias *a);

#endif
