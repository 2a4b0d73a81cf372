#include "http/edge.h"

#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "core/vocab.h"

/* A client has this long to send its first header block, and a refused
 * one this long to read our answer before the socket is closed. */
#define HEADER_TIMEOUT_MS 30000
#define LINGER_MS 2000
/* What one parsed field, cookie or query argument costs in
 * libmicrohttpd's pool (struct MHD_HTTP_Header, 56 bytes, aligned). */
#define MHD_ENTRY_BYTES 64
/* Room left in the pool for the response's header and the body buffer. */
#define MHD_POOL_RESERVE 4096
/* Receive buffer for a connection once its header block passed. */
#define BODY_RCVBUF (4 << 20)

/* ---- framing rules (RFC 9112) ------------------------------------------ */

static bool ieq(const char *a, size_t alen, const char *lit)
{
    size_t n = strlen(lit);
    return alen == n && !strncasecmp(a, lit, n);
}

/* The transfer codings of one Transfer-Encoding value, comma-separated. */
static void field_codings(lr_edge_fields *f, const char *v, size_t len)
{
    size_t i = 0;
    while (i < len) {
        while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t start = i;
        while (i < len && v[i] != ',')
            i++;
        size_t end = i;
        while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
            end--;
        if (end == start)
            continue;
        bool chunked = ieq(v + start, end - start, "chunked");
        if (chunked && f->chunked_last)
            f->chunked_twice = true;
        if (!chunked)
            f->unknown_coding = true; /* the server decodes chunked only */
        f->chunked_last = chunked;
        f->codings++;
    }
}

void lr_edge_field(lr_edge_fields *f, const char *name, size_t name_len, const char *value,
                   size_t value_len)
{
    if (ieq(name, name_len, "host")) {
        f->hosts++;
    } else if (ieq(name, name_len, "content-length")) {
        uint64_t v = 0;
        bool digits = value_len > 0;
        for (size_t i = 0; i < value_len && digits; i++)
            digits = value[i] >= '0' && value[i] <= '9';
        if (!digits)
            f->cl_invalid = true;
        else if (value_len > 19)
            f->cl_huge = true;
        else {
            for (size_t i = 0; i < value_len; i++)
                v = v * 10 + (uint64_t)(value[i] - '0');
            if (f->content_lengths > 0 && v != f->content_length)
                f->cl_conflict = true;
            f->content_length = v;
        }
        f->content_lengths++;
    } else if (ieq(name, name_len, "transfer-encoding")) {
        f->transfer_encodings++;
        field_codings(f, value, value_len);
    } else if (ieq(name, name_len, "origin")) {
        f->origin = value;
        f->origin_len = value_len;
    }
}

/* A refusal with its code's status from the vocabulary. */
#define VERDICT(code, msg)                                                                         \
    ((lr_edge_verdict){lr_code_http_status(LR_CODE_##code), lr_code_name(LR_CODE_##code), (msg)})

lr_edge_verdict lr_edge_judge(const lr_edge_fields *f, bool http11)
{
    if (http11 && f->hosts == 0)
        return VERDICT(MISSING_HOST, "HTTP/1.1 requests need a Host header");
    if (f->hosts > 1)
        return VERDICT(BAD_REQUEST, "More than one Host header");
    if (f->transfer_encodings > 0) {
        if (f->content_lengths > 0)
            return VERDICT(BAD_FRAMING, "Content-Length and Transfer-Encoding together");
        if (!http11)
            return VERDICT(BAD_FRAMING, "Transfer-Encoding in an HTTP/1.0 request");
        if (f->codings == 0 || !f->chunked_last || f->chunked_twice)
            return VERDICT(BAD_FRAMING, "Transfer-Encoding must end with chunked, once");
        if (f->unknown_coding)
            return VERDICT(UNSUPPORTED_TRANSFER_CODING,
                           "Only the chunked transfer coding is supported");
    }
    if (f->cl_invalid || f->cl_conflict)
        return VERDICT(BAD_CONTENT_LENGTH, f->cl_conflict ? "Content-Length headers disagree"
                                                          : "Content-Length is not a number");
    if (f->cl_huge)
        return VERDICT(BODY_TOO_LARGE, "Content-Length is too large");
    return (lr_edge_verdict){0, NULL, NULL};
}

bool lr_edge_origin_allowed(const char *list, const char *origin, size_t n)
{
    if (!list || !origin || n == 0)
        return false;
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ", ");
        if (len == n && !memcmp(p, origin, n))
            return true;
        p += len;
        p += strspn(p, ", ");
    }
    return false;
}

/* ---- the first header block --------------------------------------------- */

static bool tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* Field-value and request-target bytes: visible ASCII and obs-text. */
static bool vchar(unsigned char c)
{
    return (c > 0x20 && c != 0x7f);
}

enum scan { SCAN_MORE, SCAN_OK, SCAN_REFUSED };

typedef struct {
    lr_edge_verdict v;
    lr_edge_fields f;
    const char *method, *target;
    size_t method_len, target_len;
} block;

static enum scan refuse(block *b, lr_code code, const char *msg)
{
    b->v = (lr_edge_verdict){lr_code_http_status(code), lr_code_name(code), msg};
    return SCAN_REFUSED;
}

/* One line ends at LF (CR before it is dropped): its length, or -1 when
 * the line is not complete in buf[0..n). */
static long line_at(const char *buf, size_t n, size_t at, size_t *next)
{
    const char *lf = memchr(buf + at, '\n', n - at);
    if (!lf)
        return -1;
    size_t end = (size_t)(lf - buf);
    *next = end + 1;
    if (end > at && buf[end - 1] == '\r')
        end--;
    return (long)(end - at);
}

static enum scan request_line(block *b, const char *l, size_t len, bool *http11)
{
    size_t i = 0;
    while (i < len && tchar((unsigned char)l[i]))
        i++;
    if (i == 0 || i == len || l[i] != ' ')
        return refuse(b, LR_CODE_BAD_REQUEST_LINE,
                      "The request line is not METHOD TARGET HTTP/1.x");
    b->method = l;
    b->method_len = i;
    size_t t = ++i;
    while (i < len && vchar((unsigned char)l[i]))
        i++;
    if (i == t || i == len || l[i] != ' ')
        return refuse(b, LR_CODE_BAD_REQUEST_LINE,
                      "The request line is not METHOD TARGET HTTP/1.x");
    b->target = l + t;
    b->target_len = i - t;
    const char *ver = l + i + 1;
    size_t vlen = len - i - 1;
    /* RFC 9110 2.5: a higher minor version is served as 1.1 */
    if (vlen == 8 && !memcmp(ver, "HTTP/1.", 7) && ver[7] >= '0' && ver[7] <= '9') {
        *http11 = ver[7] != '0';
        return SCAN_OK;
    }
    if (vlen == 8 && !memcmp(ver, "HTTP/", 5) && ver[5] >= '0' && ver[5] <= '9' && ver[6] == '.' &&
        ver[7] >= '0' && ver[7] <= '9')
        return refuse(b, LR_CODE_HTTP_VERSION_NOT_SUPPORTED,
                      "Only HTTP/1.0 and HTTP/1.1 are served");
    return refuse(b, LR_CODE_BAD_REQUEST_LINE, "The request line is not METHOD TARGET HTTP/1.x");
}

/* True when the start of a request line seen so far cannot become valid,
 * so a client that sends bytes without a line end (TLS, binary) gets its
 * answer at once rather than at the timeout. */
static bool hopeless_prefix(const char *buf, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (buf[i] == ' ')
            return i == 0;
        if (!tchar((unsigned char)buf[i]))
            return true;
    }
    return false;
}

static size_t count_byte(const char *s, size_t len, char c)
{
    size_t k = 0;
    for (size_t i = 0; i < len; i++)
        k += s[i] == c;
    return k;
}

/* One header field line; counts what libmicrohttpd will store for it. */
static enum scan field_line(block *b, const char *l, size_t len, size_t *entries,
                            size_t *cookie_bytes)
{
    if (l[0] == ' ' || l[0] == '\t')
        return refuse(b, LR_CODE_BAD_HEADER, "Folded header lines are not accepted");
    size_t i = 0;
    while (i < len && tchar((unsigned char)l[i]))
        i++;
    if (i == 0 || i == len || l[i] != ':')
        return refuse(b, LR_CODE_BAD_HEADER, "A header line is not NAME: VALUE");
    size_t s = i + 1, e = len;
    while (s < e && (l[s] == ' ' || l[s] == '\t'))
        s++;
    while (e > s && (l[e - 1] == ' ' || l[e - 1] == '\t'))
        e--;
    for (size_t k = s; k < e; k++) {
        unsigned char c = (unsigned char)l[k];
        if (!vchar(c) && c != ' ' && c != '\t')
            return refuse(b, LR_CODE_BAD_HEADER, "A header value holds a control character");
    }
    lr_edge_field(&b->f, l, i, l + s, e - s);
    (*entries)++;
    if (ieq(l, i, "cookie")) {
        *entries += count_byte(l + s, e - s, ';') + 1;
        *cookie_bytes += e - s + 1;
    }
    return SCAN_OK;
}

/* Checks the header block at the start of buf[0..n): SCAN_MORE while it
 * is incomplete and still within the limits. */
static enum scan scan_block(block *b, const char *buf, size_t n, size_t max, size_t pool)
{
    size_t at = 0, next;
    while (at < n && (buf[at] == '\r' || buf[at] == '\n'))
        at++; /* RFC 9112 2.2: empty lines before the request line */
    long len = line_at(buf, n, at, &next);
    if (len < 0) {
        if (hopeless_prefix(buf + at, n - at))
            return refuse(b, LR_CODE_BAD_REQUEST_LINE,
                          "The request line is not METHOD TARGET HTTP/1.x");
        if (n > max)
            return refuse(b, LR_CODE_HEADER_TOO_LARGE, "The request line is too long");
        return SCAN_MORE;
    }
    bool http11 = false;
    if (request_line(b, buf + at, (size_t)len, &http11) != SCAN_OK)
        return SCAN_REFUSED;
    size_t entries = count_byte(b->target, b->target_len, '&') + 1, cookie_bytes = 0;
    for (at = next;;) {
        len = line_at(buf, n, at, &next);
        if (len < 0)
            return n > max ? refuse(b, LR_CODE_HEADER_TOO_LARGE, "Request headers are too large")
                           : SCAN_MORE;
        if (next > max)
            return refuse(b, LR_CODE_HEADER_TOO_LARGE, "Request headers are too large");
        if (len == 0)
            break;
        if (field_line(b, buf + at, (size_t)len, &entries, &cookie_bytes) != SCAN_OK)
            return SCAN_REFUSED;
        at = next;
    }
    /* libmicrohttpd reads into half its pool and stores every field,
     * cookie and argument from the other end of it. */
    if (pool / 2 + cookie_bytes + entries * MHD_ENTRY_BYTES + MHD_POOL_RESERVE > pool)
        return refuse(b, LR_CODE_HEADER_TOO_LARGE, "Too many header fields or cookies");
    b->v = lr_edge_judge(&b->f, http11);
    return b->v.status ? SCAN_REFUSED : SCAN_OK;
}

/* ---- the accept thread -------------------------------------------------- */

typedef struct pend {
    int fd;
    bool lingering; /* answered: draining what the client still sends */
    int64_t deadline;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    struct pend *prev, *next;
} pend;

struct lr_edge {
    lr_edge_opts o;
    int listen_fd, ep, wake;
    pthread_t thread;
    char *buf; /* max_header + 1 bytes: what one peek may see */
    pend *head;
    bool accept_paused;
};

static void unlink_pend(lr_edge *e, pend *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        e->head = p->next;
    if (p->next)
        p->next->prev = p->prev;
}

/* Puts p on the list of connections whose first header block is awaited
 * and watches its socket. */
static void watch_pend(lr_edge *e, pend *p)
{
    p->prev = NULL;
    p->next = e->head;
    if (e->head)
        e->head->prev = p;
    e->head = p;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET | EPOLLRDHUP, .data.ptr = p};
    epoll_ctl(e->ep, EPOLL_CTL_ADD, p->fd, &ev);
}

static void drop(lr_edge *e, pend *p)
{
    epoll_ctl(e->ep, EPOLL_CTL_DEL, p->fd, NULL);
    close(p->fd);
    unlink_pend(e, p);
    free(p);
}

static void http_date(char out[64])
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(out, 64, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

/* The whole error response, in the server's JSON error shape. */
static char *render(const lr_edge *e, const block *b, const char *rid, size_t *len)
{
    json_t *err = lr_error_body(b->v.code, b->v.msg, NULL);
    char *body = json_dumps(err, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(err);
    char date[64], cors[512] = "";
    http_date(date);
    if (b->f.origin && b->f.origin_len < 256 &&
        lr_edge_origin_allowed(e->o.cors_origins, b->f.origin, b->f.origin_len))
        snprintf(cors, sizeof cors,
                 "Access-Control-Allow-Origin: %.*s\r\nAccess-Control-Allow-Credentials: true\r\n"
                 "Access-Control-Expose-Headers: " LR_HTTP_EXPOSE_HEADERS "\r\n",
                 (int)b->f.origin_len, b->f.origin);
    char *out = NULL;
    int n = asprintf(&out,
                     "HTTP/1.1 %d %s\r\nDate: %s\r\nConnection: close\r\n"
                     "Content-Type: application/json; charset=utf-8\r\nCache-Control: no-store\r\n"
                     "X-Request-Id: %s\r\nX-Content-Type-Options: nosniff\r\n%s%s"
                     "Content-Length: %zu\r\n\r\n%s",
                     b->v.status, MHD_get_reason_phrase_for((unsigned)b->v.status), date, rid, cors,
                     e->o.cors_origins ? "Vary: Origin\r\n" : "", body ? strlen(body) : 0,
                     body ? body : "");
    free(body);
    if (n < 0)
        return NULL;
    *len = (size_t)n;
    return out;
}

/* Sends the refusal, then keeps reading (and dropping) what the client
 * still sends until it closes or LINGER_MS pass: closing a socket with
 * unread data would reset the connection and could destroy the answer
 * before the client reads it. */
static void answer(lr_edge *e, pend *p, const block *b)
{
    char rid[LR_UUID_LEN + 1];
    lr_uuid_v4(rid);
    size_t len = 0;
    char *resp = render(e, b, rid, &len);
    if (resp) {
        ssize_t sent = send(p->fd, resp, len, MSG_NOSIGNAL);
        (void)sent; /* a short answer fits the empty send buffer; else the client is gone */
        free(resp);
    }
    json_t *fields =
        json_pack("{s:i, s:s, s:b}", "status", b->v.status, "code", b->v.code, "completed", 1);
    if (b->method)
        json_object_set_new(fields, "method", json_stringn(b->method, b->method_len));
    if (b->target)
        json_object_set_new(fields, "path",
                            json_stringn(b->target, b->target_len < 200 ? b->target_len : 200));
    lr_log_fields(LR_LOG_INFO, rid, "request refused at the edge", fields);
    shutdown(p->fd, SHUT_WR);
    p->lingering = true;
    p->deadline = lr_monotonic_ms() + LINGER_MS;
}

static void drain(lr_edge *e, pend *p)
{
    for (;;) {
        ssize_t n = recv(p->fd, e->buf, e->o.max_header + 1, 0);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        drop(e, p);
        return;
    }
}

/* The listening socket's fixed receive buffer (big enough to peek at a
 * whole header block) turns off the kernel's buffer autotuning and clamps
 * the TCP window; open both up again for the body, which libmicrohttpd
 * reads as it comes (the kernel caps this at net.core.rmem_max). */
static void open_window(int fd)
{
    int want = BODY_RCVBUF, got = 0;
    socklen_t len = sizeof got;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof want);
    if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &got, &len) == 0 && got > 0) {
        int clamp = got / 2;
        setsockopt(fd, IPPROTO_TCP, TCP_WINDOW_CLAMP, &clamp, sizeof clamp);
    }
}

static void on_readable(lr_edge *e, pend *p)
{
    if (p->lingering) {
        drain(e, p);
        return;
    }
    ssize_t n = recv(p->fd, e->buf, e->o.max_header + 1, MSG_PEEK);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        drop(e, p); /* gone before a request */
        return;
    }
    if (n < 0)
        return;
    block b = {0};
    enum scan s = scan_block(&b, e->buf, (size_t)n, e->o.max_header, e->o.pool_size);
    if (s == SCAN_MORE)
        return;
    if (s == SCAN_OK) {
        epoll_ctl(e->ep, EPOLL_CTL_DEL, p->fd, NULL);
        unlink_pend(e, p);
        open_window(p->fd);
        if (e->o.handoff(e->o.cls, p->fd, (struct sockaddr *)&p->addr, p->addr_len)) {
            free(p);
            return;
        }
        watch_pend(e, p); /* back on the list to be answered */
        b.v = VERDICT(TOO_MANY_CONNECTIONS, "The server is at its connection limit; retry");
    }
    answer(e, p, &b);
    drain(e, p); /* what was peeked, and the client's close if it came */
}

static void accept_all(lr_edge *e)
{
    for (;;) {
        pend *p = calloc(1, sizeof *p);
        if (!p)
            return;
        p->addr_len = sizeof p->addr;
        p->fd = accept4(e->listen_fd, (struct sockaddr *)&p->addr, &p->addr_len,
                        SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (p->fd < 0) {
            int err = errno;
            free(p);
            if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
                /* out of descriptors: stop accepting for a tick rather than spin */
                struct epoll_event ev = {.events = 0, .data.ptr = NULL};
                epoll_ctl(e->ep, EPOLL_CTL_MOD, e->listen_fd, &ev);
                e->accept_paused = true;
                lr_log_fields(LR_LOG_WARN, NULL, "accept failed: out of file descriptors",
                              json_pack("{s:s}", "error", strerror(err)));
            }
            return;
        }
        p->deadline = lr_monotonic_ms() + HEADER_TIMEOUT_MS;
        watch_pend(e, p);
        on_readable(e, p); /* the request often came with the handshake */
    }
}

static void expire(lr_edge *e)
{
    int64_t now = lr_monotonic_ms();
    for (pend *p = e->head, *next; p; p = next) {
        next = p->next;
        if (p->deadline > now)
            continue;
        char c;
        if (p->lingering || recv(p->fd, &c, 1, MSG_PEEK) <= 0) {
            drop(e, p); /* answered, or never began a request: nothing to say */
            continue;
        }
        block b = {.v = VERDICT(REQUEST_TIMEOUT, "The request headers did not arrive in time")};
        answer(e, p, &b);
        drain(e, p);
    }
    if (e->accept_paused) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
        epoll_ctl(e->ep, EPOLL_CTL_MOD, e->listen_fd, &ev);
        e->accept_paused = false;
    }
}

static void *edge_main(void *arg)
{
    lr_edge *e = arg;
    struct epoll_event evs[64];
    int64_t next_expiry = lr_monotonic_ms() + 1000;
    for (;;) {
        int n = epoll_wait(e->ep, evs, 64, 1000);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL)
                accept_all(e);
            else if (evs[i].data.ptr == (void *)e)
                return NULL; /* lr_edge_stop */
            else
                on_readable(e, evs[i].data.ptr);
        }
        if (lr_monotonic_ms() >= next_expiry) {
            expire(e);
            next_expiry = lr_monotonic_ms() + (e->accept_paused ? 100 : 1000);
        }
    }
}

static int listen_on(int port, size_t max_header)
{
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    bool v6 = fd >= 0;
    if (!v6) /* fd is -1 here: nothing to close */
        // cppcheck-suppress resourceLeak
        fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1, zero = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    /* The whole first header block must fit the receive window to be
     * peeked; accepted sockets inherit this. */
    int rcvbuf = (int)(2 * (max_header + 1));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    int rc;
    if (v6) {
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        struct sockaddr_in6 a = {
            .sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port), .sin6_addr = in6addr_any};
        rc = bind(fd, (struct sockaddr *)&a, sizeof a);
    } else {
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_ANY)};
        rc = bind(fd, (struct sockaddr *)&a, sizeof a);
    }
    if (rc != 0 || listen(fd, SOMAXCONN) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

lr_edge *lr_edge_start(const lr_edge_opts *o)
{
    lr_edge *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->o = *o;
    e->ep = e->wake = -1;
    e->listen_fd = listen_on(o->port, o->max_header);
    e->buf = malloc(o->max_header + 1);
    if (e->listen_fd < 0 || !e->buf)
        goto fail;
    e->ep = epoll_create1(EPOLL_CLOEXEC);
    e->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (e->ep < 0 || e->wake < 0)
        goto fail;
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    struct epoll_event wev = {.events = EPOLLIN, .data.ptr = e};
    if (epoll_ctl(e->ep, EPOLL_CTL_ADD, e->listen_fd, &lev) != 0 ||
        epoll_ctl(e->ep, EPOLL_CTL_ADD, e->wake, &wev) != 0)
        goto fail;
    if (pthread_create(&e->thread, NULL, edge_main, e) != 0)
        goto fail;
    return e;
fail:
    if (e->listen_fd >= 0)
        close(e->listen_fd);
    if (e->ep >= 0)
        close(e->ep);
    if (e->wake >= 0)
        close(e->wake);
    free(e->buf);
    free(e);
    return NULL;
}

void lr_edge_stop(lr_edge *e)
{
    if (!e)
        return;
    uint64_t one = 1;
    ssize_t w = write(e->wake, &one, sizeof one);
    (void)w;
    pthread_join(e->thread, NULL);
    while (e->head)
        drop(e, e->head);
    close(e->listen_fd);
    close(e->ep);
    close(e->wake);
    free(e->buf);
    free(e);
}
