/*
 * hostport.c — see hostport.h.
 */
#include "hostport.h"

#include <string.h>

#include "registry/error.h"

int reg__split_hostport(const char *s, size_t len, char *host, size_t hostlen,
                        unsigned short *port)
{
    const char *end = s + len, *h = s, *colon;
    size_t hl;
    if (s == NULL || len == 0)
        return REG_EINVAL;
    if (*s == '[') {
        const char *close = memchr(s, ']', len);
        if (close == NULL || close + 1 >= end || close[1] != ':')
            return REG_EINVAL;
        h = s + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = NULL;
        for (const char *p = s; p < end; p++)
            if (*p == ':') {
                if (colon != NULL)
                    return REG_EINVAL; /* an unbracketed IPv6 address */
                colon = p;
            }
        if (colon == NULL)
            return REG_EINVAL; /* no port */
        hl = (size_t)(colon - s);
    }
    if (hl == 0 || hl >= hostlen || memchr(h, '\0', hl) != NULL)
        return REG_EINVAL;
    const char *p = colon + 1;
    if (p == end || end - p > 5)
        return REG_EINVAL;
    unsigned long n = 0;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9')
            return REG_EINVAL;
        n = n * 10 + (unsigned long)(*p - '0');
    }
    if (n == 0 || n > 65535)
        return REG_EINVAL;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (unsigned short)n;
    return 0;
}
