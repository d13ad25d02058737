/* Links against the installed libregistry-dev through pkg-config (CI runs
 * it after installing the Debian packages): the public headers compile on
 * their own and the library resolves. */
#include <stdio.h>

#include <registry/balancer.h>
#include <registry/registry.h>
#include <registry/resilience.h>

int main(void)
{
    struct reg_client *c;
    struct reg_balancer *b;
    struct reg_policy *p;
    if (reg_client_new(&c, "127.0.0.1:1") != 0 || reg_balancer_new(NULL, &b) != 0 ||
        reg_policy_new(NULL, b, &p) != 0)
        return 1;
    printf("libregistry: %s\n", reg_strerror(REG_ECONNECT));
    reg_policy_free(p);
    reg_balancer_free(b);
    reg_client_free(c);
    return 0;
}
