#include "http/server.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"
#include "core/vocab.h"
#include "http/edge.h"

#define MAX_EXTRA_HEADERS 8
/* Preflight answer when the browser's list of headers is not reflected. */
#define LR_HTTP_ALLOW_HEADERS                                                                      \
    "authorization, content-type, apikey, x-client-info, idempotency-key, prefer, "                \
    "last-event-id, x-request-id, sentry-trace, baggage"

struct lr_http {
    struct MHD_Daemon *d;
    lr_edge *edge;
    lr_http_opts o;
    pthread_mutex_t mu;
    int active; /* requests between first call and completion */
    atomic_bool closing;
    atomic_int conns; /* handed to libmicrohttpd and not closed yet */
};

enum req_state { REQ_NEW, REQ_HANDLING, REQ_SUSPENDED, REQ_READY, REQ_DONE };

struct lr_req {
    lr_http *h;
    struct MHD_Connection *conn;
    const char *method;
    char *path;
    char id[LR_UUID_LEN + 1 + 28];
    char *body;
    size_t body_len, body_cap;
    bool too_large;
    bool want_suspend;
    int64_t started_ms;
    char route[96]; /* metrics label; "" until the router matched */

    pthread_mutex_t mu;
    enum req_state state;
    int status;
    struct MHD_Response *resp;
    char *hdr_name[MAX_EXTRA_HEADERS], *hdr_value[MAX_EXTRA_HEADERS];
    int nhdr;
};

const char *lr_req_method(const lr_req *r)
{
    return r->method;
}
const char *lr_req_path(const lr_req *r)
{
    return r->path;
}
const char *lr_req_id(const lr_req *r)
{
    return r->id;
}
const char *lr_req_header(const lr_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}
const char *lr_req_query(const lr_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}
const char *lr_req_body(const lr_req *r, size_t *len)
{
    *len = r->body_len;
    return r->body ? r->body : "";
}
bool lr_req_body_too_large(const lr_req *r)
{
    return r->too_large;
}

void lr_req_set_route(lr_req *r, const char *pattern)
{
    snprintf(r->route, sizeof r->route, "%s", pattern);
}

void lr_req_set_header(lr_req *r, const char *name, const char *value)
{
    if (r->nhdr == MAX_EXTRA_HEADERS)
        return;
    r->hdr_name[r->nhdr] = strdup(name);
    r->hdr_value[r->nhdr] = strdup(value);
    r->nhdr++;
}

/* The request's Origin when it is on the CORS allow-list (exact match). */
static const char *allowed_origin(const lr_req *r)
{
    const char *origin = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Origin");
    if (!origin || !lr_edge_origin_allowed(r->h->o.cors_origins, origin, strlen(origin)))
        return NULL;
    return origin;
}

static void decorate(lr_req *r, struct MHD_Response *resp)
{
    const char *origin = allowed_origin(r);
    if (origin) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", origin);
        MHD_add_response_header(resp, "Access-Control-Allow-Credentials", "true");
        MHD_add_response_header(resp, "Access-Control-Expose-Headers", LR_HTTP_EXPOSE_HEADERS);
    }
    if (r->h->o.cors_origins)
        MHD_add_response_header(resp, "Vary", "Origin");
    MHD_add_response_header(resp, "X-Request-Id", r->id);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    for (int i = 0; i < r->nhdr; i++)
        MHD_add_response_header(resp, r->hdr_name[i], r->hdr_value[i]);
}

static struct MHD_Response *json_response(lr_req *r, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(body);
    if (!text)
        text =
            strdup("{\"success\":false,\"error\":\"Internal error\",\"code\":\"internal_error\"}");
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(resp, "Content-Type", "application/json; charset=utf-8");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    decorate(r, resp);
    return resp;
}

/* Stores the response; the access handler queues it on its way out. */
static void set_response(lr_req *r, int status, struct MHD_Response *resp)
{
    if (r->resp) { /* a handler replied twice: keep the first */
        MHD_destroy_response(resp);
        return;
    }
    r->status = status;
    r->resp = resp;
}

void lr_req_reply_json(lr_req *r, int status, json_t *body)
{
    set_response(r, status, json_response(r, body));
}

void lr_req_reply_error(lr_req *r, int status, const char *code, const char *msg, json_t *extra)
{
    lr_req_reply_json(r, status, lr_error_body(code, msg, extra));
}

void lr_req_reply_text(lr_req *r, int status, const char *content_type, char *text, size_t len)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        len, text ? text : "", text ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(resp, "Content-Type", content_type);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    decorate(r, resp);
    set_response(r, status, resp);
}

void lr_req_reply_fd(lr_req *r, int status, int fd, uint64_t offset, uint64_t len,
                     const char *content_type)
{
    struct MHD_Response *resp = MHD_create_response_from_fd_at_offset64(len, fd, offset);
    if (!resp) {
        close(fd);
        lr_req_reply_error(r, 500, lr_code_name(LR_CODE_INTERNAL_ERROR), "Internal error", NULL);
        return;
    }
    MHD_add_response_header(resp, "Content-Type", content_type);
    decorate(r, resp);
    set_response(r, status, resp);
}

void lr_req_reply_empty(lr_req *r, int status)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
    decorate(r, resp);
    set_response(r, status, resp);
}

struct lr_stream {
    pthread_mutex_t mu;
    int refs;
    struct MHD_Connection *conn;
    char *buf;
    size_t len, off, cap;
    bool closed, gone, suspended;
};

static void stream_unref(lr_stream *s)
{
    pthread_mutex_lock(&s->mu);
    bool last = --s->refs == 0;
    pthread_mutex_unlock(&s->mu);
    if (!last)
        return;
    pthread_mutex_destroy(&s->mu);
    free(s->buf);
    free(s);
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    lr_stream *s = cls;
    pthread_mutex_lock(&s->mu);
    if (s->off < s->len) {
        size_t n = s->len - s->off < max ? s->len - s->off : max;
        memcpy(buf, s->buf + s->off, n);
        s->off += n;
        if (s->off == s->len)
            s->off = s->len = 0;
        pthread_mutex_unlock(&s->mu);
        return (ssize_t)n;
    }
    if (s->closed) {
        pthread_mutex_unlock(&s->mu);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    /* Nothing to send: park the connection until the next write (returning
     * 0 without suspending would make MHD spin). */
    s->suspended = true;
    MHD_suspend_connection(s->conn);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static void stream_gone(void *cls)
{
    lr_stream *s = cls;
    pthread_mutex_lock(&s->mu);
    s->gone = true;
    pthread_mutex_unlock(&s->mu);
    stream_unref(s);
}

lr_stream *lr_req_reply_stream(lr_req *r, int status, const char *content_type)
{
    lr_stream *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    pthread_mutex_init(&s->mu, NULL);
    s->refs = 2;
    s->conn = r->conn;
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, s, stream_gone);
    if (!resp) {
        pthread_mutex_destroy(&s->mu);
        free(s);
        return NULL;
    }
    MHD_add_response_header(resp, "Content-Type", content_type);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    decorate(r, resp);
    set_response(r, status, resp);
    return s;
}

static void stream_wake(lr_stream *s)
{
    if (s->suspended) {
        s->suspended = false;
        MHD_resume_connection(s->conn);
    }
}

bool lr_stream_write(lr_stream *s, const char *data, size_t len)
{
    pthread_mutex_lock(&s->mu);
    if (s->gone || s->closed) {
        pthread_mutex_unlock(&s->mu);
        return false;
    }
    lr_buf_append(&s->buf, &s->len, &s->cap, data, len);
    stream_wake(s);
    pthread_mutex_unlock(&s->mu);
    return true;
}

void lr_stream_close(lr_stream *s)
{
    pthread_mutex_lock(&s->mu);
    s->closed = true;
    if (!s->gone)
        stream_wake(s);
    pthread_mutex_unlock(&s->mu);
}

void lr_stream_release(lr_stream *s)
{
    if (s)
        stream_unref(s);
}

void lr_req_suspend(lr_req *r)
{
    r->want_suspend = true; /* on_request suspends once the route returns */
}

void lr_req_resume_json(lr_req *r, int status, json_t *body)
{
    struct MHD_Response *resp = json_response(r, body);
    pthread_mutex_lock(&r->mu);
    set_response(r, status, resp);
    bool suspended = r->state == REQ_SUSPENDED;
    r->state = REQ_READY;
    /* Not suspended yet means the route is still returning: on_request
     * sees READY and queues at once. */
    if (suspended)
        MHD_resume_connection(r->conn);
    pthread_mutex_unlock(&r->mu);
}

static bool safe_request_id(const char *v)
{
    size_t n = strlen(v);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = v[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return false;
    }
    return true;
}

static enum MHD_Result queue(lr_req *r)
{
    enum MHD_Result ok = MHD_queue_response(r->conn, (unsigned)r->status, r->resp);
    r->state = REQ_DONE;
    return ok;
}

static enum MHD_Result feed_field(void *cls, enum MHD_ValueKind kind, const char *key,
                                  size_t key_size, const char *value, size_t value_size)
{
    (void)kind;
    lr_edge_field(cls, key, key_size, value, value_size);
    return MHD_YES;
}

/* The edge checked the first request of the connection before
 * libmicrohttpd read it; later requests on a kept-alive connection reach
 * us unchecked, so the same framing rules run here, on the fields
 * libmicrohttpd parsed, before it reads any body. */
static lr_edge_verdict judge(const lr_http *h, struct MHD_Connection *conn, const char *version)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
    if (ci && ci->header_size > h->o.max_header_bytes)
        return (lr_edge_verdict){lr_code_http_status(LR_CODE_HEADER_TOO_LARGE),
                                 lr_code_name(LR_CODE_HEADER_TOO_LARGE),
                                 "Request headers are too large"};
    lr_edge_fields f = {0};
    MHD_get_connection_values_n(conn, MHD_HEADER_KIND, feed_field, &f);
    return lr_edge_judge(&f, strcmp(version, MHD_HTTP_VERSION_1_0) != 0);
}

/* Access-Control-Allow-Headers for a preflight: the headers the browser
 * asks for, reflected when they are a plain list of header names (the
 * origin is already on the allow-list, and authentication does not depend
 * on any other header), else the ones our API reads. */
static void allow_request_headers(lr_req *r)
{
    const char *asked =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Access-Control-Request-Headers");
    size_t n = asked ? strlen(asked) : 0;
    bool plain = n > 0 && n <= 1024;
    for (size_t i = 0; plain && i < n; i++) {
        char c = asked[i];
        plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '-' || c == '_' || c == ',' || c == ' ';
    }
    lr_req_set_header(r, "Access-Control-Allow-Headers", plain ? asked : LR_HTTP_ALLOW_HEADERS);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    lr_http *h = cls;
    lr_req *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r)
            return MHD_NO;
        r->h = h;
        r->conn = conn;
        r->method = method;
        r->path = strdup(url);
        r->started_ms = lr_monotonic_ms();
        pthread_mutex_init(&r->mu, NULL);
        pthread_mutex_lock(&h->mu);
        h->active++;
        pthread_mutex_unlock(&h->mu);
        const char *rid = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
        if (rid && safe_request_id(rid))
            snprintf(r->id, sizeof r->id, "%s", rid);
        else
            lr_uuid_v4(r->id);
        *con_cls = r;
        lr_edge_verdict v = judge(h, conn, version);
        if (v.status == 0)
            return MHD_YES; /* queueing on the first call would force Connection: close */
        /* Refused before the body is read: answering now makes
         * libmicrohttpd drop the body and close, so no byte after this
         * header block is read as another request (RFC 9112 6.1, 6.3). */
        r->state = REQ_HANDLING;
        lr_req_set_header(r, "Connection", "close");
        lr_req_reply_error(r, v.status, v.code, v.msg, NULL);
        return queue(r);
    }
    if (*upload_size > 0) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (r->too_large || r->body_len + n > h->o.max_body) {
            r->too_large = true;
            free(r->body);
            r->body = NULL;
            r->body_len = r->body_cap = 0;
            return MHD_YES;
        }
        lr_buf_append(&r->body, &r->body_len, &r->body_cap, upload, n);
        return MHD_YES;
    }

    pthread_mutex_lock(&r->mu);
    enum req_state st = r->state;
    pthread_mutex_unlock(&r->mu);
    if (st == REQ_READY)
        return queue(r); /* resumed: the answer is waiting */
    if (st != REQ_NEW)
        return MHD_YES;

    r->state = REQ_HANDLING;
    if (!strcmp(method, "OPTIONS") &&
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Access-Control-Request-Method")) {
        /* CORS preflight: allowed origins get the rules, others nothing */
        if (allowed_origin(r)) {
            lr_req_set_header(r, "Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS");
            allow_request_headers(r);
            lr_req_set_header(r, "Access-Control-Max-Age", "600");
            lr_req_set_header(r, "Vary", "Access-Control-Request-Headers");
            lr_req_reply_empty(r, 204);
        } else {
            lr_req_reply_error(r, 403, lr_code_name(LR_CODE_ORIGIN_NOT_ALLOWED),
                               "This origin may not call the API (LENSROOM_CORS_ORIGINS)", NULL);
        }
    } else if (atomic_load(&h->closing)) {
        lr_req_set_header(r, "Connection", "close");
        lr_req_set_header(r, "Retry-After", "1");
        lr_req_reply_error(r, 503, lr_code_name(LR_CODE_SHUTTING_DOWN),
                           "The server is shutting down; retry", NULL);
    } else {
        h->o.route(r, h->o.app);
    }
    pthread_mutex_lock(&r->mu);
    enum MHD_Result res = MHD_YES;
    if (r->state == REQ_READY) {
        res = queue(r);
    } else if (r->want_suspend) {
        r->state = REQ_SUSPENDED;
        MHD_suspend_connection(conn);
    } else if (r->resp) {
        res = queue(r);
    } else {
        pthread_mutex_unlock(&r->mu);
        lr_req_reply_error(r, 500, lr_code_name(LR_CODE_INTERNAL_ERROR),
                           "Internal error: no response", NULL);
        pthread_mutex_lock(&r->mu);
        res = queue(r);
    }
    pthread_mutex_unlock(&r->mu);
    return res;
}

/* The method as a metrics label: the ones the API answers, else "other". */
static const char *method_label(const char *m)
{
    static const char *const known[] = {"GET", "POST", "DELETE", "HEAD", "OPTIONS", "PUT", "PATCH"};
    for (size_t i = 0; i < sizeof known / sizeof *known; i++) {
        if (!strcmp(m, known[i]))
            return known[i];
    }
    return "other";
}

/* Request count and latency by route pattern (never the raw path: ids
 * would make a series per generation). */
static void count_request(const lr_req *r, int64_t duration_ms)
{
    char status[8];
    snprintf(status, sizeof status, "%d", r->status ? r->status : 500);
    const char *route = r->route[0] ? r->route : "unmatched";
    lr_metrics_add(LR_M_HTTP_REQUESTS,
                   (const char *const[]){route, method_label(r->method), status}, 1);
    lr_metrics_observe(LR_M_HTTP_DURATION, (const char *const[]){route},
                       (double)duration_ms / 1000.0);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    lr_http *h = cls;
    lr_req *r = *con_cls;
    if (!r)
        return;
    pthread_mutex_lock(&h->mu);
    h->active--;
    pthread_mutex_unlock(&h->mu);
    int64_t duration_ms = lr_monotonic_ms() - r->started_ms;
    if (lr_log_enabled(LR_LOG_INFO)) {
        lr_log_fields(LR_LOG_INFO, r->id, "request",
                      json_pack("{s:s, s:s, s:i, s:I, s:b}", "method", r->method, "path", r->path,
                                "status", r->status, "duration_ms", (json_int_t)duration_ms,
                                "completed", toe == MHD_REQUEST_TERMINATED_COMPLETED_OK));
    }
    count_request(r, duration_ms);
    if (r->resp)
        MHD_destroy_response(r->resp);
    for (int i = 0; i < r->nhdr; i++) {
        free(r->hdr_name[i]);
        free(r->hdr_value[i]);
    }
    pthread_mutex_destroy(&r->mu);
    free(r->body);
    free(r->path);
    free(r);
    *con_cls = NULL;
}

/* libmicrohttpd aborts on internal inconsistencies: say what it was, as a
 * log line, before the process goes. */
static void on_mhd_panic(void *cls, const char *file, unsigned int line, const char *reason)
{
    (void)cls;
    lr_log_fields(LR_LOG_ERROR, NULL, "libmicrohttpd panic",
                  json_pack("{s:s, s:i, s:s}", "file", file ? file : "", "line", (int)line,
                            "reason", reason ? reason : ""));
    abort();
}

/* libmicrohttpd's own messages (a client that vanished mid-request, a
 * failed socket call) as JSON log lines; they end with a newline. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char text[512];
    vsnprintf(text, sizeof text, fmt, ap);
    size_t n = strlen(text);
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == ' '))
        text[--n] = '\0';
    lr_log_fields(LR_LOG_WARN, NULL, text, json_pack("{s:s}", "source", "libmicrohttpd"));
}

/* Memory libmicrohttpd gives each connection: it reads the header block
 * into half of it and stores every field, the Cookie header's copy and
 * each cookie from the other half (connection.c, parse_cookie_header).
 * It costs per request, not only per connection: 0.9.75 zeroes the whole
 * pool when a kept-alive connection starts its next request
 * (MHD_pool_reset), so an idle kept-alive connection holds all of it in
 * RSS; see README, "Request headers". */
static size_t pool_size(size_t max_header)
{
    return 2 * max_header + 32 * 1024;
}

/* The connection limit is kept here, not by libmicrohttpd: 0.9.75 splits
 * its limit evenly over the pool threads, places a handed-over connection
 * by the parity of its descriptor, and checks the split limit only once
 * the thread picks the connection up; a thread that finds itself full then
 * closes the connection unanswered *and never unlocks its connection
 * mutex* (fixed upstream in 1.0.0), so the next resume on that thread
 * hangs every thread that answers a request. Its own limit is set out of
 * reach (lr_http_start) and this count, taken before the hand-over,
 * refuses the connection past the limit with the edge's 503 instead. */
static bool handoff(void *cls, int fd, const struct sockaddr *addr, socklen_t addr_len)
{
    lr_http *h = cls;
    if (atomic_fetch_add(&h->conns, 1) >= h->o.max_connections) {
        atomic_fetch_sub(&h->conns, 1);
        return false;
    }
    /* On failure it has closed fd (and logged why) and will not report
     * the connection closed. */
    if (MHD_add_connection(h->d, fd, addr, addr_len) != MHD_YES)
        atomic_fetch_sub(&h->conns, 1);
    return true;
}

/* Every connection libmicrohttpd started is reported closed exactly once,
 * also when the daemon stops. (One it could not start for want of memory
 * for its pool is reported neither way and stays counted.) */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    (void)conn;
    (void)socket_context;
    if (code == MHD_CONNECTION_NOTIFY_CLOSED)
        atomic_fetch_sub(&((lr_http *)cls)->conns, 1);
}

lr_http *lr_http_start(const lr_http_opts *o)
{
    MHD_set_panic_func(on_mhd_panic, NULL);
    lr_http *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->o = *o;
    pthread_mutex_init(&h->mu, NULL);
    size_t pool = pool_size(o->max_header_bytes);
    /* Each pool thread may hold every connection: handoff() keeps the limit. */
    unsigned mhd_limit = (unsigned)o->max_connections * (unsigned)(o->threads > 1 ? o->threads : 1);
    /* The edge accepts and hands connections over (MHD_add_connection);
     * ITC wakes the pool threads for them and for stop. */
    h->d = MHD_start_daemon(MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME |
                                MHD_USE_ERROR_LOG | MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC,
                            0, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h,
                            MHD_OPTION_THREAD_POOL_SIZE, (unsigned)o->threads,
                            MHD_OPTION_CONNECTION_LIMIT, mhd_limit, MHD_OPTION_CONNECTION_TIMEOUT,
                            (unsigned)120, MHD_OPTION_CONNECTION_MEMORY_LIMIT, pool,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
                            MHD_OPTION_NOTIFY_CONNECTION, on_connection, h, MHD_OPTION_END);
    if (h->d) {
        lr_edge_opts eo = {.port = o->port,
                           .max_header = o->max_header_bytes,
                           .pool_size = pool,
                           .cors_origins = o->cors_origins,
                           .handoff = handoff,
                           .cls = h};
        h->edge = lr_edge_start(&eo);
    }
    if (!h->edge) {
        if (h->d)
            MHD_stop_daemon(h->d);
        pthread_mutex_destroy(&h->mu);
        free(h);
        return NULL;
    }
    return h;
}

/* The edge keeps accepting until lr_http_stop, so that a client arriving
 * now gets an answer (503) rather than a refused connection. (Before the
 * edge owned the listening socket, MHD_quiesce_daemon was no option
 * either: with a thread pool on epoll, 0.9.75 removes the listening socket
 * from each worker's epoll set from two threads and the loser panics.) */
void lr_http_quiesce(lr_http *h)
{
    if (h)
        atomic_store(&h->closing, true);
}

void lr_http_drain(lr_http *h, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited += 10) {
        pthread_mutex_lock(&h->mu);
        int active = h->active;
        pthread_mutex_unlock(&h->mu);
        if (active == 0)
            return;
        usleep(10000);
    }
}

void lr_http_stop(lr_http *h)
{
    if (!h)
        return;
    lr_edge_stop(h->edge);
    MHD_stop_daemon(h->d);
    pthread_mutex_destroy(&h->mu);
    free(h);
}
