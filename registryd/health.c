/*
 * health.c — the active checker (see health.h).
 *
 * One thread, one event_base. Every known check is a struct hcheck, found by
 * id (by_id) and by instance (by_sid, to notice checks that went away).
 * HTTP/TCP checks have a timer that starts a probe every Interval, first at a
 * random offset inside the interval so that checks registered together do not
 * fire together; probes beyond max_concurrent wait in a FIFO. TTL checks have
 * a timer at their deadline, pushed back by every heartbeat.
 *
 * A probe's result goes through the check's thresholds (SuccessBeforePassing,
 * FailuresBeforeWarning, FailuresBeforeCritical); only a status different
 * from the stored one (or one already submitted) becomes a CHECK_UPDATE
 * command. The store's own
 * record, re-read after every applied change, is the truth the checker
 * compares against, so a restart or a manual update cannot confuse it.
 *
 * A one-second tick deregisters instances critical for longer than their
 * DeregisterCriticalServiceAfter, unless self-preservation holds: more than
 * self_preservation_share of all checks turned critical within the window,
 * which says more about this server's network than about the fleet.
 */
#define _GNU_SOURCE /* pthread_setname_np */
#include "health.h"

#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "check_rules.h"
#include "cluster.h"
#include "command.h"
#include "config.h"
#include "duration.h"
#include "log.h"
#include "probe.h"
#include "queue.h"
#include "registry/error.h"
#include "store.h"
#include "strmap.h"

#define OUTPUT_MAX PROBE_OUTPUT_MAX
#define PENDING_MS 10000  /* resubmit a transition not seen in the store by then */
#define MAINT_PREFIX "_service_maintenance:"

enum hc_type { HC_HTTP, HC_TCP, HC_TTL, HC_UDP, HC_GRPC, HC_H2PING, HC_SCRIPT, HC_ALIAS };
/* The stored statuses, numbered as probe.h's results. */
enum hc_status { ST_PASSING = PROBE_PASSING, ST_WARNING = PROBE_WARNING,
                 ST_CRITICAL = PROBE_CRITICAL, ST_NONE = -1 };
static const char *const status_names[] = {"passing", "warning", "critical"};

/* What the checker reads from a check's Definition; compared field by field
 * to notice a re-registration with another definition. */
struct hdef {
    enum hc_type type;
    uint64_t interval_ms, timeout_ms, ttl_ms, dereg_ms;
    int succ_before, fail_before, warn_before;
    size_t output_max; /* OutputMaxSize; 0: OUTPUT_MAX */
};

struct hcheck {
    struct health *h;
    char *id, *service_id, *service_name;
    /* The stored Definition, read. Probes keep its JSON too (def: their
     * target, headers, ...); a TTL check, most checks of a large registry,
     * needs only its numbers, so def is NULL there: a copy per check was a
     * third of the checker's memory. */
    struct hdef d;
    json_t *def;

    int status;      /* as stored */
    char *output;    /* as stored */
    int pending;     /* submitted, not yet seen in the store; ST_NONE if none */
    uint32_t pending_refusals; /* h->refusals->n when it was submitted */
    uint64_t pending_at, output_written_at, critical_since;
    /* when its instance's deregistration was last sent (0: never): sent
     * again after DEREG_RETRY_MS while the instance is still here (one
     * sent as the leader died was lost, and the instance stayed) */
    uint64_t dereg_sent_at;
    struct rules_run run; /* consecutive results, for the thresholds */
    bool maint;
    bool output_written; /* output_written_at is meaningful (0 is a time too) */
    /* a TTL check's timer was armed while this server ran the check: its
     * expiry counts from a heartbeat this server saw, or from when it came
     * to run it (arm_ttl) */
    bool ttl_armed_here;
    bool counted;        /* status is in h->n_status */
    uint64_t generation;

    uint64_t due;         /* scheduled start of the next probe (ms) */
    struct event *timer;
    struct probe *probe;  /* in flight, or NULL */
    bool queued;
    struct hcheck *qnext;     /* FIFO of probes waiting for a slot */
    struct hcheck *sid_next;  /* the instance's list */
};

struct hlist {
    struct hcheck *head;
};

struct hmsg {
    struct queue_node qn; /* in h->inbox */
    bool touch; /* TTL heartbeat for check `key`; else instance `key` changed */
    char key[];
};

/* Updates the leader did not take (no leader for LINK_WAIT_LEADER_MS, a
 * full disk): counted by the front end's callbacks. A check's pending
 * update submitted before the count moved may be one of them: the next
 * result is sent again, not held back for PENDING_MS. Shared with the
 * callbacks, which may run after health_free (refs). */
struct health_refusals {
    uint32_t n;    /* atomic */
    uint32_t refs; /* atomic: the checker's, and one per update in flight */
};

struct health {
    struct health_options opt;
    struct health_refusals *refusals;
    struct event_base *base;
    struct event *wake, *tick;
    struct event *stop; /* health_free: break the loop, whenever it runs */
    /* a reload of every check, a few milliseconds of names at a time (see
     * resync_all): the names still to read, from resync_next on */
    struct event *resync_ev;
    json_t *resync_names;
    size_t resync_next;
    bool stopping;      /* atomic: set by health_free, polled by long scans */
    pthread_t thread;
    bool thread_started;
    struct probe_env probe_env;

    pthread_mutex_t lock; /* guards stats */
    struct queue inbox;   /* from any thread; wake drains it */
    struct health_stats stats;

    struct strmap *by_id, *by_sid, *with_dereg;
    uint64_t generation, rand_state;
    unsigned inflight;
    struct hcheck *wait_head, *wait_tail;
    uint64_t n_critical;
    /* checks by stored status, kept as they change: the tick publishes
     * them without a walk over every check (a million at scale) */
    uint64_t n_status[3];

    struct rules_sp sp; /* self-preservation */
    /* probe start lateness, log2(ms) buckets: the current and the previous
     * 10 s, so that the p99 describes the recent past, not a start-up burst */
    uint64_t late_hist[2][40];
    unsigned late_ticks;
    uint64_t probes, transitions, to_critical, deregistrations;

    struct health_limits new_limits; /* from health_set_limits (under lock) */
    bool limits_pending;

    /* health_ttl_output_due, from any thread (the HTTP workers), under
     * ttl_lock: when each TTL check's output was last written */
    pthread_mutex_t ttl_lock;
    struct strmap *ttl_written; /* check ID -> struct ttl_written, malloc'd */
    uint64_t ttl_interval_ms;   /* check_update_interval */
    size_t ttl_held;            /* entries holding an output back */
};

/* A TTL check's last output write, and the update held back since (the
 * tick writes it once check_update_interval has passed, as Consul's agent
 * syncs a deferred output then). */
struct ttl_written {
    uint64_t at;     /* mono ms */
    int held_status; /* ST_*, of the output held */
    char *held;      /* the newest output held back, or NULL */
};

/* Entries past this are dropped whole: a check whose entry goes may write
 * its output once more early, nothing worse. */
#define TTL_WRITTEN_MAX 65536

static uint64_t next_rand(struct health *h)
{
    uint64_t x = h->rand_state; /* xorshift64 */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return h->rand_state = x;
}

static int parse_status(const char *s)
{
    for (int i = 0; i < 3; i++)
        if (s && strcmp(s, status_names[i]) == 0)
            return i;
    return ST_CRITICAL;
}

/* A timer that cannot be armed would stop its check for good: say so. */
static void set_timer(struct event *ev, uint64_t delay_ms)
{
    struct timeval tv = {(time_t)(delay_ms / 1000), (suseconds_t)(delay_ms % 1000) * 1000};
    if (event_add(ev, &tv) != 0)
        log_error("health", "msg=\"cannot arm a check's timer; the check stops\"");
}

/* ---- submitting commands ------------------------------------------------ */

static void refusals_release(struct health_refusals *r)
{
    if (r != NULL && __atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL) == 0)
        free(r);
}

/* On the front end's thread (cluster.h), perhaps after health_free. */
static void submit_done(void *arg, int status)
{
    struct health_refusals *r = arg;
    if (status != 0) {
        log_debug("health", "msg=\"check update not applied\" error=\"%s\"", reg_strerror(status));
        /* not taken (no room, no leader, no answer); a check gone since
         * (ENOTFOUND, EINVAL) leaves the others' pending updates be */
        if (r != NULL && status != REG_ENOTFOUND && status != REG_EINVAL)
            __atomic_add_fetch(&r->n, 1, __ATOMIC_RELEASE);
    }
    refusals_release(r);
}

/* A result or a deregistration: to raft here when this server leads, else
 * over the server-to-server channel to the leader (cluster_submit decides). */
static void submit(struct health *h, int op, json_t *args)
{
    struct command cmd = {op, args};
    void *buf;
    size_t len;
    if (args != NULL && cmd_encode(&cmd, cluster_alloc, &buf, &len) == 0) {
        __atomic_add_fetch(&h->refusals->refs, 1, __ATOMIC_RELAXED);
        cluster_submit(h->opt.cluster, buf, len, submit_done, h->refusals);
    } else
        log_error("health", "msg=\"cannot encode command\"");
    cmd_fini(&cmd);
}

/* Keep printable ASCII, newlines and tabs; everything else becomes '?', so
 * that any body is valid JSON text. */
static void sanitize(char *s)
{
    for (unsigned char *p = (unsigned char *)s; *p; p++)
        if ((*p < 0x20 && *p != '\n' && *p != '\t') || *p >= 0x7f)
            *p = '?';
}

/* A result with thresholds already applied: submit it if it is news. */
static void report(struct hcheck *c, int status, char *output)
{
    struct health *h = c->h;
    uint64_t now = mono_ms();
    sanitize(output);
    size_t n = strlen(output);
    if (c->d.output_max > 0 && n > c->d.output_max) { /* OutputMaxSize, a whole character */
        size_t cut = c->d.output_max;
        while (cut > 0 && ((unsigned char)output[cut] & 0xc0) == 0x80)
            cut--;
        output[cut] = '\0';
    }
    uint32_t refusals = __atomic_load_n(&h->refusals->n, __ATOMIC_ACQUIRE);
    if (c->pending != ST_NONE &&
        (now - c->pending_at > PENDING_MS || c->pending_refusals != refusals))
        c->pending = ST_NONE;
    int effective = c->pending != ST_NONE ? c->pending : c->status;
    bool output_changed = c->output == NULL || strcmp(c->output, output) != 0;
    if (status == effective) {
        /* The first result always gets written: the registration's empty
         * output is a placeholder, not an output written "at time 0" (the
         * monotonic clock starts at boot, so that would hold back the first
         * output for check_update_interval after every boot). */
        if (!output_changed || c->pending != ST_NONE ||
            (c->output_written &&
             now - c->output_written_at < h->opt.limits.check_update_interval_ms))
            return;
    } else {
        h->transitions++;
        if (status == ST_CRITICAL)
            h->to_critical++;
        char qc[2 * STORE_OWNER_MAX + 3], qs[2 * STORE_OWNER_MAX + 3];
        log_info("health", "msg=\"check status changed\" check=%s service=%s from=%s to=%s",
                 log_quote(c->id, qc, sizeof(qc)), log_quote(c->service_id, qs, sizeof(qs)),
                 status_names[effective], status_names[status]);
    }
    c->pending = status;
    c->pending_at = now;
    c->pending_refusals = refusals;
    c->output_written_at = now;
    c->output_written = true;
    submit(h, CMD_CHECK_UPDATE,
           json_pack("{s:s, s:s, s:s}", "CheckID", c->id, "Status", status_names[status],
                     "Output", output));
}

/* Thresholds: SuccessBeforePassing / FailuresBeforeWarning /
 * FailuresBeforeCritical consecutive results before the status moves. */
static void result(struct hcheck *c, int status, char *output)
{
    c->h->probes++;
    if (c->maint)
        return;
    int shown = rules_threshold(&c->run, c->status, status, c->d.succ_before, c->d.fail_before,
                                c->d.warn_before);
    if (shown != RULES_HOLD)
        report(c, shown, output);
}

/* ---- probes ------------------------------------------------------------- */

static void schedule_next(struct hcheck *c);
static void start_probe(struct hcheck *c);

/* A probe finished: free a slot, start the next waiting probe. */
static void probe_done(void *arg, enum probe_status status, char *output)
{
    struct hcheck *c = arg;
    struct health *h = c->h;
    c->probe = NULL;
    h->inflight--;
    result(c, (int)status, output);
    schedule_next(c);
    while (h->wait_head && h->inflight < h->opt.limits.max_concurrent) {
        struct hcheck *n = h->wait_head;
        h->wait_head = n->qnext;
        if (h->wait_head == NULL)
            h->wait_tail = NULL;
        n->queued = false;
        n->qnext = NULL;
        start_probe(n);
    }
}

static void record_lateness(struct health *h, uint64_t late)
{
    int b = 0;
    while (late > 0 && b < 39) {
        late >>= 1;
        b++;
    }
    h->late_hist[0][b]++;
}

static void start_probe(struct hcheck *c)
{
    struct health *h = c->h;
    if (c->probe != NULL || c->queued)
        return;
    if (h->inflight >= h->opt.limits.max_concurrent) {
        c->queued = true;
        if (h->wait_tail)
            h->wait_tail->qnext = c;
        else
            h->wait_head = c;
        h->wait_tail = c;
        return;
    }
    uint64_t now = mono_ms();
    record_lateness(h, now > c->due ? now - c->due : 0);
    char out[256];
    h->inflight++;
    c->probe = probe_start(&h->probe_env,
                           c->d.type == HC_HTTP  ? PROBE_HTTP
                           : c->d.type == HC_UDP    ? PROBE_UDP
                           : c->d.type == HC_GRPC   ? PROBE_GRPC
                           : c->d.type == HC_H2PING ? PROBE_H2PING
                           : c->d.type == HC_SCRIPT ? PROBE_SCRIPT
                           : c->d.type == HC_ALIAS  ? PROBE_ALIAS
                                                  : PROBE_TCP,
                           c->def,
                           c->d.timeout_ms, probe_done, c, out, sizeof(out));
    if (c->probe == NULL)
        probe_done(c, PROBE_CRITICAL, out);
}

/* ---- timers ------------------------------------------------------------- */

static void schedule_next(struct hcheck *c)
{
    uint64_t now = mono_ms();
    c->due += c->d.interval_ms;
    if (c->due < now)
        c->due = now; /* fell behind: run now rather than in a burst */
    set_timer(c->timer, c->due - now);
}

/* Does this server run check c? cluster_peers decides: TTL checks run on
 * the leader, the others on one live server each. */
static bool checking_here(const struct hcheck *c)
{
    return cluster_owns_check(c->h->opt.cluster, c->id, c->d.type == HC_TTL);
}

/* A TTL check's timer, a whole TTL from now. */
static void arm_ttl(struct hcheck *c)
{
    c->ttl_armed_here = checking_here(c);
    set_timer(c->timer, c->d.ttl_ms);
}

static void check_timer(evutil_socket_t fd, short what, void *arg)
{
    struct hcheck *c = arg;
    (void)fd;
    (void)what;
    if (!checking_here(c)) {
        if (c->d.type == HC_TTL)
            arm_ttl(c);
        else
            schedule_next(c);
        return;
    }
    if (c->d.type == HC_TTL && !c->ttl_armed_here) {
        /* armed before this server ran the check (it led since): the
         * heartbeats went to the old leader, so the check gets a whole
         * TTL from here, never less than a TTL after its last heartbeat
         * (it expired on the first timer here, at any time left) */
        arm_ttl(c);
        return;
    }
    if (c->d.type == HC_TTL) {
        if (!c->maint) { /* as Consul: the last output rides along (heartbeats carry data) */
            static const char head[] = "TTL expired (last output before timeout follows): ";
            char plain[] = "TTL expired";
            size_t n = c->output ? strlen(c->output) : 0;
            /* expired before (a new leader arms the TTL again): the text stands */
            bool again = n > 0 && strncmp(c->output, plain, sizeof(plain) - 1) == 0;
            char *out = n > 0 ? malloc(sizeof(head) + n) : NULL;
            if (out != NULL && again)
                memcpy(out, c->output, n + 1);
            else if (out != NULL)
                snprintf(out, sizeof(head) + n, "%s%s", head, c->output);
            report(c, ST_CRITICAL, out != NULL ? out : plain);
            free(out);
        }
        return;
    }
    if (c->maint) {
        schedule_next(c);
        return;
    }
    start_probe(c);
}

/* ---- the check table ---------------------------------------------------- */

static void unqueue(struct hcheck *c)
{
    struct health *h = c->h;
    if (!c->queued)
        return;
    struct hcheck **pp = &h->wait_head, *prev = NULL;
    for (; *pp && *pp != c; prev = *pp, pp = &(*pp)->qnext)
        ;
    if (*pp) {
        *pp = c->qnext;
        if (h->wait_tail == c)
            h->wait_tail = prev;
    }
    c->queued = false;
}

static void check_free(struct hcheck *c)
{
    struct health *h = c->h;
    unqueue(c);
    if (c->probe) {
        probe_cancel(c->probe);
        h->inflight--;
    }
    if (c->timer)
        event_free(c->timer);
    if (c->status == ST_CRITICAL && h->n_critical > 0)
        h->n_critical--;
    if (c->counted)
        h->n_status[c->status]--;
    json_decref(c->def);
    free(c->id);
    free(c->service_id);
    free(c->service_name);
    free(c->output);
    free(c);
}

static void check_remove(struct health *h, struct hcheck *c)
{
    strmap_del(h->by_id, c->id);
    strmap_del(h->with_dereg, c->id);
    struct hlist *l = strmap_get(h->by_sid, c->service_id);
    if (l) {
        struct hcheck **pp = &l->head;
        for (; *pp && *pp != c; pp = &(*pp)->sid_next)
            ;
        if (*pp)
            *pp = c->sid_next;
        if (l->head == NULL) {
            strmap_del(h->by_sid, c->service_id);
            free(l);
        }
    }
    check_free(c);
}

static uint64_t def_ms(json_t *def, const char *key)
{
    uint64_t ms = 0;
    json_t *v = json_object_get(def, key);
    if (v)
        duration_parse_json(v, &ms);
    return ms;
}

static int json_int_or(json_t *def, const char *key, int dflt)
{
    json_t *v = json_object_get(def, key);
    return json_is_integer(v) ? (int)json_integer_value(v) : dflt;
}

/* The stored status of a check changed (or was read for the first time). */
static void observe_status(struct hcheck *c, int status, const char *output, bool fresh)
{
    struct health *h = c->h;
    uint64_t now = mono_ms();
    if (!fresh && status == c->status && c->output && strcmp(c->output, output) == 0)
        return;
    if (c->pending == status)
        c->pending = ST_NONE;
    if (fresh || status != c->status) {
        if (!fresh && c->status == ST_CRITICAL && h->n_critical > 0)
            h->n_critical--;
        if (status == ST_CRITICAL) {
            h->n_critical++;
            c->critical_since = now;
            if (!fresh)
                rules_sp_record(&h->sp, now);
        } else {
            c->critical_since = 0;
            c->dereg_sent_at = 0;
        }
    }
    if (c->counted)
        h->n_status[c->status]--;
    h->n_status[status]++;
    c->counted = true;
    c->status = status;
    free(c->output);
    c->output = strdup(output);
}

/* Read a stored check's Type and Definition into d (defaults applied).
 * The store validated both at entry; an unknown type reads as TTL. */
#define CHECK_MIN_MS 100 /* shortest Interval and TTL (the API's own floor) */

static void hdef_read(json_t *rec, struct hdef *d)
{
    json_t *def = json_object_get(rec, "Definition");
    const char *type = json_string_value(json_object_get(rec, "Type"));
    d->type = strcmp(type, "http") == 0     ? HC_HTTP
              : strcmp(type, "tcp") == 0    ? HC_TCP
              : strcmp(type, "udp") == 0    ? HC_UDP
              : strcmp(type, "grpc") == 0   ? HC_GRPC
              : strcmp(type, "h2ping") == 0 ? HC_H2PING
              : strcmp(type, "script") == 0 ? HC_SCRIPT
              : strcmp(type, "alias") == 0  ? HC_ALIAS
                                            : HC_TTL;
    d->interval_ms = def_ms(def, "Interval");
    d->timeout_ms = def_ms(def, "Timeout");
    d->ttl_ms = def_ms(def, "TTL");
    d->dereg_ms = def_ms(def, "DeregisterCriticalServiceAfter");
    d->succ_before = json_int_or(def, "SuccessBeforePassing", 0);
    d->fail_before = json_int_or(def, "FailuresBeforeCritical", 0);
    d->warn_before = json_int_or(def, "FailuresBeforeWarning", 0);
    d->output_max = (size_t)json_int_or(def, "OutputMaxSize", 0);
    if (d->timeout_ms == 0)
        d->timeout_ms = 10000;
    if (d->type != HC_TTL && d->interval_ms == 0)
        d->interval_ms = 10000;
    /* the API refuses less than 100 ms; a record that did not come through
     * it (a restored snapshot) is held to the same */
    if (d->type != HC_TTL && d->interval_ms < CHECK_MIN_MS)
        d->interval_ms = CHECK_MIN_MS;
    if (d->ttl_ms > 0 && d->ttl_ms < CHECK_MIN_MS)
        d->ttl_ms = CHECK_MIN_MS;
    if (d->type != HC_TTL && d->timeout_ms > d->interval_ms)
        d->timeout_ms = d->interval_ms;
}

/* Does the stored check rec still have c's definition? */
static bool hdef_same(const struct hcheck *c, json_t *rec)
{
    struct hdef d;
    hdef_read(rec, &d);
    if (d.type != c->d.type || d.interval_ms != c->d.interval_ms ||
        d.timeout_ms != c->d.timeout_ms || d.ttl_ms != c->d.ttl_ms ||
        d.dereg_ms != c->d.dereg_ms || d.succ_before != c->d.succ_before ||
        d.fail_before != c->d.fail_before || d.warn_before != c->d.warn_before ||
        d.output_max != c->d.output_max)
        return false;
    return c->def == NULL || json_equal(c->def, json_object_get(rec, "Definition"));
}

static bool is_node_owner(const char *key)
{
    return store_is_node_owner(key, strlen(key));
}

static struct hcheck *check_new(struct health *h, json_t *rec, const char *name)
{
    struct hcheck *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->h = h;
    c->id = strdup(json_string_value(json_object_get(rec, "CheckID")));
    char owner[STORE_OWNER_MAX];
    store_check_owner(rec, owner);
    c->service_id = strdup(owner);
    c->service_name = strdup(name);
    hdef_read(rec, &c->d);
    if (c->d.type != HC_TTL)
        c->def = json_deep_copy(json_object_get(rec, "Definition"));
    c->pending = ST_NONE;
    c->timer = evtimer_new(h->base, check_timer, c);
    if (c->id == NULL || c->service_id == NULL || c->service_name == NULL ||
        (c->d.type != HC_TTL && c->def == NULL) || c->timer == NULL) {
        check_free(c);
        return NULL;
    }
    observe_status(c, parse_status(json_string_value(json_object_get(rec, "Status"))),
                   json_string_value(json_object_get(rec, "Output")) ?: "", true);
    uint64_t now = mono_ms();
    char qc[2 * STORE_OWNER_MAX + 3];
    log_debug("health", "msg=\"check added\" check=%s status=%s", log_quote(c->id, qc, sizeof(qc)),
              status_names[c->status]);
    if (c->d.type == HC_TTL) {
        arm_ttl(c);
    } else {
        c->due = now + next_rand(h) % c->d.interval_ms; /* spread over the interval */
        set_timer(c->timer, c->due - now);
    }
    return c;
}

struct resync {
    struct health *h;
    struct store_read *rd;
    const char *name; /* of the instances a walk gives by ID */
};

/* Upsert the checks of instance sid of service name, as the store has them
 * now. */
static int resync_instance(struct resync *rs, const char *sid, const char *name)
{
    struct health *h = rs->h;
    if (__atomic_load_n(&h->stopping, __ATOMIC_ACQUIRE))
        return 1; /* a scan of a large store must not hold up shutdown */
    json_t *checks = NULL;
    if (sid == NULL || name == NULL ||
        (is_node_owner(sid) ? store_owner_checks(rs->rd, sid, &checks)
                            : store_instance_checks(rs->rd, sid, &checks)) != 0)
        return 0;
    bool maint = false;
    size_t i;
    json_t *rec;
    json_array_foreach(checks, i, rec)
    {
        const char *cid = json_string_value(json_object_get(rec, "CheckID"));
        if (cid && strncmp(cid, MAINT_PREFIX, strlen(MAINT_PREFIX)) == 0)
            maint = true;
    }
    json_array_foreach(checks, i, rec)
    {
        const char *cid = json_string_value(json_object_get(rec, "CheckID"));
        const char *type = json_string_value(json_object_get(rec, "Type"));
        char owner[STORE_OWNER_MAX];
        store_check_owner(rec, owner);
        /* only the owner's own checks: a check is filed under the instance
         * its record names, or its node (check_remove finds it there), so a
         * node-level check every instance reports, or a stale index link to
         * a check that moved, is not this instance's to run */
        if (strcmp(owner, sid) != 0)
            continue;
        if (cid == NULL || type == NULL ||
            (strcmp(type, "http") != 0 && strcmp(type, "tcp") != 0 && strcmp(type, "ttl") != 0 &&
             strcmp(type, "udp") != 0 && strcmp(type, "grpc") != 0 &&
             strcmp(type, "h2ping") != 0 && strcmp(type, "script") != 0 &&
             strcmp(type, "alias") != 0))
            continue;
        struct hcheck *c = strmap_get(h->by_id, cid);
        if (c && (!hdef_same(c, rec) ||
                  strcmp(c->service_name, name) != 0 ||
                  strcmp(c->service_id, sid) != 0)) {
            check_remove(h, c); /* re-registered with another definition */
            c = NULL;
        }
        if (c == NULL) {
            c = check_new(h, rec, name);
            if (c == NULL || strmap_put(h->by_id, c->id, c) != 0) {
                if (c)
                    check_free(c);
                char qc[2 * STORE_OWNER_MAX + 3];
                log_error("health", "msg=\"out of memory adding check\" check=%s",
                          log_quote(cid, qc, sizeof(qc)));
                continue;
            }
            struct hlist *l = strmap_get(h->by_sid, sid);
            if (l == NULL) {
                l = calloc(1, sizeof(*l));
                if (l == NULL || strmap_put(h->by_sid, sid, l) != 0) {
                    free(l);
                    strmap_del(h->by_id, c->id);
                    check_free(c);
                    continue;
                }
            }
            c->sid_next = l->head;
            l->head = c;
            if (c->d.dereg_ms > 0)
                strmap_put(h->with_dereg, c->id, c);
        } else {
            observe_status(c, parse_status(json_string_value(json_object_get(rec, "Status"))),
                           json_string_value(json_object_get(rec, "Output")) ?: "", false);
        }
        c->generation = h->generation;
        if (c->maint != maint) {
            c->maint = maint;
            c->run = (struct rules_run){0};
        }
    }
    json_decref(checks);
    return 0;
}

/* store_each_instance_id's callback: an instance of rs->name. */
static int resync_instance_id(const char *sid, void *arg)
{
    struct resync *rs = arg;
    return resync_instance(rs, sid, rs->name);
}

/* The instance sid changed (or went away): re-read it and drop the checks
 * it no longer has. */
static void resync_sid(struct health *h, struct store_read *rd, const char *sid)
{
    struct resync rs = {h, rd, NULL};
    json_t *inst = NULL;
    /* The common change, an instance without checks (before and after):
     * nothing to do, known without decoding its record */
    if (strmap_get(h->by_sid, sid) == NULL && !store_instance_may_have_checks(rd, sid))
        return;
    h->generation++;
    if (is_node_owner(sid)) {
        resync_instance(&rs, sid, ""); /* a node's own checks */
    } else if (store_get_instance(rd, sid, &inst) == 0) {
        resync_instance(&rs, json_string_value(json_object_get(inst, "ID")),
                        json_string_value(json_object_get(inst, "Service")));
        json_decref(inst);
    }
    for (;;) { /* check_remove frees the list with its last check */
        struct hlist *l = strmap_get(h->by_sid, sid);
        struct hcheck *c = l ? l->head : NULL;
        while (c && c->generation == h->generation)
            c = c->sid_next;
        if (c == NULL)
            break;
        check_remove(h, c);
    }
}

/* Reload every check from the store. At a million instances this is tens
 * of seconds of decoding: done in one go it kept the checker's loop (TTL
 * expiries, probes, heartbeats) stopped that long, and held one read
 * transaction open for all of it, which keeps LMDB from reusing any page
 * freed meanwhile (the file grows). So the names are
 * taken first and read RESYNC_SLICE_US at a time, each slice in its own
 * read transaction, the loop running in between; changes that arrive
 * meanwhile are applied by on_wake as usual (a check read twice is read
 * as the store has it each time). Another reload starts over. */
#define RESYNC_SLICE_US 5000

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void resync_step(evutil_socket_t fd, short what, void *arg)
{
    struct health *h = arg;
    (void)fd;
    (void)what;
    struct store_read *rd;
    if (h->resync_names == NULL || store_read_begin(h->opt.store, &rd) != 0)
        return; /* nothing to do, or the store is gone: the next change says */
    struct resync rs = {h, rd, NULL};
    uint64_t t0 = mono_us();
    size_t n = json_array_size(h->resync_names);
    while (h->resync_next < n && mono_us() - t0 < RESYNC_SLICE_US) {
        json_t *e = json_array_get(h->resync_names, h->resync_next++);
        if (json_is_object(e)) { /* a node's own checks */
            resync_instance(&rs, json_string_value(json_object_get(e, "owner")), "");
            continue;
        }
        rs.name = json_string_value(e);
        if (store_each_instance_id(rd, rs.name, resync_instance_id, &rs) != 0 &&
            __atomic_load_n(&h->stopping, __ATOMIC_ACQUIRE))
            break;
    }
    store_read_end(rd);
    /* a timer, not event_active: an event that activates itself runs
     * again in the same pass, before any I/O or timer */
    struct timeval now = {0, 0};
    if (h->resync_next < n && !__atomic_load_n(&h->stopping, __ATOMIC_ACQUIRE)) {
        if (event_add(h->resync_ev, &now) == 0)
            return;
        log_error("health", "msg=\"cannot continue reloading checks\" names_left=%zu",
                  n - h->resync_next);
    }
    json_decref(h->resync_names);
    h->resync_names = NULL;
}

static int resync_each_name(const char *name, void *arg)
{
    json_array_append_new(arg, json_string(name));
    return 0;
}

static int resync_each_node(const char *node, void *arg)
{
    char owner[STORE_OWNER_MAX];
    snprintf(owner, sizeof(owner), STORE_NODE_OWNER "%s", node);
    json_array_append_new(arg, json_pack("{s:s}", "owner", owner));
    return 0;
}

static void resync_all(struct health *h)
{
    struct store_read *rd;
    json_t *names = json_array();
    if (names == NULL || store_read_begin(h->opt.store, &rd) != 0) {
        json_decref(names);
        return;
    }
    store_each_name(rd, resync_each_name, names);
    store_each_check_node(rd, resync_each_node, names);
    store_read_end(rd);
    json_decref(h->resync_names);
    h->resync_names = names;
    h->resync_next = 0;
    h->generation++;
    resync_step(-1, 0, h);
}

struct check_list {
    struct hcheck **v;
    size_t n;
};

static void collect_check(const char *key, void *value, void *arg)
{
    struct check_list *l = arg;
    (void)key;
    l->v[l->n++] = value;
}

/* Forget every check (before reloading them all). */
static void drop_all(struct health *h)
{
    struct check_list l = {calloc(strmap_count(h->by_id) + 1, sizeof(struct hcheck *)), 0};
    if (l.v == NULL)
        return;
    strmap_each(h->by_id, collect_check, &l);
    for (size_t i = 0; i < l.n; i++)
        check_remove(h, l.v[i]);
    free(l.v);
}

/* ---- inbox, tick, thread ------------------------------------------------ */

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    struct health *h = arg;
    (void)fd;
    (void)what;
    struct store_read *rd = NULL;
    for (struct queue_node *n = queue_take(&h->inbox), *next; n; n = next) {
        next = n->next;
        struct hmsg *m = queue_entry(n, struct hmsg, qn);
        if (m->touch) {
            struct hcheck *c = strmap_get(h->by_id, m->key);
            if (c && c->d.type == HC_TTL) {
                char qc[2 * STORE_OWNER_MAX + 3];
                log_debug("health", "msg=\"ttl heartbeat\" check=%s",
                          log_quote(c->id, qc, sizeof(qc)));
                arm_ttl(c);
            }
        } else if (m->key[0] == '\0') {
            drop_all(h);
            resync_all(h);
        } else if (rd != NULL || store_read_begin(h->opt.store, &rd) == 0) {
            resync_sid(h, rd, m->key);
        }
        free(m);
    }
    if (rd)
        store_read_end(rd);
}

/* A deregistration not seen applied by then is sent again. */
#define DEREG_RETRY_MS 5000

struct dereg_scan {
    struct health *h;
    uint64_t now;
    json_t *ids; /* service ids to deregister */
};

static void dereg_one(const char *key, void *value, void *arg)
{
    struct dereg_scan *s = arg;
    struct hcheck *c = value;
    (void)key;
    /* as Consul's agent, never sooner than its floor (check_deregister_min) */
    uint64_t after = c->d.dereg_ms > s->h->opt.limits.deregister_min_ms
                         ? c->d.dereg_ms
                         : s->h->opt.limits.deregister_min_ms;
    if (c->status != ST_CRITICAL || c->critical_since == 0 || c->maint ||
        (c->dereg_sent_at != 0 && s->now - c->dereg_sent_at < DEREG_RETRY_MS) ||
        s->now - c->critical_since < after || is_node_owner(c->service_id))
        return; /* a node's own check has no instance to deregister */
    c->dereg_sent_at = s->now;
    json_array_append_new(s->ids, json_string(c->service_id));
}

static void restart_grace(const char *key, void *value, void *arg)
{
    struct hcheck *c = value;
    (void)key;
    if (c->status == ST_CRITICAL)
        c->critical_since = *(uint64_t *)arg;
}

static void update_self_preservation(struct health *h, uint64_t now)
{
    struct rules_sp_limits lim = {h->opt.limits.self_preservation_share,
                                  h->opt.limits.self_preservation_window_ms,
                                  h->opt.limits.self_preservation_min};
    uint64_t total = strmap_count(h->by_id), recent;
    int turned = rules_sp_update(&h->sp, now, &lim, total, h->n_critical, &recent);
    if (turned > 0) {
        log_warn("health",
                 "msg=\"self-preservation on: holding automatic deregistration\" "
                 "critical_recently=%" PRIu64 " checks=%" PRIu64 " share=%.2f",
                 recent, total, lim.share);
    } else if (turned < 0) {
        /* Observations made while the checker was suspect do not count:
         * instances still critical get a fresh DeregisterCriticalServiceAfter. */
        strmap_each(h->with_dereg, restart_grace, &now);
        log_warn("health", "msg=\"self-preservation off: automatic deregistration resumes\" "
                           "critical=%" PRIu64 " checks=%" PRIu64,
                 h->n_critical, total);
    }
}

static uint64_t lateness_p99(struct health *h)
{
    uint64_t total = 0, seen = 0;
    for (int i = 0; i < 40; i++)
        total += h->late_hist[0][i] + h->late_hist[1][i];
    if (total == 0)
        return 0;
    for (int i = 0; i < 40; i++) {
        seen += h->late_hist[0][i] + h->late_hist[1][i];
        if (seen * 100 >= total * 99)
            return i == 0 ? 0 : (1ULL << i) - 1; /* upper bound of the bucket */
    }
    return 0;
}

static void flush_held_outputs(struct health *h, uint64_t now);

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct health *h = arg;
    uint64_t now = mono_ms();
    (void)fd;
    (void)what;
    pthread_mutex_lock(&h->lock);
    if (h->limits_pending) {
        h->limits_pending = false;
        h->opt.limits = h->new_limits;
        if (h->opt.limits.max_concurrent == 0)
            h->opt.limits.max_concurrent = 1;
        log_info("health", "msg=\"limits changed\" max_concurrent=%u", h->opt.limits.max_concurrent);
    }
    pthread_mutex_unlock(&h->lock);
    update_self_preservation(h, now);
    flush_held_outputs(h, now);
    if (!h->sp.active) {
        struct dereg_scan s = {h, now, json_array()};
        strmap_each(h->with_dereg, dereg_one, &s);
        size_t i;
        json_t *id;
        json_array_foreach(s.ids, i, id)
        {
            char qs[2 * STORE_OWNER_MAX + 3];
            log_info("health", "msg=\"deregistering critical instance\" service_id=%s",
                     log_quote(json_string_value(id), qs, sizeof(qs)));
            h->deregistrations++;
            submit(h, CMD_DEREGISTER, json_pack("{s:O}", "ServiceID", id));
        }
        json_decref(s.ids);
    }
    pthread_mutex_lock(&h->lock);
    h->stats.passing = h->n_status[ST_PASSING];
    h->stats.warning = h->n_status[ST_WARNING];
    h->stats.critical = h->n_status[ST_CRITICAL];
    h->stats.checks = strmap_count(h->by_id);
    h->stats.probes = h->probes;
    h->stats.transitions = h->transitions;
    h->stats.to_critical = h->to_critical;
    h->stats.deregistrations = h->deregistrations;
    h->stats.late_p99_ms = lateness_p99(h);
    if (++h->late_ticks % 10 == 0) {
        memcpy(h->late_hist[1], h->late_hist[0], sizeof(h->late_hist[0]));
        memset(h->late_hist[0], 0, sizeof(h->late_hist[0]));
    }
    h->stats.self_preservation = h->sp.active;
    pthread_mutex_unlock(&h->lock);
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    struct health *h = arg;
    (void)fd;
    (void)what;
    event_base_loopbreak(h->base);
}

static void *health_thread(void *arg)
{
    struct health *h = arg;
    resync_all(h);
    event_base_loop(h->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

static void free_written(const char *key, void *value, void *arg)
{
    struct ttl_written *w = value;
    (void)key;
    (void)arg;
    free(w->held);
    free(w);
}

/* Under ttl_lock (or with no other thread left). */
static void ttl_written_clear(struct health *h)
{
    if (h->ttl_written != NULL)
        strmap_each(h->ttl_written, free_written, NULL);
    strmap_free(h->ttl_written);
    h->ttl_written = NULL;
    h->ttl_held = 0;
}

/* Under ttl_lock: w holds nothing back. */
static void ttl_release(struct health *h, struct ttl_written *w)
{
    if (w->held != NULL) {
        free(w->held);
        w->held = NULL;
        h->ttl_held--;
    }
}

int health_start(const struct health_options *opt, struct health **out, char *err,
                 size_t errlen)
{
    struct health *h = calloc(1, sizeof(*h));
    *out = NULL;
    if (h == NULL)
        return REG_ENOMEM;
    h->opt = *opt;
    h->refusals = calloc(1, sizeof(*h->refusals));
    if (h->refusals == NULL) {
        free(h);
        return REG_ENOMEM;
    }
    h->refusals->refs = 1;
    if (h->opt.limits.max_concurrent == 0)
        h->opt.limits.max_concurrent = 1;
    pthread_mutex_init(&h->lock, NULL);
    pthread_mutex_init(&h->ttl_lock, NULL);
    h->ttl_interval_ms = h->opt.limits.check_update_interval_ms;
    queue_init(&h->inbox);
    h->rand_state = (uint64_t)time(NULL) ^ ((uint64_t)(uintptr_t)h << 16) ^ 0x9e3779b97f4a7c15ULL;
    rules_sp_init(&h->sp, mono_ms());
    h->base = event_base_new();
    h->by_id = strmap_new();
    h->by_sid = strmap_new();
    h->with_dereg = strmap_new();
    if (h->base == NULL || h->by_id == NULL || h->by_sid == NULL || h->with_dereg == NULL ||
        probe_env_init(&h->probe_env, h->base) != 0) {
        snprintf(err, errlen, "out of memory");
        health_free(h);
        return REG_ENOMEM;
    }
    h->probe_env.enable_scripts = opt->enable_script_checks;
    h->probe_env.agent_tls = opt->agent_tls;
    h->probe_env.store = opt->store;
    h->wake = event_new(h->base, -1, 0, on_wake, h);
    h->tick = event_new(h->base, -1, EV_PERSIST, on_tick, h);
    h->stop = event_new(h->base, -1, 0, on_stop, h);
    h->resync_ev = event_new(h->base, -1, 0, resync_step, h);
    if (h->wake == NULL || h->tick == NULL || h->stop == NULL || h->resync_ev == NULL) {
        snprintf(err, errlen, "out of memory");
        health_free(h);
        return REG_ENOMEM;
    }
    struct timeval one = {1, 0};
    if (event_add(h->tick, &one) != 0) {
        snprintf(err, errlen, "cannot arm the checker's tick");
        health_free(h);
        return REG_ENOMEM;
    }
    if (pthread_create(&h->thread, NULL, health_thread, h) != 0) {
        snprintf(err, errlen, "cannot start the checker thread: %s", strerror(errno));
        health_free(h);
        return REG_EIO;
    }
    h->thread_started = true;
    pthread_setname_np(h->thread, "health"); /* visible in top -H and /proc */
    *out = h;
    return 0;
}

static void free_check_entry(const char *key, void *value, void *arg)
{
    (void)key;
    (void)arg;
    struct hcheck *c = value;
    c->queued = false; /* the whole queue goes away */
    check_free(c);
}

static void free_list_entry(const char *key, void *value, void *arg)
{
    (void)key;
    (void)arg;
    free(value);
}

void health_stop(struct health *h)
{
    if (h == NULL || !h->thread_started)
        return;
    /* event_base_loopbreak before the thread enters its loop (it may
     * still be scanning the store) would be forgotten when the loop
     * starts; an active event is not: the loop runs it first. */
    __atomic_store_n(&h->stopping, true, __ATOMIC_RELEASE);
    event_active(h->stop, EV_READ, 0);
    pthread_join(h->thread, NULL);
    h->thread_started = false;
}

void health_free(struct health *h)
{
    if (h == NULL)
        return;
    health_stop(h);
    /* health_free runs as the process stops: nothing uses the checker once
     * its thread is gone, so outside sanitizer builds its memory goes with
     * the process (REG_FREE_AT_EXIT) */
    if (!REG_FREE_AT_EXIT)
        return;
    /* The checks go now: none of the loop's own events may run after (the
     * deferred-free pass below would run a due tick over freed checks). */
    if (h->tick)
        event_del(h->tick);
    if (h->wake)
        event_del(h->wake);
    if (h->stop)
        event_del(h->stop);
    if (h->resync_ev)
        event_del(h->resync_ev);
    if (h->by_id)
        strmap_each(h->by_id, free_check_entry, NULL);
    if (h->by_sid)
        strmap_each(h->by_sid, free_list_entry, NULL);
    if (h->base) /* run the deferred connection frees (event_base_once) */
        event_base_loop(h->base, EVLOOP_NONBLOCK);
    strmap_free(h->by_id);
    strmap_free(h->by_sid);
    strmap_free(h->with_dereg);
    for (struct queue_node *n = queue_take(&h->inbox), *next; n; n = next) {
        next = n->next;
        free(queue_entry(n, struct hmsg, qn));
    }
    queue_fini(&h->inbox);
    if (h->wake)
        event_free(h->wake);
    if (h->tick)
        event_free(h->tick);
    if (h->stop)
        event_free(h->stop);
    if (h->resync_ev)
        event_free(h->resync_ev);
    json_decref(h->resync_names);
    common_base_free(h->base);
    probe_env_fini(&h->probe_env);
    pthread_mutex_destroy(&h->lock);
    ttl_written_clear(h);
    pthread_mutex_destroy(&h->ttl_lock);
    refusals_release(h->refusals); /* updates still in flight keep it */
    free(h);
}

static void post(struct health *h, const char *key, bool touch)
{
    size_t len = strlen(key);
    struct hmsg *m = malloc(sizeof(*m) + len + 1);
    if (m == NULL)
        return;
    m->touch = touch;
    memcpy(m->key, key, len + 1);
    if (queue_push(&h->inbox, &m->qn))
        event_active(h->wake, 0, 0);
}

void health_notify(struct health *h, const struct store_change *chg)
{
    if (h == NULL)
        return;
    if (chg->index == UINT64_MAX)
        post(h, "", false); /* the whole store was replaced: start over */
    else if (chg->service_id[0] != '\0')
        post(h, chg->service_id, false);
}

void health_ttl_touch(struct health *h, const char *check_id)
{
    if (h != NULL)
        post(h, check_id, true);
}

void health_set_limits(struct health *h, const struct health_limits *limits)
{
    if (h == NULL)
        return;
    pthread_mutex_lock(&h->lock);
    h->new_limits = *limits;
    h->limits_pending = true;
    pthread_mutex_unlock(&h->lock);
    pthread_mutex_lock(&h->ttl_lock);
    h->ttl_interval_ms = limits->check_update_interval_ms;
    pthread_mutex_unlock(&h->ttl_lock);
}

bool health_ttl_output_due(struct health *h, const char *check_id, const char *status,
                           const char *output, bool status_changes)
{
    if (h == NULL)
        return true;
    uint64_t now = mono_ms();
    bool due = true;
    pthread_mutex_lock(&h->ttl_lock);
    struct ttl_written *w = h->ttl_written ? strmap_get(h->ttl_written, check_id) : NULL;
    if (!status_changes && w != NULL && now - w->at < h->ttl_interval_ms) {
        char *copy = strdup(output);
        if (copy != NULL) { /* the newest is written when the interval ends */
            if (w->held == NULL)
                h->ttl_held++;
            free(w->held);
            w->held = copy;
            w->held_status = parse_status(status);
        }
        due = false;
    }
    if (due && w != NULL) {
        w->at = now;
        ttl_release(h, w); /* this write carries the newest */
    } else if (due) {
        if (h->ttl_written != NULL && strmap_count(h->ttl_written) >= TTL_WRITTEN_MAX)
            ttl_written_clear(h);
        if (h->ttl_written == NULL)
            h->ttl_written = strmap_new();
        w = calloc(1, sizeof(*w));
        if (w != NULL && h->ttl_written != NULL && strmap_put(h->ttl_written, check_id, w) == 0)
            w->at = now;
        else
            free(w);
    }
    pthread_mutex_unlock(&h->ttl_lock);
    return due;
}

void health_ttl_output_settled(struct health *h, const char *check_id)
{
    if (h == NULL)
        return;
    pthread_mutex_lock(&h->ttl_lock);
    struct ttl_written *w = h->ttl_written ? strmap_get(h->ttl_written, check_id) : NULL;
    if (w != NULL)
        ttl_release(h, w);
    pthread_mutex_unlock(&h->ttl_lock);
}

struct held_out {
    json_t *ids, *statuses, *outputs;
    uint64_t now, interval;
    struct health *h;
};

static void take_due(const char *key, void *value, void *arg)
{
    struct ttl_written *w = value;
    struct held_out *o = arg;
    if (w->held == NULL || o->now - w->at < o->interval)
        return;
    json_array_append_new(o->ids, json_string(key));
    json_array_append_new(o->statuses, json_integer(w->held_status));
    json_array_append_new(o->outputs, json_string(w->held));
    w->at = o->now;
    ttl_release(o->h, w);
}

/* The tick: TTL outputs held back whose interval is over are written now,
 * when the check is still this server's, of that status. */
static void flush_held_outputs(struct health *h, uint64_t now)
{
    struct held_out o = {NULL, NULL, NULL, now, 0, h};
    pthread_mutex_lock(&h->ttl_lock);
    if (h->ttl_held > 0 && h->ttl_written != NULL) {
        o.ids = json_array();
        o.statuses = json_array();
        o.outputs = json_array();
        o.interval = h->ttl_interval_ms;
        strmap_each(h->ttl_written, take_due, &o);
    }
    pthread_mutex_unlock(&h->ttl_lock);
    size_t i;
    json_t *id;
    json_array_foreach(o.ids, i, id)
    {
        struct hcheck *c = strmap_get(h->by_id, json_string_value(id));
        int status = (int)json_integer_value(json_array_get(o.statuses, i));
        const char *out = json_string_value(json_array_get(o.outputs, i));
        /* a TTL expiry or a new status since wins; so does what is stored */
        if (c == NULL || c->d.type != HC_TTL || c->status != status || !checking_here(c) ||
            out == NULL || (c->output != NULL && strcmp(c->output, out) == 0))
            continue;
        submit(h, CMD_CHECK_UPDATE, json_pack("{s:s, s:s, s:s}", "CheckID", c->id, "Status",
                                              status_names[status], "Output", out));
    }
    json_decref(o.ids);
    json_decref(o.statuses);
    json_decref(o.outputs);
}

void health_get_stats(struct health *h, struct health_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (h == NULL)
        return;
    pthread_mutex_lock(&h->lock);
    *out = h->stats;
    pthread_mutex_unlock(&h->lock);
}
