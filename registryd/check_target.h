/*
 * check_target.h — where health checks may go (check_deny_cidrs,
 * check_allow_cidrs), so that a check cannot be aimed at the cloud metadata
 * service (169.254.169.254), link-local neighbours or registryd's own
 * listeners: the daemon's own API, DNS and Raft ports are refused whatever
 * the lists say.
 *
 * Enforced twice: at registration (an address given literally, or
 * localhost, is refused with a 400 that says why) and when the probe
 * connects, on the address the name resolved to then (a name may resolve
 * elsewhere later); the probe connects to exactly the address it checked.
 *
 * The lists are set once at start (check_target_configure), before the
 * front end and the checker's threads read them.
 */
#ifndef REGISTRYD_CHECK_TARGET_H
#define REGISTRYD_CHECK_TARGET_H

#include "common.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#define CHECK_TARGET_DEFAULT_DENY "169.254.0.0/16,fe80::/10"

/*
 * deny/allow: comma-separated CIDRs (NULL or "": none; an empty allow list
 * allows everything not denied). own: NULL-terminated list of this server's
 * listen addresses (HOST:PORT; a wildcard host denies that port on every
 * address). Returns 0, or REG_EINVAL with the bad item in err, or REG_ENOMEM.
 */
int check_target_configure(const char *deny, const char *allow, const char *const *own,
                           char *err, size_t errlen) REG_MUSTCHECK;
/* Validate a CIDR list without keeping it (config). 0 or REG_EINVAL + err. */
int check_target_parse_list(const char *list, char *err, size_t errlen) REG_MUSTCHECK;
void check_target_reset(void);

/* May a probe connect to sa? 0, or REG_EINVAL with the reason in why. */
int check_target_sockaddr(const struct sockaddr *sa, char *why, size_t len) REG_MUSTCHECK;

/*
 * At registration: a check's target as written (kind "HTTP" takes a URL,
 * "TCP", "UDP", "GRPC", "H2PING" take HOST:PORT[/...]). Literal addresses
 * and localhost are checked now; other names when the probe resolves them.
 * 0, or REG_EINVAL with the reason in why.
 */
int check_target_spec(const char *kind, const char *spec, char *why, size_t len) REG_MUSTCHECK;

#endif
