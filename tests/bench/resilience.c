/*
 * resilience_bench — libregistry's resilient call (registry/resilience.h)
 * against a sick fleet on loopback, driven by tests/bench/resilience.
 *
 * Sixteen loopback ports served by this process (one libevent thread):
 *   fleet:   5 healthy, 1 refusing (bound, not listening), 1 black hole
 *            (listening, never accepting nor answering), 1 failing half its
 *            requests with 503;
 *   outage:  8 answering 503 to everything.
 * Runs, each at a fixed request rate (RATE/s for DURATION s, open loop: a
 * request starts at its scheduled time or as soon as a worker is free):
 *   healthy5   plain round-robin over the five healthy instances only
 *   plain      plain round-robin over the fleet, 1 s timeout, no retries
 *   resilient  reg_call over the fleet (defaults but a 250 ms attempt timeout)
 *   outage     reg_call over the outage set, defaults
 *   outage-budget-only   the same with the service breaker off: the retry
 *              budget alone
 * and prints for each: success rate, p50/p99 latency, attempts per call.
 * Then the cost of the bookkeeping: ns per begin+attempt+report+end of a
 * successful call, against a bare pick+start+finish, single-threaded.
 *
 * Every loop is bounded by count and by time.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "http_call.h"
#include "registry/balancer.h"
#include "registry/resilience.h"

#define WORKERS 128

enum mode { OK, REFUSE, BLACKHOLE, FLAKY, FAIL };

static const char ok_reply[] =
    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
static const char fail_reply[] =
    "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\nsick";
static unsigned flaky_counter;

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* ---- the backends ------------------------------------------------------- */

static void on_write(struct bufferevent *bev, void *arg)
{
    (void)arg;
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        bufferevent_free(bev);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    enum mode m = (enum mode)(intptr_t)arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (evbuffer_search(in, "\r\n\r\n", 4, NULL).pos < 0)
        return;
    evbuffer_drain(in, evbuffer_get_length(in));
    bool fail = m == FAIL || (m == FLAKY && (flaky_counter++ & 1));
    bufferevent_setcb(bev, NULL, on_write, NULL, NULL);
    if (fail)
        bufferevent_write(bev, fail_reply, sizeof(fail_reply) - 1);
    else
        bufferevent_write(bev, ok_reply, sizeof(ok_reply) - 1);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)what;
    (void)arg;
    bufferevent_free(bev);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
                      void *arg)
{
    (void)sa;
    (void)len;
    struct bufferevent *bev =
        bufferevent_socket_new(evconnlistener_get_base(l), fd, BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL) {
        evutil_closesocket(fd);
        return;
    }
    bufferevent_setcb(bev, on_read, NULL, on_event, arg);
    bufferevent_enable(bev, EV_READ);
}

/* Bind 127.0.0.1:0; returns the fd and the port. */
static int bind_any(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        perror("resilience_bench: bind");
        exit(1);
    }
    *port = ntohs(a.sin_port);
    return fd;
}

static struct event_base *base;

static void *backend_loop(void *arg)
{
    (void)arg;
    event_base_loop(base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

/* Start a backend in `m`; returns its port. */
static int backend(enum mode m)
{
    int port, fd = bind_any(&port);
    if (m == REFUSE) /* bound, never listening: connections are refused */
        return port;
    if (m == BLACKHOLE) { /* the kernel completes connections; nobody reads */
        if (listen(fd, 4096) != 0) {
            perror("resilience_bench: listen");
            exit(1);
        }
        return port;
    }
    evutil_make_socket_nonblocking(fd);
    if (evconnlistener_new(base, on_accept, (void *)(intptr_t)m,
                           LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 4096, fd) == NULL) {
        fprintf(stderr, "resilience_bench: evconnlistener_new failed\n");
        exit(1);
    }
    return port;
}

/* ---- instance lists ----------------------------------------------------- */

static struct reg_instance *instances(const int *ports, const char *const *names, size_t n)
{
    struct reg_instance *v = calloc(n, sizeof(*v));
    for (size_t i = 0; i < n; i++) {
        v[i].id = strdup(names[i]);
        v[i].service = strdup("bench");
        v[i].address = strdup("127.0.0.1");
        v[i].status = strdup("passing");
        v[i].port = ports[i];
        v[i].weight = 1;
    }
    return v;
}

/* ---- the load ----------------------------------------------------------- */

struct run {
    const char *name;
    struct reg_balancer *b;
    struct reg_policy *p; /* NULL: plain pick, one attempt */
    unsigned plain_timeout_ms;
    double rate;
    long total, next;
    uint64_t t0;
    uint64_t *lat;
    unsigned *attempts;
    bool *ok;
};

static const struct http_request get_req = {"GET", "/", NULL, 0, NULL, 0};

static enum reg_outcome attempt(void *arg, const struct reg_endpoint *e, uint64_t timeout_ms,
                                uint64_t remaining_ms)
{
    (void)arg;
    (void)remaining_ms;
    struct http_answer a;
    int rc = http_call(e->address, e->port, &get_req, timeout_ms, &a);
    enum reg_outcome o = http_verdict("GET", rc, &a);
    free(a.body);
    return o;
}

static void *worker(void *arg)
{
    struct run *r = arg;
    for (;;) {
        long k = __atomic_fetch_add(&r->next, 1, __ATOMIC_RELAXED);
        if (k >= r->total)
            return NULL;
        uint64_t at = r->t0 + (uint64_t)(k * 1e6 / r->rate), now = now_us();
        if (at > now)
            usleep((useconds_t)(at - now));
        uint64_t t = now_us();
        if (r->p) {
            r->ok[k] = reg_call(r->p, attempt, NULL, &r->attempts[k]) == 0;
        } else {
            struct reg_endpoint e;
            r->attempts[k] = 1;
            if (reg_balancer_pick(r->b, &e) == 0) {
                struct http_answer a;
                reg_balancer_start(r->b, &e);
                int rc = http_call(e.address, e.port, &get_req, r->plain_timeout_ms, &a);
                r->ok[k] = rc == 0 && a.status < 300;
                reg_balancer_finish(r->b, &e, now_us() - t, r->ok[k]);
                free(a.body);
            }
        }
        r->lat[k] = now_us() - t;
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Run at the fixed rate; print one line; return p99 in ms. */
static double run_load(struct run *r, double rate, double seconds)
{
    r->rate = rate;
    r->total = (long)(rate * seconds);
    r->next = 0;
    r->lat = calloc((size_t)r->total, sizeof(uint64_t));
    r->attempts = calloc((size_t)r->total, sizeof(unsigned));
    r->ok = calloc((size_t)r->total, sizeof(bool));
    pthread_t t[WORKERS];
    r->t0 = now_us() + 10000;
    for (int i = 0; i < WORKERS; i++)
        pthread_create(&t[i], NULL, worker, r);
    for (int i = 0; i < WORKERS; i++)
        pthread_join(t[i], NULL);
    double took = (now_us() - r->t0) / 1e6;
    long ok = 0;
    uint64_t att = 0;
    for (long k = 0; k < r->total; k++) {
        ok += r->ok[k];
        att += r->attempts[k];
    }
    qsort(r->lat, (size_t)r->total, sizeof(uint64_t), cmp_u64);
    double p50 = r->lat[(r->total - 1) / 2] / 1000.0;
    double p99 = r->lat[(r->total * 99 + 99) / 100 - 1] / 1000.0;
    printf("%-22s %7ld calls %6.0f/s  success %7.3f%%  p50 %7.2f ms  p99 %8.2f ms  "
           "attempts/call %.3f\n",
           r->name, r->total, r->total / took, 100.0 * ok / r->total, p50, p99,
           (double)att / r->total);
    if (r->p) {
        struct reg_policy_stats st;
        reg_policy_stats(r->p, &st);
        printf("%-22s   budget exhausted %llu, breaker rejected %llu, instance breakers opened "
               "%llu closed %llu, service opened %llu, deadline %llu\n",
               "", (unsigned long long)st.budget_exhausted, (unsigned long long)st.breaker_rejected,
               (unsigned long long)st.instance_opened, (unsigned long long)st.instance_closed,
               (unsigned long long)st.service_opened, (unsigned long long)st.deadline_exceeded);
    }
    fflush(stdout);
    free(r->lat);
    free(r->attempts);
    free(r->ok);
    return p99;
}

static struct reg_balancer *balancer(const struct reg_instance *v, size_t n, bool ejection)
{
    struct reg_balancer_options o;
    struct reg_balancer *b;
    reg_balancer_defaults(&o, REG_ROUND_ROBIN);
    if (!ejection)
        o.eject_after = 0;
    if (reg_balancer_new(&o, &b) != 0 || reg_balancer_update(b, v, n) != 0)
        exit(1);
    return b;
}

/* ---- the bookkeeping's cost --------------------------------------------- */

static void overhead(const struct reg_instance *v, size_t n)
{
    const long calls = 1000000;
    struct reg_balancer *b = balancer(v, n, true);
    struct reg_policy *p;
    if (reg_policy_new(NULL, b, &p) != 0)
        exit(1);
    struct reg_endpoint e;
    uint64_t t = now_us();
    for (long i = 0; i < calls; i++) {
        reg_balancer_pick(b, &e);
        reg_balancer_start(b, &e);
        reg_balancer_finish(b, &e, 1000, true);
    }
    double bare = (now_us() - t) * 1000.0 / calls;
    t = now_us();
    for (long i = 0; i < calls; i++) {
        struct reg_call *c;
        uint64_t timeout;
        bool retry;
        reg_call_begin(p, &c);
        reg_call_attempt(c, &e, &timeout);
        reg_call_report(c, REG_OUTCOME_SUCCESS, 1000, &retry, NULL);
        reg_call_end(c);
    }
    double full = (now_us() - t) * 1000.0 / calls;
    printf("bookkeeping            pick+start+finish %.0f ns; resilient call "
           "(begin+attempt+report+end) %.0f ns; added %.0f ns per successful call\n",
           bare, full, full - bare);
    fflush(stdout);
    reg_policy_free(p);
    reg_balancer_free(b);
}

int main(void)
{
    double rate = getenv("RATE") ? atof(getenv("RATE")) : 200;
    double seconds = getenv("DURATION") ? atof(getenv("DURATION")) : 15;
    if (rate <= 0 || rate > 5000 || seconds <= 0 || seconds > 60) {
        fprintf(stderr, "resilience_bench: RATE in (0, 5000], DURATION in (0, 60]\n");
        return 2;
    }
    base = event_base_new();
    static const enum mode fleet_modes[8] = {OK, OK, OK, OK, OK, REFUSE, BLACKHOLE, FLAKY};
    static const char *const fleet_names[8] = {"ok-1", "ok-2",     "ok-3",      "ok-4",
                                               "ok-5", "refusing", "blackhole", "flaky-503"};
    static const char *const outage_names[8] = {"down-1", "down-2", "down-3", "down-4",
                                                "down-5", "down-6", "down-7", "down-8"};
    int fleet_ports[8], outage_ports[8];
    for (int i = 0; i < 8; i++) {
        fleet_ports[i] = backend(fleet_modes[i]);
        outage_ports[i] = backend(FAIL);
    }
    pthread_t loop;
    pthread_create(&loop, NULL, backend_loop, NULL);
    struct reg_instance *fleet = instances(fleet_ports, fleet_names, 8);
    struct reg_instance *outage = instances(outage_ports, outage_names, 8);
    printf("resilience: %.0f requests/s for %.0f s per run, %d workers; fleet: 5 healthy, "
           "1 refusing, 1 black hole, 1 failing 50%% with 503\n",
           rate, seconds, WORKERS);

    struct reg_policy_options po;
    reg_policy_defaults(&po);
    po.attempt_timeout_ms = 250;
    po.deadline_ms = 1000;

    struct run healthy = {.name = "healthy5 (plain rr)", .plain_timeout_ms = 1000};
    healthy.b = balancer(fleet, 5, false);
    double p99_healthy = run_load(&healthy, rate, seconds);

    struct run plain = {.name = "plain rr, 1 s timeout", .plain_timeout_ms = 1000};
    plain.b = balancer(fleet, 8, false);
    run_load(&plain, rate, seconds);

    struct run res = {.name = "resilient call"};
    res.b = balancer(fleet, 8, false); /* the instance breakers eject */
    if (reg_policy_new(&po, res.b, &res.p) != 0)
        return 1;
    double p99_res = run_load(&res, rate, seconds);
    printf("%-22s   p99 / healthy-five p99 = %.2f\n", "", p99_res / p99_healthy);

    struct reg_policy_options def;
    reg_policy_defaults(&def);
    struct run out = {.name = "outage, resilient"};
    out.b = balancer(outage, 8, false);
    if (reg_policy_new(&def, out.b, &out.p) != 0)
        return 1;
    run_load(&out, rate, seconds);

    def.service_breaker.enabled = false;
    struct run budget = {.name = "outage, budget only"};
    budget.b = balancer(outage, 8, false);
    def.instance_breaker.enabled = false;
    if (reg_policy_new(&def, budget.b, &budget.p) != 0)
        return 1;
    run_load(&budget, rate, seconds);

    overhead(fleet, 8);

    reg_policy_free(res.p);
    reg_policy_free(out.p);
    reg_policy_free(budget.p);
    reg_balancer_free(healthy.b);
    reg_balancer_free(plain.b);
    reg_balancer_free(res.b);
    reg_balancer_free(out.b);
    reg_balancer_free(budget.b);
    reg_instances_free(fleet, 8);
    reg_instances_free(outage, 8);
    _exit(0); /* the backend thread never returns */
}
