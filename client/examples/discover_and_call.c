/*
 * discover_and_call — a small libregistry program: watch a service, and send
 * HTTP GET requests to its passing instances through a resilient call: the
 * latency-aware balancer picks, each attempt gets a time limit from the
 * call's deadline, failures are retried on another instance with backoff
 * and within the service's retry budget, and circuit breakers keep sick
 * instances out. Prints one line per request and a summary.
 *
 *   discover_and_call [-a REGISTRY_ADDRS] [-n REQUESTS] SERVICE [PATH]
 *
 * The watcher runs in REG_WATCH_LOOP mode and the call is driven step by
 * step (reg_call_begin / attempt / report / end) from this program's poll()
 * loop, so the balancer is updated on this thread between requests and
 * backoffs are waits in the loop — the way an event-driven program would do
 * it. A blocking program would call reg_call() with an attempt function.
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
#include <registry/resilience.h>

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

/* One GET within timeout_ms: the verdict for the resilient call. Refused
 * connections and 503 are retryable; so are timeouts, as GET is idempotent. */
static enum reg_outcome http_get(const struct reg_endpoint *e, const char *path,
                                 uint64_t timeout_ms)
{
    char port[8], req[512], resp[512];
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    snprintf(port, sizeof(port), "%d", e->port);
    if (getaddrinfo(e->address, port, &hints, &ai) != 0)
        return REG_OUTCOME_RETRYABLE;
    int fd = socket(ai->ai_family, SOCK_STREAM, 0);
    enum reg_outcome o = REG_OUTCOME_RETRYABLE;
    struct timeval tv = {(time_t)(timeout_ms / 1000), (suseconds_t)(timeout_ms % 1000) * 1000};
    if (fd >= 0) { /* a simple bound: each of connect, send and receive gets the limit */
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    }
    if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
        int len =
            snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
                     path, e->address);
        ssize_t got;
        if (write(fd, req, (size_t)len) == len && (got = read(fd, resp, sizeof(resp) - 1)) > 12) {
            resp[got] = '\0';
            int status = atoi(resp + 9);
            /* a 4xx is an answer (the instance is fine); a 5xx is worth another try */
            o = status >= 500 ? REG_OUTCOME_RETRYABLE : REG_OUTCOME_SUCCESS;
        }
    }
    if (fd >= 0)
        close(fd);
    freeaddrinfo(ai);
    return o;
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
    struct reg_policy *policy;
    struct reg_watch *w;
    struct reg_balancer_options o;
    struct reg_policy_options po;
    reg_balancer_defaults(&o, REG_LATENCY);
    o.eject_after = 0; /* the policy's instance breakers eject */
    reg_policy_defaults(&po);
    po.attempt_timeout_ms = 2000;
    if (reg_client_new(&c, addrs) != 0 || reg_balancer_new(&o, &b) != 0 ||
        reg_policy_new(&po, b, &policy) != 0 ||
        reg_watch_new(c, service, NULL, true, "30s", REG_WATCH_LOOP, on_change, b, &w) != 0) {
        fprintf(stderr, "discover_and_call: cannot start\n");
        return 1;
    }
    struct pollfd p = {reg_watch_fd(w), POLLIN, 0};
    if (poll(&p, 1, 5000) > 0) /* the first list */
        reg_watch_dispatch(w);
    long ok = 0, failed = 0;
    for (long i = 0; i < requests; i++) {
        struct reg_call *call;
        int rc = reg_call_begin(policy, &call); /* REG_EOPEN, REG_EBULKHEAD: fail fast */
        struct reg_endpoint e = {.id = "-"};
        double t0 = now_us();
        while (rc == 0) {
            uint64_t timeout_ms, backoff_ms;
            bool retry;
            if (reg_call_attempt(call, &e, &timeout_ms) != 0)
                break; /* the deadline, or no instance: reg_call_end says which */
            double a0 = now_us();
            enum reg_outcome verdict = http_get(&e, path, timeout_ms);
            reg_call_report(call, verdict, (uint64_t)(now_us() - a0), &retry, &backoff_ms);
            if (!retry)
                break;
            /* wait out the backoff in the loop, still serving the watcher */
            if (poll(&p, 1, (int)backoff_ms) > 0)
                reg_watch_dispatch(w);
        }
        unsigned attempts = rc == 0 ? reg_call_attempts(call) : 0;
        if (rc == 0)
            rc = reg_call_end(call);
        printf("%s %s:%d %s %.0f us %u attempt%s\n", e.id, e.address, e.port,
               rc == 0 ? "ok" : reg_strerror(rc), now_us() - t0, attempts,
               attempts == 1 ? "" : "s");
        rc == 0 ? ok++ : failed++;
        if (poll(&p, 1, 0) > 0) /* changes, between requests */
            reg_watch_dispatch(w);
    }
    struct reg_policy_stats st;
    reg_policy_stats(policy, &st);
    fprintf(stderr,
            "discover_and_call: %ld ok, %ld failed; %llu attempts, %llu retries, "
            "%llu instance breaker(s) opened\n",
            ok, failed, (unsigned long long)st.attempts, (unsigned long long)st.retries,
            (unsigned long long)st.instance_opened);
    reg_watch_free(w);
    reg_policy_free(policy);
    reg_balancer_free(b);
    reg_client_free(c);
    return failed ? 1 : 0;
}
