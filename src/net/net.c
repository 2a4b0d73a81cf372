/* libcurl easy handles on the loop's multi. Nothing here blocks: DNS runs
 * in curl's resolver, bodies stream through callbacks. */
#include "net/net.h"

#include "core/metrics.h"
#include "core/util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#define CALL_MAX_BODY (1024 * 1024)
#define MAX_REDIRECTS 5

typedef struct {
    int family;
    unsigned char addr[16];
    unsigned port;
} allowed_addr;

struct lr_net_policy {
    allowed_addr *allow;
    size_t n;
};

static bool parse_addr(const char *host, int *family, unsigned char out[16])
{
    char buf[64];
    size_t n = strlen(host);
    if (n >= sizeof buf)
        return false;
    if (host[0] == '[' && n > 2 && host[n - 1] == ']') {
        memcpy(buf, host + 1, n - 2);
        buf[n - 2] = '\0';
    } else {
        memcpy(buf, host, n + 1);
    }
    if (!strcasecmp(buf, "localhost"))
        snprintf(buf, sizeof buf, "127.0.0.1");
    if (inet_pton(AF_INET, buf, out) == 1) {
        *family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, buf, out) == 1) {
        *family = AF_INET6;
        return true;
    }
    return false;
}

lr_net_policy *lr_net_policy_new(const char *allow_csv, char **err)
{
    lr_net_policy *p = lr_xcalloc(1, sizeof *p);
    if (!allow_csv || !*allow_csv)
        return p;
    char *copy = lr_xstrdup(allow_csv), *save = NULL;
    for (char *tok = strtok_r(copy, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        char *colon = strrchr(tok, ':');
        long port = 0;
        allowed_addr a = {0};
        if (colon) {
            *colon = '\0';
            char *end;
            port = strtol(colon + 1, &end, 10);
            if (*end || port < 1 || port > 65535)
                colon = NULL;
        }
        if (!colon || !parse_addr(tok, &a.family, a.addr)) {
            if (err && asprintf(err, "'%s' is not ip:port", tok) < 0)
                *err = NULL;
            free(copy);
            lr_net_policy_free(p);
            return NULL;
        }
        a.port = (unsigned)port;
        allowed_addr *na = lr_xrealloc(p->allow, (p->n + 1) * sizeof *na);
        p->allow = na;
        p->allow[p->n++] = a;
    }
    free(copy);
    return p;
}

void lr_net_policy_free(lr_net_policy *p)
{
    if (!p)
        return;
    free(p->allow);
    free(p);
}

static bool v4_internal(const unsigned char *a)
{
    return a[0] == 0 || a[0] == 10 || a[0] == 127 || (a[0] == 100 && (a[1] & 0xc0) == 64) ||
           (a[0] == 169 && a[1] == 254) || (a[0] == 172 && (a[1] & 0xf0) == 16) ||
           (a[0] == 192 && a[1] == 168) || (a[0] == 192 && a[1] == 0 && a[2] == 0) ||
           (a[0] == 198 && (a[1] & 0xfe) == 18) || a[0] >= 224;
}

static bool v6_internal(const unsigned char *a)
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
    static const unsigned char zero[16] = {0};
    if (!memcmp(a, mapped, 12) || !memcmp(a, nat64, 12))
        return v4_internal(a + 12);
    if (!memcmp(a, zero, 15) && (a[15] == 0 || a[15] == 1))
        return true; /* :: and ::1 */
    return (a[0] & 0xfe) == 0xfc || (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) || a[0] == 0xff ||
           (a[0] == 0x20 && a[1] == 0x01 && a[2] == 0x0d && a[3] == 0xb8);
}

static bool internal(int family, const unsigned char *a)
{
    return family == AF_INET ? v4_internal(a) : v6_internal(a);
}

bool lr_net_addr_internal(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return v4_internal((const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr);
    if (sa->sa_family == AF_INET6)
        return v6_internal((const unsigned char *)&((const struct sockaddr_in6 *)sa)->sin6_addr);
    return true;
}

static bool allowed(const lr_net_policy *p, int family, const unsigned char *a, unsigned port)
{
    for (size_t i = 0; i < p->n; i++) {
        if (p->allow[i].family == family && p->allow[i].port == port &&
            !memcmp(p->allow[i].addr, a, family == AF_INET ? 4 : 16))
            return true;
    }
    return false;
}

bool lr_net_url_allowed(const lr_net_policy *p, const char *url, const char **why)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL, *user = NULL;
    bool ok = false;
    *why = "not a valid absolute URL";
    if (!u || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK)
        goto out;
    if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK) {
        *why = "credentials in the URL are not allowed";
        goto out;
    }
    int family;
    unsigned char a[16];
    bool literal = parse_addr(host, &family, a);
    bool listed = literal && allowed(p, family, a, (unsigned)atoi(port));
    if (strcasecmp(scheme, "https") != 0 && !(strcasecmp(scheme, "http") == 0 && listed)) {
        *why = "only https URLs are fetched";
        goto out;
    }
    if (literal && internal(family, a) && !listed) {
        *why = "the URL points to a private or loopback address";
        goto out;
    }
    ok = true;
    *why = NULL;
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(user);
    curl_url_cleanup(u);
    return ok;
}

/* ---- JSON calls ---------------------------------------------------- */

static size_t call_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    lr_call *c = ud;
    size_t n = size * nmemb;
    if (c->len + n + 1 > (c->max_len ? c->max_len : CALL_MAX_BODY))
        return 0; /* aborts: no answer we call for is this large */
    lr_buf_append(&c->body, &c->len, &c->cap, ptr, n);
    return n;
}

static size_t call_header(char *buf, size_t size, size_t nitems, void *ud)
{
    lr_call *c = ud;
    size_t n = size * nitems;
    if (n > 12 && !strncasecmp(buf, "Retry-After:", 12)) {
        long v = strtol(buf + 12, NULL, 10);
        if (v >= 0 && v < 3600)
            c->retry_after_s = (int)v;
    }
    return n;
}

/* Provider call count and latency by host ("api.kie.ai"), which names
 * the provider without a label per request. */
static void count_call(const lr_call *c, CURL *easy)
{
    const char *url = NULL, *outcome = "network";
    char host[128] = "unknown";
    curl_easy_getinfo(easy, CURLINFO_EFFECTIVE_URL, &url);
    const char *p = url ? strstr(url, "://") : NULL;
    if (p) {
        p += 3;
        size_t n = strcspn(p, "/?#");
        snprintf(host, sizeof host, "%.*s", (int)(n < sizeof host ? n : sizeof host - 1), p);
    }
    if (c->status >= 200 && c->status < 400)
        outcome = "ok";
    else if (c->status >= 400 && c->status < 500)
        outcome = "http_4xx";
    else if (c->status >= 500)
        outcome = "http_5xx";
    curl_off_t us = 0;
    curl_easy_getinfo(easy, CURLINFO_TOTAL_TIME_T, &us);
    lr_metrics_add(LR_M_PROVIDER_CALLS, (const char *const[]){host, outcome}, 1);
    lr_metrics_observe(LR_M_PROVIDER_DURATION, (const char *const[]){host}, (double)us / 1e6);
}

static void call_done(lr_transfer *t, CURLcode rc)
{
    lr_call *c = (lr_call *)t;
    c->rc = rc;
    if (rc == CURLE_OK)
        curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &c->status);
    if (t->easy)
        count_call(c, t->easy);
    if (!c->body) {
        c->body = lr_xstrdup("");
        c->cap = 1;
    }
    c->done(c);
}

static curl_socket_t call_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *a);

static void call_fail_later(void *arg)
{
    lr_call *c = arg;
    call_done(&c->xfer, CURLE_FAILED_INIT);
}

void lr_call_start(lr_loop *l, lr_call *c, const char *method, const char *url,
                   struct curl_slist *headers, const char *body, long timeout_ms)
{
    curl_slist_free_all(c->headers);
    free(c->req_body);
    c->headers = headers;
    c->req_body = body ? lr_xstrdup(body) : NULL;
    c->len = 0;
    if (c->body)
        c->body[0] = '\0';
    c->status = 0;
    c->retry_after_s = -1;
    c->error[0] = '\0';
    c->refused = false;
    c->why[0] = '\0';
    if (!c->xfer.easy)
        c->xfer.easy = curl_easy_init();
    else
        curl_easy_reset(c->xfer.easy);
    CURL *e = c->xfer.easy;
    if (!e) {
        lr_loop_post(l, call_fail_later, c);
        return;
    }
    c->xfer.done = call_done;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (c->req_body)
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, c->req_body);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, call_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, call_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->error);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_USERAGENT, "lensroom/0.1");
    if (c->policy) {
        curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, call_socket);
        curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, c);
    }
    lr_loop_add_transfer(l, &c->xfer);
}

void lr_call_release(lr_call *c)
{
    if (c->xfer.easy)
        curl_easy_cleanup(c->xfer.easy);
    curl_slist_free_all(c->headers);
    free(c->req_body);
    free(c->body);
    c->xfer.easy = NULL;
    c->headers = NULL;
    c->req_body = c->body = NULL;
    c->len = c->cap = 0;
}

/* ---- downloads ----------------------------------------------------- */

/* The socket for an address curl is about to connect to, or BAD (with
 * *refused and why) when the policy forbids it. */
static curl_socket_t guarded_socket(const lr_net_policy *p, struct curl_sockaddr *a, bool *refused,
                                    char *why, size_t why_size)
{
    const struct sockaddr *sa = &a->addr;
    int family = sa->sa_family;
    const unsigned char *ip = NULL;
    unsigned port = 0;
    if (family == AF_INET) {
        ip = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
        port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
    } else if (family == AF_INET6) {
        ip = (const unsigned char *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
        port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    }
    if (!ip || (lr_net_addr_internal(sa) && !allowed(p, family, ip, port))) {
        *refused = true;
        char text[INET6_ADDRSTRLEN] = "?";
        if (ip)
            inet_ntop(family, ip, text, sizeof text);
        snprintf(why, why_size, "refused to connect to internal address %s", text);
        return CURL_SOCKET_BAD;
    }
    return socket(a->family, a->socktype, a->protocol);
}

static curl_socket_t call_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    (void)purpose;
    lr_call *c = ud;
    return guarded_socket(c->policy, a, &c->refused, c->why, sizeof c->why);
}

static curl_socket_t fetch_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    (void)purpose;
    lr_fetch *f = ud;
    return guarded_socket(f->policy, a, &f->refused, f->why, sizeof f->why);
}

static size_t fetch_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    lr_fetch *f = ud;
    size_t n = size * nmemb;
    long status = 0;
    curl_easy_getinfo(f->xfer.easy, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status > 299)
        return n; /* a redirect's or an error's body: not the file */
    if (f->got == 0) {
        curl_off_t cl = -1;
        curl_easy_getinfo(f->xfer.easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
        if (cl > 0 && (size_t)cl > f->max_bytes) {
            f->too_large = true;
            return 0;
        }
    }
    if (f->got + n > f->max_bytes) {
        f->too_large = true;
        return 0;
    }
    f->got += n;
    if (f->write(f->ctx, ptr, n) != 0) {
        f->write_failed = true;
        return 0;
    }
    return n;
}

static void fetch_begin(lr_fetch *f);

static void fetch_done(lr_transfer *t, CURLcode rc)
{
    lr_fetch *f = (lr_fetch *)t;
    if (f->refused) {
        f->done(f, LR_ERR_INVALID);
        return;
    }
    if (f->too_large) {
        snprintf(f->why, sizeof f->why, "larger than %zu bytes", f->max_bytes);
        f->done(f, LR_ERR_TOO_LARGE);
        return;
    }
    if (f->write_failed) {
        snprintf(f->why, sizeof f->why, "the storage refused the bytes");
        f->done(f, LR_ERR_IO);
        return;
    }
    if (rc != CURLE_OK) {
        snprintf(f->why, sizeof f->why, "%s", curl_easy_strerror(rc));
        f->done(f, LR_ERR_UNAVAILABLE);
        return;
    }
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &f->status);
    if (f->status >= 300 && f->status < 400) {
        char *next = NULL;
        curl_easy_getinfo(t->easy, CURLINFO_REDIRECT_URL, &next);
        const char *why = NULL;
        if (!next || ++f->redirects > MAX_REDIRECTS) {
            snprintf(f->why, sizeof f->why, "redirect without target or too many redirects");
            f->done(f, LR_ERR_UNAVAILABLE);
        } else if (!lr_net_url_allowed(f->policy, next, &why)) {
            f->refused = true;
            snprintf(f->why, sizeof f->why, "redirect refused: %s", why);
            f->done(f, LR_ERR_INVALID);
        } else {
            char *copy = lr_xstrdup(next); /* next belongs to the handle */
            free(f->url);
            f->url = copy;
            fetch_begin(f);
        }
        return;
    }
    if (f->status < 200 || f->status > 299) {
        snprintf(f->why, sizeof f->why, "HTTP %ld", f->status);
        f->done(f, f->status == 404 || f->status == 410 ? LR_ERR_NOT_FOUND : LR_ERR_UNAVAILABLE);
        return;
    }
    f->done(f, LR_OK);
}

static void fetch_begin(lr_fetch *f)
{
    if (!f->xfer.easy)
        f->xfer.easy = curl_easy_init();
    else
        curl_easy_reset(f->xfer.easy);
    CURL *e = f->xfer.easy;
    f->xfer.done = fetch_done;
    f->got = 0;
    f->status = 0;
    curl_easy_setopt(e, CURLOPT_URL, f->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, fetch_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, f);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, fetch_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, f);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L); /* stalled: */
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, 30L); /* nothing for 30 s */
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 900L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "lensroom/0.1");
    lr_loop_add_transfer(f->loop, &f->xfer);
}

static void fetch_refuse_later(void *arg)
{
    lr_fetch *f = arg;
    f->done(f, LR_ERR_INVALID);
}

void lr_fetch_start(lr_fetch *f, const char *url)
{
    free(f->url);
    f->url = lr_xstrdup(url);
    f->redirects = 0;
    f->refused = f->too_large = f->write_failed = false;
    f->why[0] = '\0';
    const char *why = NULL;
    if (!f->url || !lr_net_url_allowed(f->policy, url, &why)) {
        f->refused = true;
        snprintf(f->why, sizeof f->why, "%s", why ? why : "out of memory");
        lr_loop_post(f->loop, fetch_refuse_later, f); /* done never runs inside start */
        return;
    }
    fetch_begin(f);
}

void lr_fetch_release(lr_fetch *f)
{
    if (f->xfer.easy)
        curl_easy_cleanup(f->xfer.easy);
    f->xfer.easy = NULL;
    free(f->url);
    f->url = NULL;
}
