/*
 * main.c — registryd: read and check the configuration (every error before
 * anything starts), then start, run and stop one server (server.h).
 */
#include <event2/thread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "acl.h"
#include "config.h"
#include "log.h"
#include "registry/error.h"
#include "server.h"

int main(int argc, char **argv)
{
    struct conf conf = {0};
    char err[512] = "";
    int rc = conf_load(&conf, argc, argv, stdout, err, sizeof(err));
    if (rc == 0 && conf.check_only)
        rc = server_check_files(&conf, err, sizeof(err));
    if (rc == REG_EEXIT || (rc == 0 && conf.check_only)) {
        if (rc == 0)
            printf("configuration OK\n");
        conf_fini(&conf);
        return 0;
    }
    if (rc != 0) {
        fprintf(stderr, "registryd: %s\n", err);
        conf_fini(&conf);
        return 2;
    }
    log_init(conf.log_level);
    signal(SIGPIPE, SIG_IGN);
    int status = 1;
    struct server *server = NULL;
    struct acl_config acl_cfg = {
        .enabled = conf.acl_enabled,
        .default_allow = strcmp(conf.acl_default_policy, "allow") == 0,
        .initial_management = conf.acl_initial_management_token,
        .default_token = conf.acl_default_token,
        .server_token = conf.acl_server_token,
        .cluster_key = conf.cluster_key,
        .datacenter = conf.datacenter,
        .token_min_ttl_ms = conf.acl_token_min_expiration_ttl_ms,
        .token_max_ttl_ms = conf.acl_token_max_expiration_ttl_ms,
    };
    if (acl_configure(&acl_cfg) != 0)
        log_error("main", "msg=\"cannot configure ACLs\"");
    else if (evthread_use_pthreads() != 0)
        log_error("main", "msg=\"libevent threading unavailable\"");
    else if (server_start(&conf, argc, argv, &server) == 0 && server_run(server) == 0)
        status = 0;
    server_stop(server);
    if (status == 0)
        log_info("main", "msg=\"stopped\"");
    acl_shutdown();
    conf_fini(&conf);
    return status;
}
