/*
 * internal.h — what libregistry's modules share and users do not see.
 */
#ifndef REGISTRY_INTERNAL_H
#define REGISTRY_INTERNAL_H

/* Make this thread's requests return REG_ESHUTDOWN as soon as fd becomes
 * readable (-1: never). Used by the watcher thread to stop promptly. */
void reg__set_cancel_fd(int fd);

/* reg_balancer_pick that never returns an instance for which skip(arg, id)
 * is true (called with the balancer's lock held: it must not call back into
 * the balancer). REG_ENOTFOUND when every instance is skipped. */
struct reg_balancer;
struct reg_endpoint;
typedef _Bool (*reg__skip_fn)(void *arg, const char *id);
int reg__balancer_pick_filtered(struct reg_balancer *b, struct reg_endpoint *out,
                                reg__skip_fn skip, void *arg);

#endif
