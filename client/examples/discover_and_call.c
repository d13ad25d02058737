/*
 * discover_and_call — a small libregistry program: watch a service, spread
 * HTTP GET requests over its passing instances with the latency-aware
 * balancer, report each request's latency and outcome back to it, and print
 * how the requests were spread.
 *
 *   discover_and_call [-a REGISTRY_ADDRS] [-n REQUESTS] SERVICE [PATH]
 *
 * The watcher runs in REG_WATCH_LOOP mode: this program polls its fd and
 * calls reg_watch_dispatch(), so the balancer is updated on this thread,
 * between requests — the way an event-driven program would do it.
 */
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <registry/balancer.h>
#include <registry/registry.h>

static void on_change(void *arg, const struct reg_instance *list, size_t n, bool stale)
{
    reg_balancer_update(arg, list, n);
    fprintf(stderr, "discover_and_call: %zu instance(s)%s\n", n,
            stale ? " (stale: keeping the last list)" : "");
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* One GET; true on a 2xx answer. */
static bool http_get(const struct reg_endpoint *e, const char *path)
{
    char port[8], req[512], resp[512];
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    snprintf(port, sizeof(port), "%d", e->port);
    if (getaddrinfo(e->address, port, &hints, &ai) != 0)
        return false;
    int fd = socket(ai->ai_family, SOCK_STREAM, 0);
    bool ok = false;
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
        int len = snprintf(req, sizeof(req),
                           "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path,
                           e->address);
        ssize_t got;
        if (write(fd, req, (size_t)len) == len && (got = read(fd, resp, sizeof(resp) - 1)) > 12) {
            resp[got] = '\0';
            ok = strncmp(resp + 9, "2", 1) == 0;
        }
    }
    if (fd >= 0)
        close(fd);
    freeaddrinfo(ai);
    return ok;
}

int main(int argc, char **argv)
{
    const char *addrs = NULL, *path = "/";
    long requests = 100;
    int opt;
    while ((opt = getopt(argc, argv, "a:n:")) != -1) {
        if (opt == 'a')
            addrs = optarg;
        else if (opt == 'n')
            requests = atol(optarg);
        else
            return 2;
    }
    if (optind >= argc) {
        fprintf(stderr, "usage: discover_and_call [-a ADDRS] [-n N] SERVICE [PATH]\n");
        return 2;
    }
    const char *service = argv[optind];
    if (optind + 1 < argc)
        path = argv[optind + 1];

    struct reg_client *c;
    struct reg_balancer *b;
    struct reg_watch *w;
    struct reg_balancer_options o;
    reg_balancer_defaults(&o, REG_LATENCY);
    if (reg_client_new(&c, addrs) != 0 || reg_balancer_new(&o, &b) != 0 ||
        reg_watch_new(c, service, NULL, true, "30s", REG_WATCH_LOOP, on_change, b, &w) != 0) {
        fprintf(stderr, "discover_and_call: cannot start\n");
        return 1;
    }
    struct pollfd p = {reg_watch_fd(w), POLLIN, 0};
    if (poll(&p, 1, 5000) > 0) /* the first list */
        reg_watch_dispatch(w);
    long ok = 0, failed = 0;
    for (long i = 0; i < requests; i++) {
        if (poll(&p, 1, 0) > 0) /* changes, between requests */
            reg_watch_dispatch(w);
        struct reg_endpoint e;
        if (reg_balancer_pick(b, &e) != 0) {
            fprintf(stderr, "discover_and_call: no instance of %s\n", service);
            break;
        }
        reg_balancer_start(b, &e);
        double t0 = now_us();
        bool good = http_get(&e, path);
        reg_balancer_finish(b, &e, (uint64_t)(now_us() - t0), good);
        printf("%s %s:%d %s %.0f us\n", e.id, e.address, e.port, good ? "ok" : "failed",
               now_us() - t0);
        good ? ok++ : failed++;
    }
    fprintf(stderr, "discover_and_call: %ld ok, %ld failed\n", ok, failed);
    reg_watch_free(w);
    reg_balancer_free(b);
    reg_client_free(c);
    return failed ? 1 : 0;
}
