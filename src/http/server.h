/* The HTTP server on libmicrohttpd: connections, bodies, replies, and
 * suspension for answers that come later.
 *
 * One lr_req lives per request, created by the server and freed when the
 * response is sent. The route function runs on an MHD thread once the
 * whole body is in; it must reply (lr_req_reply_*) or call lr_req_suspend
 * and arrange for lr_req_resume_* to be called exactly once later, from
 * any thread. Every response carries X-Request-Id; every request is
 * logged once as a JSON line when it completes.
 *
 * Connections are accepted by the edge (http/edge.h), which answers
 * requests that cannot be framed safely before libmicrohttpd reads them;
 * the access handler applies the same rules to every later request of a
 * connection. Refusals are JSON errors with Connection: close.
 */
#ifndef LR_HTTP_SERVER_H
#define LR_HTTP_SERVER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct lr_http lr_http;
typedef struct lr_req lr_req;
typedef void (*lr_route_fn)(lr_req *req, void *app);

typedef struct {
    int port;
    int threads;
    int max_connections;
    size_t max_body;
    /* Largest request header block (request line, fields, blank line);
     * larger ones are answered 431. Sets libmicrohttpd's memory per
     * connection (about twice this). */
    size_t max_header_bytes;
    lr_route_fn route;
    void *app;
    /* Browser origins allowed to call the API with credentials (CORS):
     * "https://app.example.com,http://localhost:3000"; NULL: none. */
    const char *cors_origins;
} lr_http_opts;

lr_http *lr_http_start(const lr_http_opts *o);
/* From now on every new request is answered 503 shutting_down (Connection:
 * close); suspended requests must be resumed before lr_http_stop. */
void lr_http_quiesce(lr_http *h);
/* Waits up to timeout_ms until no request is in progress (all answered). */
void lr_http_drain(lr_http *h, int timeout_ms);
void lr_http_stop(lr_http *h);

const char *lr_req_method(const lr_req *r);
const char *lr_req_path(const lr_req *r);
const char *lr_req_id(const lr_req *r);
const char *lr_req_header(const lr_req *r, const char *name);
const char *lr_req_query(const lr_req *r, const char *name);
const char *lr_req_body(const lr_req *r, size_t *len);
bool lr_req_body_too_large(const lr_req *r);

/* The route pattern that answers this request ("/api/generations/{id}"),
 * copied: the label of its request metrics (unset: "unmatched"). */
void lr_req_set_route(lr_req *r, const char *pattern);

/* Extra header for the reply (copied). */
void lr_req_set_header(lr_req *r, const char *name, const char *value);
/* Replies with body as JSON (the reference is stolen). */
void lr_req_reply_json(lr_req *r, int status, json_t *body);
/* The uniform error body: {"success":false,"error":msg,"code":code,...extra}. */
void lr_req_reply_error(lr_req *r, int status, const char *code, const char *msg, json_t *extra);
/* Replies with text (len bytes, taken: the server frees it) as
 * content_type. */
void lr_req_reply_text(lr_req *r, int status, const char *content_type, char *text, size_t len);
/* Replies with len bytes of fd from offset (fd is closed by the server). */
void lr_req_reply_fd(lr_req *r, int status, int fd, uint64_t offset, uint64_t len,
                     const char *content_type);
/* An empty reply (e.g. 304). */
void lr_req_reply_empty(lr_req *r, int status);

/* A streaming reply (Server-Sent Events): the route returns at once and the
 * body is written later with lr_stream_write from any thread, until
 * lr_stream_close ends it. The caller owns one reference (drop it with
 * lr_stream_release), the server the other. lr_stream_write returns false
 * once the client has gone. While nothing is queued the connection is
 * suspended, holding no thread. Every stream must be closed before the
 * server stops. */
typedef struct lr_stream lr_stream;
lr_stream *lr_req_reply_stream(lr_req *r, int status, const char *content_type);
bool lr_stream_write(lr_stream *s, const char *data, size_t len);
void lr_stream_close(lr_stream *s);
void lr_stream_release(lr_stream *s);

void lr_req_suspend(lr_req *r);
/* Thread-safe; exactly once per suspend. */
void lr_req_resume_json(lr_req *r, int status, json_t *body);

/* lr_error_body (core/vocab.h) builds an error body for callers that
 * resume later. */

#endif
