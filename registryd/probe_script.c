/*
 * probe_script.c — see probe_script.h. posix_spawn in a process group of its
 * own, one pipe for stdout and stderr, a read event, a timeout, and a short
 * poll for the exit status once the pipe closes (waitpid never blocks).
 */
#define _GNU_SOURCE /* pipe2 */
#include "probe_script.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#define SCRIPT_OUTPUT_MAX 4096
#define SCRIPT_ARGS_MAX 64
#define REAP_POLL_MS 10

extern char **environ;

struct probe_script {
    pid_t pid;
    int fd;                /* read end of the output pipe, -1 once closed */
    struct event *rd;      /* output */
    struct event *timer;   /* the timeout, then the reaping poll */
    bool timed_out, eof;
    char out[SCRIPT_OUTPUT_MAX + 64];
    size_t out_len;
    uint64_t timeout_ms;
    probe_script_cb cb;
    void *arg;
};

void probe_script_free(struct probe_script *s)
{
    if (s == NULL)
        return;
    if (s->pid > 0) { /* still running or unreaped: end it */
        kill(-s->pid, SIGKILL);
        while (waitpid(s->pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    if (s->rd)
        event_free(s->rd);
    if (s->timer)
        event_free(s->timer);
    if (s->fd >= 0)
        close(s->fd);
    free(s);
}

static void finish(struct probe_script *s, int status)
{
    s->out[s->out_len] = '\0';
    s->cb(s->arg, status, s->out); /* may free s */
}

/* After EOF or the timeout: collect the exit status without blocking. */
static void reap(struct probe_script *s)
{
    int wstatus;
    pid_t r = waitpid(s->pid, &wstatus, WNOHANG);
    if (r == 0) {
        struct timeval tv = {0, REAP_POLL_MS * 1000};
        if (s->timed_out)
            kill(-s->pid, SIGKILL);
        evtimer_add(s->timer, &tv);
        return;
    }
    s->pid = 0;
    if (s->timed_out) {
        snprintf(s->out, sizeof(s->out), "Timed out (%llums) running check",
                 (unsigned long long)s->timeout_ms);
        s->out_len = strlen(s->out);
        finish(s, 2);
        return;
    }
    int code = r > 0 && WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
    finish(s, code == 0 ? 0 : code == 1 ? 1 : 2);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct probe_script *s = arg;
    (void)fd;
    (void)what;
    if (!s->eof && !s->timed_out) { /* the timeout itself */
        s->timed_out = true;
        kill(-s->pid, SIGKILL);
    }
    reap(s);
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    struct probe_script *s = arg;
    char buf[4096];
    (void)what;
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n > 0) {
        size_t room = SCRIPT_OUTPUT_MAX - s->out_len;
        size_t take = (size_t)n < room ? (size_t)n : room;
        memcpy(s->out + s->out_len, buf, take);
        s->out_len += take;
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    s->eof = true; /* the pipe closed: the exit status follows */
    event_del(s->rd);
    event_del(s->timer);
    close(s->fd);
    s->fd = -1;
    reap(s);
}

int probe_script_start(struct event_base *base, json_t *args, uint64_t timeout_ms,
                       probe_script_cb cb, void *arg, struct probe_script **out, char *err,
                       size_t errlen)
{
    char *argv[SCRIPT_ARGS_MAX + 1];
    size_t n = json_array_size(args);
    *out = NULL;
    if (n == 0 || n > SCRIPT_ARGS_MAX) {
        snprintf(err, errlen, "script check: 1 to %d arguments", SCRIPT_ARGS_MAX);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        argv[i] = (char *)json_string_value(json_array_get(args, i));
        if (argv[i] == NULL) {
            snprintf(err, errlen, "script check: arguments must be strings");
            return -1;
        }
    }
    argv[n] = NULL;
    struct probe_script *s = calloc(1, sizeof(*s));
    int pipefd[2] = {-1, -1};
    if (s == NULL || pipe2(pipefd, O_CLOEXEC) != 0) {
        free(s);
        snprintf(err, errlen, "script check: %s", strerror(errno));
        return -1;
    }
    s->fd = pipefd[0];
    s->cb = cb;
    s->arg = arg;
    s->timeout_ms = timeout_ms;
    fcntl(s->fd, F_SETFL, O_NONBLOCK);
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
    posix_spawnattr_setpgroup(&attr, 0); /* its own group: a timeout kills it all */
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK);
    int rc = posix_spawnp(&s->pid, argv[0], &fa, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    close(pipefd[1]);
    if (rc != 0) {
        s->pid = 0;
        snprintf(err, errlen, "script check: cannot run %s: %s", argv[0], strerror(rc));
        probe_script_free(s);
        return -1;
    }
    s->rd = event_new(base, s->fd, EV_READ | EV_PERSIST, on_read, s);
    s->timer = evtimer_new(base, on_timer, s);
    struct timeval tv = {(time_t)(timeout_ms / 1000), (suseconds_t)(timeout_ms % 1000) * 1000};
    if (s->rd == NULL || s->timer == NULL || event_add(s->rd, NULL) != 0 ||
        evtimer_add(s->timer, &tv) != 0) {
        snprintf(err, errlen, "out of memory");
        probe_script_free(s);
        return -1;
    }
    *out = s;
    return 0;
}
