/* Supabase Storage over its REST API, with the project's secret key. An
 * sb_secret_… key goes in apikey only: it is not a JWT, and Supabase's API
 * keys guide puts it nowhere else (as Bearer it is refused). A legacy
 * service_role JWT goes in both headers, as Supabase's clients send it.
 *   upload  POST   {url}/storage/v1/object/{bucket}/{key}   (x-upsert: true)
 *   read    GET    {url}/storage/v1/object/{bucket}/{key}
 *   delete  DELETE {url}/storage/v1/object/{bucket}         {"prefixes":[key]}
 *   bucket  GET    {url}/storage/v1/bucket/{bucket}
 *   public  {url}/storage/v1/object/public/{bucket}/{key}
 * Uploads are spooled (type checked, size known) and streamed from the
 * spool. Errors come back as {"statusCode","error","message"} and are
 * logged. An upload runs blocking (commit) or on the event loop
 * (commit_start, what the pipeline uses); the other calls block.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "storage/spool.h"
#include "storage/storage.h"

typedef struct {
    lr_remote_store r; /* first: the store is an lr_store */
    char *url;         /* https://<ref>.supabase.co, no trailing slash */
    char *auth_header; /* NULL for an sb_secret_… key */
    char *apikey_header;
} sb_store;

typedef struct {
    char *buf;
    size_t len;
    size_t max;
    bool too_large;
} body_buf;

static size_t keep_body(char *src, size_t size, size_t n, void *arg)
{
    body_buf *b = arg;
    size_t len = size * n;
    if (b->len + len > b->max) {
        b->too_large = true;
        return 0; /* abort the transfer */
    }
    b->buf = lr_xrealloc(b->buf, b->len + len + 1);
    memcpy(b->buf + b->len, src, len);
    b->len += len;
    b->buf[b->len] = '\0';
    return len;
}

/* One request, as sb_call takes it. */
typedef struct {
    const char *method;
    const char *path;         /* after the project URL */
    lr_spool_range *body;     /* an upload streamed from a spool, or NULL */
    const char *content_type; /* or NULL */
    const char *json;         /* a small body sent from memory, or NULL */
    body_buf *resp;           /* keeps the answer's body, or NULL */
} sb_req;

/* What a prepared request holds until it is answered. */
typedef struct {
    struct curl_slist *headers;
    char *url;
    body_buf ignored;
} sb_held;

static void sb_held_clear(sb_held *h)
{
    curl_slist_free_all(h->headers);
    free(h->url);
    free(h->ignored.buf);
    *h = (sb_held){0};
}

/* Sets up c (new or reset) for q; q and h must outlive the transfer. */
static void sb_prepare(sb_store *s, const sb_req *q, CURL *c, sb_held *h)
{
    h->url = lr_xasprintf("%s%s", s->url, q->path);
    h->ignored.max = 65536;
    if (s->auth_header)
        h->headers = curl_slist_append(h->headers, s->auth_header);
    h->headers = curl_slist_append(h->headers, s->apikey_header);
    if (q->content_type) {
        char line[160];
        snprintf(line, sizeof line, "Content-Type: %s", q->content_type);
        h->headers = curl_slist_append(h->headers, line);
    }
    if (q->body)
        h->headers = curl_slist_append(h->headers, "x-upsert: true");
    curl_easy_setopt(c, CURLOPT_URL, h->url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, q->method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h->headers);
    lr_spool_curl_defaults(c);
    if (q->body) {
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, lr_spool_read_cb);
        curl_easy_setopt(c, CURLOPT_READDATA, q->body);
        curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)q->body->left);
    } else if (q->json) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, q->json);
    }
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, keep_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, q->resp ? q->resp : &h->ignored);
}

/* q's HTTP status once c finished with rc (0: no answer); logs a failure. */
static long sb_answer(const sb_req *q, CURL *c, const sb_held *h, CURLcode rc)
{
    long status = 0;
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    else if (!(q->resp && q->resp->too_large))
        lr_error("supabase storage: %s %s: %s", q->method, q->path, curl_easy_strerror(rc));
    if (status >= 300)
        lr_error("supabase storage: %s %s: HTTP %ld %s", q->method, q->path, status,
                 h->ignored.buf ? h->ignored.buf : "");
    return status;
}

/* One authenticated request, blocking; returns the HTTP status (0: no
 * answer). */
static long sb_call(sb_store *s, const sb_req *q)
{
    CURL *c = curl_easy_init();
    if (!c)
        return 0;
    sb_held h = {0};
    sb_prepare(s, q, c, &h);
    long status = sb_answer(q, c, &h, curl_easy_perform(c));
    sb_held_clear(&h);
    curl_easy_cleanup(c);
    return status;
}

static lr_err sb_open_writer(lr_store *st, const char *key, const char *content_type,
                             lr_store_writer **out)
{
    return lr_spooled_open(st, ((sb_store *)st)->r.tmp_dir, key, content_type, out);
}

/* A commit: one streamed POST of the spool. */
typedef struct {
    lr_spooled_op op; /* first */
    bool sent;
    char path[2048];
    lr_spool_range body;
    sb_req q;
    sb_held held;
} sb_commit_op;

static bool commit_next(lr_spooled_op *op)
{
    sb_commit_op *m = (sb_commit_op *)op;
    if (m->sent)
        return false;
    m->sent = true;
    sb_prepare(op->w->store, &m->q, op->xfer.easy, &m->held);
    return true;
}

static void commit_answer(lr_spooled_op *op, CURLcode rc)
{
    sb_commit_op *m = (sb_commit_op *)op;
    op->result = sb_answer(&m->q, op->xfer.easy, &m->held, rc) == 200 ? LR_OK : LR_ERR_IO;
}

static void commit_clear(lr_spooled_op *op)
{
    sb_held_clear(&((sb_commit_op *)op)->held);
}

static lr_spooled_op *commit_op(lr_store_writer *w)
{
    sb_commit_op *m = lr_xcalloc(1, sizeof *m);
    m->op = (lr_spooled_op){.w = w,
                            .next = commit_next,
                            .answer = commit_answer,
                            .clear = commit_clear,
                            .result = LR_ERR_IO};
    snprintf(m->path, sizeof m->path, "/storage/v1/object/%s/%s",
             ((sb_store *)w->store)->r.base.bucket, w->key);
    m->body = (lr_spool_range){w->spool.fd, 0, w->spool.size};
    m->q = (sb_req){
        .method = "POST", .path = m->path, .body = &m->body, .content_type = w->content_type};
    return &m->op;
}

static lr_err sb_commit(lr_store_writer *w)
{
    return lr_spooled_run(commit_op(w));
}

static void sb_commit_start(lr_store_writer *w, lr_store_commit *c)
{
    lr_spooled_start(commit_op(w), c);
}

static lr_err sb_remove(lr_store *st, const char *key)
{
    sb_store *s = (sb_store *)st;
    if (!lr_store_key_valid(key))
        return LR_ERR_INVALID;
    char path[1024];
    snprintf(path, sizeof path, "/storage/v1/object/%s", s->r.base.bucket);
    json_t *j = json_pack("{s:[s]}", "prefixes", key);
    char *body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    body_buf resp = {.max = 65536};
    long status = sb_call(s, &(sb_req){.method = "DELETE",
                                       .path = path,
                                       .content_type = "application/json",
                                       .json = body,
                                       .resp = &resp});
    free(body);
    /* Storage answers 200 with the deleted objects: an empty list means it
     * was not there. */
    json_t *arr = resp.buf ? json_loads(resp.buf, 0, NULL) : NULL;
    lr_err e = status != 200                                 ? LR_ERR_IO
               : json_is_array(arr) && !json_array_size(arr) ? LR_ERR_NOT_FOUND
                                                             : LR_OK;
    json_decref(arr);
    free(resp.buf);
    return e;
}

static lr_err sb_read(lr_store *st, const char *key, size_t max, char **buf, size_t *len)
{
    sb_store *s = (sb_store *)st;
    if (!lr_store_key_valid(key))
        return LR_ERR_INVALID;
    char path[2048];
    snprintf(path, sizeof path, "/storage/v1/object/%s/%s", s->r.base.bucket, key);
    body_buf resp = {.max = max};
    long status = sb_call(s, &(sb_req){.method = "GET", .path = path, .resp = &resp});
    if (status != 200) {
        free(resp.buf);
        return resp.too_large                     ? LR_ERR_TOO_LARGE
               : (status == 404 || status == 400) ? LR_ERR_NOT_FOUND
                                                  : LR_ERR_IO;
    }
    *buf = resp.buf ? resp.buf : lr_xstrdup("");
    *len = resp.len;
    return LR_OK;
}

static lr_err sb_ping(lr_store *st)
{
    sb_store *s = (sb_store *)st;
    char path[1024];
    snprintf(path, sizeof path, "/storage/v1/bucket/%s", s->r.base.bucket);
    return lr_spool_bucket_status(sb_call(s, &(sb_req){.method = "GET", .path = path}));
}

static void sb_close(lr_store *st)
{
    sb_store *s = (sb_store *)st;
    lr_remote_store_clear(&s->r);
    free(s->url);
    lr_secret_free(s->auth_header);
    lr_secret_free(s->apikey_header);
    free(s);
}

static const lr_store_ops sb_ops = {
    .open_writer = sb_open_writer,
    .write = lr_spooled_write,
    .commit = sb_commit,
    .commit_start = sb_commit_start,
    .abort = lr_spooled_free,
    .remove = sb_remove,
    .open_local = NULL,
    .ping = sb_ping,
    .sweep = lr_remote_store_sweep,
    .read = sb_read,
    .close = sb_close,
};

lr_err lr_store_supabase_open(const char *url, const char *service_key, const char *bucket,
                              const char *tmp_dir, lr_store **out)
{
    sb_store *s = lr_xcalloc(1, sizeof *s);
    s->url = lr_xstrdup(url);
    size_t n = strlen(s->url);
    while (n > 0 && s->url[n - 1] == '/')
        s->url[--n] = '\0';
    if (strncmp(service_key, "sb_", 3) != 0) /* a legacy service_role JWT */
        s->auth_header = lr_xasprintf("Authorization: Bearer %s", service_key);
    s->apikey_header = lr_xasprintf("apikey: %s", service_key);
    lr_err e = lr_remote_store_init(&s->r, &sb_ops, "supabase", bucket, tmp_dir);
    if (e != LR_OK) {
        sb_close(&s->r.base);
        return e;
    }
    s->r.base.url_prefix = lr_xasprintf("%s/storage/v1/object/public/%s", s->url, bucket);
    *out = &s->r.base;
    return LR_OK;
}
