/*
 * check_target.c — CIDR lists and the decision of where a check may
 * connect (see check_target.h). IPv4-mapped IPv6 addresses are judged as
 * the IPv4 address they carry, so ::ffff:169.254.169.254 is 169.254.169.254.
 */
#include "check_target.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/http.h>

#include "config.h"
#include "registry/error.h"

struct cidr {
    int family; /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    int bits;
    char text[64];
};

struct own_addr {
    int family; /* 0: any address (a wildcard listener) */
    uint8_t addr[16];
    unsigned short port;
    char text[80];
};

#define MAX_CIDRS 64
#define MAX_OWN 8

static struct {
    struct cidr deny[MAX_CIDRS], allow[MAX_CIDRS];
    int n_deny, n_allow;
    struct own_addr own[MAX_OWN];
    int n_own;
} tgt;

static int parse_cidr(const char *item, struct cidr *c)
{
    char buf[64];
    size_t len = strlen(item);
    if (len >= sizeof(buf) || len >= sizeof(c->text))
        return REG_EINVAL;
    memcpy(buf, item, len + 1);
    char *slash = strchr(buf, '/');
    int bits = -1;
    if (slash) {
        char *end;
        *slash = '\0';
        long b = strtol(slash + 1, &end, 10);
        if (slash[1] == '\0' || *end != '\0' || b < 0 || b > 128)
            return REG_EINVAL;
        bits = (int)b;
    }
    memset(c, 0, sizeof(*c));
    if (inet_pton(AF_INET, buf, c->addr) == 1) {
        c->family = AF_INET;
        if (bits > 32)
            return REG_EINVAL;
        c->bits = bits < 0 ? 32 : bits;
    } else if (inet_pton(AF_INET6, buf, c->addr) == 1) {
        c->family = AF_INET6;
        c->bits = bits < 0 ? 128 : bits;
    } else {
        return REG_EINVAL;
    }
    memcpy(c->text, item, len + 1);
    return 0;
}

static int parse_list(const char *list, struct cidr *out, int *n, char *err, size_t errlen)
{
    *n = 0;
    if (list == NULL)
        return 0;
    for (const char *p = list; *p;) {
        size_t l = strcspn(p, ",");
        char item[80];
        snprintf(item, sizeof(item), "%.*s", (int)(l < 79 ? l : 79), p);
        /* trim blanks */
        char *s = item;
        while (*s == ' ')
            s++;
        char *e = s + strlen(s);
        while (e > s && e[-1] == ' ')
            *--e = '\0';
        if (*s != '\0') {
            struct cidr tmp;
            if (*n >= MAX_CIDRS) {
                snprintf(err, errlen, "more than %d CIDRs", MAX_CIDRS);
                return REG_EINVAL;
            }
            if (parse_cidr(s, out ? &out[*n] : &tmp) != 0) {
                snprintf(err, errlen, "\"%s\" is not an address or CIDR (A.B.C.D/N, X::/N)", s);
                return REG_EINVAL;
            }
            (*n)++;
        }
        p += l;
        if (*p == ',')
            p++;
    }
    return 0;
}

int check_target_parse_list(const char *list, char *err, size_t errlen)
{
    int n;
    return parse_list(list, NULL, &n, err, errlen);
}

void check_target_reset(void)
{
    memset(&tgt, 0, sizeof(tgt));
}

int check_target_configure(const char *deny, const char *allow, const char *const *own, char *err,
                           size_t errlen)
{
    check_target_reset();
    int rc = parse_list(deny, tgt.deny, &tgt.n_deny, err, errlen);
    if (rc == 0)
        rc = parse_list(allow, tgt.allow, &tgt.n_allow, err, errlen);
    for (int i = 0; rc == 0 && own && own[i] && tgt.n_own < MAX_OWN; i++) {
        char host[256];
        unsigned short port;
        struct own_addr *o = &tgt.own[tgt.n_own];
        if (conf_split_hostport(own[i], host, sizeof(host), &port) != 0)
            continue;
        o->port = port;
        if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0)
            o->family = 0;
        else if (inet_pton(AF_INET, host, o->addr) == 1)
            o->family = AF_INET;
        else if (inet_pton(AF_INET6, host, o->addr) == 1)
            o->family = AF_INET6;
        else
            continue;
        snprintf(o->text, sizeof(o->text), "%s", own[i]);
        tgt.n_own++;
    }
    if (rc != 0)
        check_target_reset();
    return rc;
}

static bool in_cidr(const struct cidr *c, int family, const uint8_t *addr)
{
    if (c->family != family)
        return false;
    int full = c->bits / 8, rest = c->bits % 8;
    if (memcmp(c->addr, addr, (size_t)full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (c->addr[full] & mask) == (addr[full] & mask);
}

static int judge(int family, const uint8_t *addr, unsigned short port, char *why, size_t len)
{
    char text[INET6_ADDRSTRLEN];
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (family == AF_INET6 && memcmp(addr, mapped, 12) == 0) {
        family = AF_INET;
        addr += 12;
    }
    /* connecting to the unspecified address (0.0.0.0, "0", ::) reaches this
     * host's loopback: judged as that */
    static const uint8_t zero[16], lo4[4] = {127, 0, 0, 1}, lo6[16] = {[15] = 1};
    if (memcmp(addr, zero, family == AF_INET ? 4 : 16) == 0)
        addr = family == AF_INET ? lo4 : lo6;
    inet_ntop(family, addr, text, sizeof(text));
    for (int i = 0; i < tgt.n_own; i++) {
        const struct own_addr *o = &tgt.own[i];
        if (port == o->port &&
            (o->family == 0 ||
             (o->family == family && memcmp(o->addr, addr, family == AF_INET ? 4 : 16) == 0))) {
            snprintf(why, len, "%s port %u is registryd's own listener (%s)", text, port,
                     o->text);
            return REG_EINVAL;
        }
    }
    for (int i = 0; i < tgt.n_deny; i++) {
        if (in_cidr(&tgt.deny[i], family, addr)) {
            snprintf(why, len, "%s is denied by check_deny_cidrs (%s)", text, tgt.deny[i].text);
            return REG_EINVAL;
        }
    }
    if (tgt.n_allow == 0)
        return 0;
    for (int i = 0; i < tgt.n_allow; i++)
        if (in_cidr(&tgt.allow[i], family, addr))
            return 0;
    snprintf(why, len, "%s is not in check_allow_cidrs", text);
    return REG_EINVAL;
}

int check_target_sockaddr(const struct sockaddr *sa, char *why, size_t len)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return judge(AF_INET, (const uint8_t *)&in->sin_addr, ntohs(in->sin_port), why, len);
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        return judge(AF_INET6, (const uint8_t *)&in6->sin6_addr, ntohs(in6->sin6_port), why,
                     len);
    }
    snprintf(why, len, "not an IP address");
    return REG_EINVAL;
}

/* A host as written: literal addresses and localhost are judged now. */
static int judge_host(const char *host, unsigned short port, char *why, size_t len)
{
    uint8_t addr[16];
    char h[256];
    snprintf(h, sizeof(h), "%s", host);
    if (h[0] == '[') {
        memmove(h, h + 1, strlen(h));
        h[strcspn(h, "]")] = '\0';
    }
    if (inet_pton(AF_INET, h, addr) == 1)
        return judge(AF_INET, addr, port, why, len);
    if (inet_pton(AF_INET6, h, addr) == 1)
        return judge(AF_INET6, addr, port, why, len);
    if (strcasecmp(h, "localhost") == 0 || strcasecmp(h, "localhost.") == 0) {
        static const uint8_t v6[16] = {[15] = 1};
        int rc = judge(AF_INET6, v6, port, why, len);
        if (rc == 0 && inet_pton(AF_INET, "127.0.0.1", addr) == 1)
            rc = judge(AF_INET, addr, port, why, len);
        return rc;
    }
    return 0; /* a name: judged when the probe resolves it */
}

int check_target_spec(const char *kind, const char *spec, char *why, size_t len)
{
    if (spec == NULL || *spec == '\0')
        return 0;
    if (strcmp(kind, "HTTP") == 0) {
        struct evhttp_uri *uri = evhttp_uri_parse(spec);
        const char *host = uri ? evhttp_uri_get_host(uri) : NULL;
        int rc = 0;
        if (host != NULL) {
            const char *scheme = evhttp_uri_get_scheme(uri);
            int port = evhttp_uri_get_port(uri);
            if (port < 0)
                port = scheme && strcasecmp(scheme, "https") == 0 ? 443 : 80;
            rc = judge_host(host, (unsigned short)port, why, len);
        }
        if (uri)
            evhttp_uri_free(uri);
        return rc; /* an unparsable URL is the prober's "invalid URL" */
    }
    char buf[300], host[256];
    unsigned short port;
    snprintf(buf, sizeof(buf), "%s", spec);
    buf[strcspn(buf, "/")] = '\0'; /* GRPC: HOST:PORT/SERVICE */
    if (conf_split_hostport(buf, host, sizeof(host), &port) != 0)
        return 0; /* the prober says what is wrong with it */
    return judge_host(host, port, why, len);
}
