/*
 * evhttp_floor — the least an evhttp server does per request, as the
 * reference http_lookup measures registryd against besides nginx: one
 * thread, one loop, every request answered 200 with the same bytes (a file
 * read once) and a Content-Type, written at once as registryd writes its
 * replies (http_api.c's write_now). No routing, no store, no Consul
 * headers: what is left is libevent's own cost per request.
 *
 * Usage: evhttp_floor PORT FILE [N]   (listens on 127.0.0.1:PORT; N
 * processes, 1 by default, sharing the port with SO_REUSEPORT as
 * registryd's HTTP workers do)
 */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static char *body;
static size_t body_len;

static void answer(struct evhttp_request *req, void *arg)
{
    (void)arg;
    struct evbuffer *out = evhttp_request_get_output_buffer(req);
    evbuffer_add_reference(out, body, body_len, NULL, NULL);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    evhttp_send_reply(req, 200, "OK", NULL);
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    if (bev != NULL && (bufferevent_get_enabled(bev) & EV_WRITE)) {
        struct evbuffer *pending = bufferevent_get_output(bev);
        if (evbuffer_write_atmost(pending, bufferevent_getfd(bev), 65536) > 0 &&
            evbuffer_get_length(pending) == 0)
            bufferevent_trigger(bev, EV_WRITE, BEV_TRIG_DEFER_CALLBACKS);
    }
}

int main(int argc, char **argv)
{
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: evhttp_floor PORT FILE [N]\n");
        return 2;
    }
    int procs = argc == 4 ? atoi(argv[3]) : 1;
    FILE *f = fopen(argv[2], "rb");
    if (f == NULL || fseek(f, 0, SEEK_END) != 0) {
        perror(argv[2]);
        return 1;
    }
    long n = ftell(f);
    rewind(f);
    body = n > 0 ? malloc((size_t)n) : NULL;
    if (body == NULL || fread(body, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "evhttp_floor: cannot read %s\n", argv[2]);
        return 1;
    }
    fclose(f);
    body_len = (size_t)n;
    for (int i = 1; i < procs; i++)
        if (fork() == 0) {
            procs = 0; /* a child: serves, waits for none, ends with its parent */
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            break;
        }
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)atoi(argv[1]));
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct event_base *base = event_base_new();
    struct evhttp *http = base ? evhttp_new(base) : NULL;
    struct evconnlistener *l =
        http ? evconnlistener_new_bind(base, NULL, NULL,
                                       LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT |
                                           LEV_OPT_CLOSE_ON_FREE,
                                       -1, (struct sockaddr *)&sin, sizeof(sin))
             : NULL;
    if (l == NULL || evhttp_bind_listener(http, l) == NULL) {
        fprintf(stderr, "evhttp_floor: cannot listen on 127.0.0.1:%s\n", argv[1]);
        return 1;
    }
    evhttp_set_gencb(http, answer, NULL);
    event_base_dispatch(base); /* until killed */
    evhttp_free(http);
    event_base_free(base);
    free(body);
    while (procs > 1 && wait(NULL) > 0)
        ;
    return 0;
}
