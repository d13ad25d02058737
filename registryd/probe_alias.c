/*
 * probe_alias.c — see probe_alias.h. The store is read at once (an MVCC read
 * transaction: never waits for the writer); the answer is delivered from an
 * event, so the callback never runs inside probe_alias_start.
 */
#include "probe_alias.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "store.h"

struct probe_alias {
    struct event *deliver;
    int status;
    char output[300];
    probe_alias_cb cb;
    void *arg;
};

void probe_alias_free(struct probe_alias *a)
{
    if (a == NULL)
        return;
    if (a->deliver)
        event_free(a->deliver);
    free(a);
}

static void on_deliver(evutil_socket_t fd, short what, void *arg)
{
    struct probe_alias *a = arg;
    (void)fd;
    (void)what;
    a->cb(a->arg, a->status, a->output); /* may free a */
}

static int worst(json_t *checks, const char *node_only)
{
    int w = 0;
    size_t i;
    json_t *c;
    json_array_foreach(checks, i, c)
    {
        const char *sid = json_string_value(json_object_get(c, "ServiceID"));
        const char *node = json_string_value(json_object_get(c, "Node"));
        if (node_only != NULL &&
            ((sid && *sid) || node == NULL || strcmp(node, node_only) != 0))
            continue;
        const char *st = json_string_value(json_object_get(c, "Status"));
        int v = st && strcmp(st, "passing") == 0 ? 0 : st && strcmp(st, "warning") == 0 ? 1 : 2;
        if (v > w)
            w = v;
    }
    return w;
}

struct node_checks {
    const char *node;
    json_t *out;
};

static int collect(json_t *check, void *arg)
{
    struct node_checks *n = arg;
    json_array_append(n->out, check);
    return 0;
}

int probe_alias_start(struct event_base *base, struct store *store, json_t *def,
                      probe_alias_cb cb, void *arg, struct probe_alias **out, char *err,
                      size_t errlen)
{
    const char *svc = json_string_value(json_object_get(def, "AliasService"));
    const char *node = json_string_value(json_object_get(def, "AliasNode"));
    struct store_read *rd;
    *out = NULL;
    struct probe_alias *a = calloc(1, sizeof(*a));
    if (a == NULL || store == NULL || store_read_begin(store, &rd) != 0) {
        free(a);
        snprintf(err, errlen, "alias: the store cannot be read");
        return -1;
    }
    a->cb = cb;
    a->arg = arg;
    json_t *checks = NULL;
    if (svc != NULL && *svc) {
        json_t *inst = NULL;
        if (store_get_instance(rd, svc, &inst) != 0) {
            a->status = 2;
            snprintf(a->output, sizeof(a->output), "Service %s could not be found", svc);
        } else if (store_instance_checks(rd, svc, &checks) == 0) {
            a->status = worst(checks, NULL);
            if (a->status == 0)
                snprintf(a->output, sizeof(a->output), "All checks passing.");
            else
                snprintf(a->output, sizeof(a->output), "Aliased service %s is %s", svc,
                         a->status == 1 ? "warning" : "critical");
        }
        json_decref(inst);
    } else {
        struct node_checks n = {node, json_array()};
        if (node != NULL && *node != '\0')
            store_each_node_check(rd, node, collect, &n);
        else
            store_each_check(rd, collect, &n);
        a->status = worst(n.out, node ? node : "");
        snprintf(a->output, sizeof(a->output), a->status == 0 ? "All checks passing."
                                                              : "Aliased node %s is failing",
                 node ? node : "");
        json_decref(n.out);
    }
    json_decref(checks);
    store_read_end(rd);
    a->deliver = evtimer_new(base, on_deliver, a);
    struct timeval now = {0, 0};
    if (a->deliver == NULL || evtimer_add(a->deliver, &now) != 0) {
        probe_alias_free(a);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    *out = a;
    return 0;
}
