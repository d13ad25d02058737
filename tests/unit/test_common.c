/* Unit tests for common.c: common_base_free runs what is still queued on a
 * stopped loop before freeing it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "common.h"

static void on_write(struct bufferevent *bev, void *arg)
{
    (void)bev;
    (void)arg;
    fail_msg("the owner freed the bufferevent: its callbacks never run");
}

/* A bufferevent whose write callback is deferred and queued when the loop
 * stops, then freed by its owner (as evhttp frees a connection at
 * shutdown): the queued callback holds the last reference. The socket
 * closes (the bufferevent is finalized) only if that callback runs. */
static void write_queued_at_stop(int *peer, struct event_base **base)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(evutil_make_socket_nonblocking(sv[1]), 0);
    *base = event_base_new();
    assert_non_null(*base);
    struct bufferevent *bev =
        bufferevent_socket_new(*base, sv[0], BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    assert_non_null(bev);
    bufferevent_setcb(bev, NULL, on_write, NULL, NULL);
    bufferevent_trigger(bev, EV_WRITE, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
    bufferevent_free(bev);
    *peer = sv[1];
}

static int peer_sees_close(int peer)
{
    char b;
    return recv(peer, &b, 1, MSG_DONTWAIT) == 0;
}

static void test_base_free_runs_queued_callbacks(void **state)
{
    (void)state;
    int peer;
    struct event_base *base;
    write_queued_at_stop(&peer, &base);
    assert_false(peer_sees_close(peer)); /* still referenced */
    common_base_free(base);
    assert_true(peer_sees_close(peer));
    close(peer);
}

static void test_base_free_of_nothing(void **state)
{
    (void)state;
    common_base_free(NULL);
    struct event_base *base = event_base_new();
    assert_non_null(base);
    common_base_free(base); /* no events: returns at once */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base_free_runs_queued_callbacks),
        cmocka_unit_test(test_base_free_of_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
