/*
 * http_ui.c — the web UI: one self-contained page (registryd/ui/index.html,
 * compiled into the binary by CMake as ui_page[]) that reads the /v1 API and
 * stays live with blocking queries. No CDN, no build step at run time.
 */
#include <string.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "http_internal.h"
#include "registry/error.h"

extern const unsigned char ui_page[];
extern const size_t ui_page_len;

static void do_ui(struct http_req *r)
{
    struct evbuffer *b = evbuffer_new();
    if (b == NULL) {
        http_finish_write(r, REG_ENOMEM);
        return;
    }
    evbuffer_add_reference(b, ui_page, ui_page_len, NULL, NULL);
    struct evkeyvalq *h = evhttp_request_get_output_headers(r->req);
    evhttp_add_header(h, "Cache-Control", "no-cache");
    evhttp_add_header(h, "Content-Security-Policy",
                      "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'");
    http_finish_raw(r, b, "text/html; charset=utf-8");
}

const struct http_route http_ui_routes[] = {
    {"GET", "/ui", NULL, NULL, WATCH_NONE, do_ui, false},
    {"GET", "/ui/index.html", NULL, NULL, WATCH_NONE, do_ui, false},
    {NULL, NULL, NULL, NULL, WATCH_NONE, NULL, false},
};
