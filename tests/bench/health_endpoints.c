/*
 * health_endpoints — a small, fast HTTP health endpoint for benchmarks.
 *
 *   health_endpoints ADDR:PORT [ADDR:PORT ...]
 *
 * Listens on every address given and answers any request with
 * "200 OK" and "ok", then closes the connection. One thread, libevent,
 * no per-connection allocation beyond the bufferevent. Prints "ready" on
 * stdout once every listener is bound. Runs until killed.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

static const char reply[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";

static void on_write(struct bufferevent *bev, void *arg)
{
    (void)arg;
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        bufferevent_free(bev);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    (void)arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    if (end.pos < 0)
        return; /* headers not complete yet */
    evbuffer_drain(in, evbuffer_get_length(in));
    bufferevent_setcb(bev, NULL, on_write, NULL, NULL);
    bufferevent_write(bev, reply, sizeof(reply) - 1);
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
    (void)arg;
    struct bufferevent *bev =
        bufferevent_socket_new(evconnlistener_get_base(l), fd, BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL) {
        evutil_closesocket(fd);
        return;
    }
    bufferevent_setcb(bev, on_read, NULL, on_event, NULL);
    bufferevent_enable(bev, EV_READ);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: health_endpoints ADDR:PORT [ADDR:PORT ...]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct event_base *base = event_base_new();
    if (base == NULL)
        return 1;
    for (int i = 1; i < argc; i++) {
        struct sockaddr_storage ss;
        int len = sizeof(ss);
        if (evutil_parse_sockaddr_port(argv[i], (struct sockaddr *)&ss, &len) != 0) {
            fprintf(stderr, "health_endpoints: bad address %s\n", argv[i]);
            return 2;
        }
        struct evconnlistener *l = evconnlistener_new_bind(
            base, on_accept, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 4096,
            (struct sockaddr *)&ss, len);
        if (l == NULL) {
            fprintf(stderr, "health_endpoints: cannot listen on %s\n", argv[i]);
            return 1;
        }
    }
    printf("ready\n");
    fflush(stdout);
    event_base_dispatch(base);
    return 0;
}
