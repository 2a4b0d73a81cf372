/* Outbound HTTP on the event loop: JSON calls to provider APIs (lr_call)
 * and streaming downloads of what providers produced (lr_fetch).
 *
 * Both are embedded in their owner's state, started on the loop thread and
 * finish there with one callback; lr_*_release frees what they hold and is
 * safe at any time, also after the loop stopped. Downloads obey the address
 * policy on every connection, redirects included (followed by hand, each
 * target checked): https only, no private, loopback, link-local or
 * otherwise internal address, unless the exact ip:port is on the policy's
 * allow list (LENSROOM_FETCH_ALLOW, for tests and internal mirrors).
 */
#ifndef LR_NET_H
#define LR_NET_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"
#include "loop/loop.h"

typedef struct lr_net_policy lr_net_policy;

/* allow_csv: "ip:port,ip:port" (may be NULL); *err says what is wrong. */
lr_net_policy *lr_net_policy_new(const char *allow_csv, char **err);
void lr_net_policy_free(lr_net_policy *p);
/* Scheme and host check before any connection: https, or http to an
 * allowed ip:port; no credentials in the URL; a literal internal address
 * must be allowed. *why: static text. */
bool lr_net_url_allowed(const lr_net_policy *p, const char *url, const char **why);
/* True when the address is private, loopback, link-local, CGNAT,
 * multicast, unspecified or otherwise not on the public internet. */
bool lr_net_addr_internal(const struct sockaddr *sa);

/* A JSON API call. */
typedef struct lr_call {
    lr_transfer xfer;
    struct curl_slist *headers;
    char *req_body;
    char *body; /* the answer, NUL-terminated */
    size_t len, cap;
    long status; /* 0: no HTTP answer */
    CURLcode rc;
    int retry_after_s; /* -1: none given */
    char error[CURL_ERROR_SIZE];
    size_t max_len; /* answer bytes accepted, else the transfer fails; 0: 1 MB */
    /* Set before start: every connection obeys this address policy (as
     * downloads do); a refused one fails the call with refused set. */
    const lr_net_policy *policy;
    bool refused;
    char why[160];
    void (*done)(struct lr_call *c);
    void *ctx;
} lr_call;

/* Starts method url with the given headers (the list is taken) and body
 * (copied; NULL for none); an answer over max_len (1 MB by default) fails
 * the call (CURLE_WRITE_ERROR). During done, c->xfer.easy still answers
 * curl_easy_getinfo / curl_easy_header. Loop thread. */
void lr_call_start(lr_loop *l, lr_call *c, const char *method, const char *url,
                   struct curl_slist *headers, const char *body, long timeout_ms);
void lr_call_release(lr_call *c);

/* A streaming download. The body goes to write() as it arrives (a
 * non-zero return aborts); done gets LR_OK, LR_ERR_TOO_LARGE (past
 * max_bytes, by header or while streaming), LR_ERR_INVALID (address
 * refused; why says which), LR_ERR_NOT_FOUND (HTTP 404/410) or
 * LR_ERR_UNAVAILABLE (network, timeout, cut off, other statuses). */
typedef struct lr_fetch {
    lr_transfer xfer;
    lr_loop *loop;
    const lr_net_policy *policy;
    char *url;
    int redirects;
    size_t max_bytes, got;
    long status;
    bool refused, too_large, write_failed;
    char why[200];
    int (*write)(void *ctx, const void *buf, size_t len);
    void (*done)(struct lr_fetch *f, lr_err e);
    void *ctx;
} lr_fetch;

/* Fill loop, policy, max_bytes, write, done, ctx; then start. */
void lr_fetch_start(lr_fetch *f, const char *url);
void lr_fetch_release(lr_fetch *f);

#endif
