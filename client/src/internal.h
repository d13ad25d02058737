/*
 * internal.h — what libregistry's modules share and users do not see.
 */
#ifndef REGISTRY_INTERNAL_H
#define REGISTRY_INTERNAL_H

/* Make this thread's requests return REG_ESHUTDOWN as soon as fd becomes
 * readable (-1: never). Used by the watcher thread to stop promptly. */
void reg__set_cancel_fd(int fd);

#endif
