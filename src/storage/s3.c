/* S3-protocol backend (AWS S3, R2, MinIO, Supabase Storage's S3 endpoint).
 *
 * Requests are signed with AWS Signature V4 by libcurl (CURLOPT_AWS_SIGV4);
 * curl does not add x-amz-content-sha256, so we send the payload's real
 * SHA-256 and curl signs it. A writer spools the object to an unlinked
 * temp file while hashing it (memory stays flat whatever the size), then
 * commits with one streamed PUT; objects over the part size go up as a
 * multipart upload, part by part from the same file. A commit's requests
 * run blocking (commit) or on the event loop (commit_start, what the
 * pipeline uses); the other calls block.
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "storage/spool.h"
#include "storage/storage.h"

typedef struct {
    lr_remote_store r; /* first: the store is an lr_store */
    char *endpoint;    /* scheme://host[:port], no trailing slash */
    char *region;
    char *userpwd; /* key:secret for curl */
    char *sigv4;   /* aws:amz:<region>:s3 */
    bool path_style;
    size_t part_size;
} s3_store;

typedef struct {
    char *buf;
    size_t len;
} sink_buf;

/* One S3 request, as s3_call takes it. */
typedef struct {
    const char *method;
    const char *key;          /* NULL: the bucket itself */
    const char *query;        /* sorted and encoded (SigV4 signs it as written), or NULL */
    lr_spool_range *body;     /* streamed from a spool, or NULL */
    const char *payload_sha;  /* hex or UNSIGNED-PAYLOAD; NULL: the empty body's */
    const char *content_type; /* or NULL */
    const char *xml;          /* a small body sent from memory, or NULL */
    sink_buf *resp;           /* keeps the answer's body, or NULL */
    char *etag;               /* receives the ETag header, or NULL */
    size_t etag_len;
} s3_req;

/* Keeps at most 64 KiB of a response (S3 answers are small XML). */
static size_t keep_response(char *src, size_t size, size_t n, void *arg)
{
    sink_buf *k = arg;
    size_t len = size * n;
    if (k->len + len > 65536)
        return len;
    k->buf = lr_xrealloc(k->buf, k->len + len + 1);
    memcpy(k->buf + k->len, src, len);
    k->len += len;
    k->buf[k->len] = '\0';
    return len;
}

static char *object_url(const s3_store *s, const char *key, const char *query)
{
    const char *q = query ? query : "";
    const char *sep = query ? "?" : "";
    const char *bucket = s->r.base.bucket;
    if (s->path_style)
        return lr_xasprintf("%s/%s%s%s%s%s", s->endpoint, bucket, key ? "/" : "", key ? key : "",
                            sep, q);
    const char *host = strstr(s->endpoint, "://");
    host = host ? host + 3 : s->endpoint;
    return lr_xasprintf("%.*s%s.%s/%s%s%s", (int)(host - s->endpoint), s->endpoint, bucket, host,
                        key ? key : "", sep, q);
}

static const char EMPTY_SHA256[] =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/* What a prepared request holds until it is answered. */
typedef struct {
    struct curl_slist *headers;
    char *url;
    sink_buf ignored; /* the answer's body when the request keeps none */
} s3_held;

static void s3_held_clear(s3_held *h)
{
    curl_slist_free_all(h->headers);
    free(h->url);
    free(h->ignored.buf);
    *h = (s3_held){0};
}

/* Sets up c (new or reset) for q, signed; q and h must outlive the
 * transfer. */
static void s3_prepare(s3_store *s, const s3_req *q, CURL *c, s3_held *h)
{
    h->url = object_url(s, q->key, q->query);
    char line[160];
    snprintf(line, sizeof line, "x-amz-content-sha256: %s",
             q->payload_sha ? q->payload_sha : EMPTY_SHA256);
    h->headers = curl_slist_append(h->headers, line);
    if (q->content_type) {
        snprintf(line, sizeof line, "Content-Type: %s", q->content_type);
        h->headers = curl_slist_append(h->headers, line);
    }
    /* No "Expect:" override: curl 7.88 would sign the removed header as
     * empty and the signature would no longer match what it sends. */
    curl_easy_setopt(c, CURLOPT_URL, h->url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, q->method);
    curl_easy_setopt(c, CURLOPT_AWS_SIGV4, s->sigv4);
    curl_easy_setopt(c, CURLOPT_USERPWD, s->userpwd);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h->headers);
    lr_spool_curl_defaults(c);
    if (q->body) {
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, lr_spool_read_cb);
        curl_easy_setopt(c, CURLOPT_READDATA, q->body);
        curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)q->body->left);
    } else if (q->xml) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, q->xml);
    } else if (!strcmp(q->method, "HEAD")) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    }
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, keep_response);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, q->resp ? q->resp : &h->ignored);
}

/* q's HTTP status once c finished with rc (0: no answer); fills q->etag
 * and logs a failure. */
static long s3_answer(const s3_req *q, CURL *c, const s3_held *h, CURLcode rc)
{
    long status = 0;
    const char *what = q->key ? q->key : "(bucket)";
    if (rc == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        struct curl_header *eh;
        if (q->etag && curl_easy_header(c, "ETag", 0, CURLH_HEADER, -1, &eh) == CURLHE_OK)
            snprintf(q->etag, q->etag_len, "%s", eh->value);
    } else {
        lr_error("s3: %s %s: %s", q->method, what, curl_easy_strerror(rc));
    }
    const sink_buf *resp = q->resp ? q->resp : &h->ignored;
    if (status >= 300)
        lr_error("s3: %s %s: HTTP %ld %s", q->method, what, status, resp->buf ? resp->buf : "");
    return status;
}

/* One signed request, blocking; returns the HTTP status (0: no answer). */
static long s3_call(s3_store *s, const s3_req *q)
{
    CURL *c = curl_easy_init();
    if (!c)
        return 0;
    s3_held h = {0};
    s3_prepare(s, q, c, &h);
    long status = s3_answer(q, c, &h, curl_easy_perform(c));
    s3_held_clear(&h);
    curl_easy_cleanup(c);
    return status;
}

static lr_err s3_open_writer(lr_store *st, const char *key, const char *content_type,
                             lr_store_writer **out)
{
    return lr_spooled_open(st, ((s3_store *)st)->r.tmp_dir, key, content_type, out);
}

/* Between <UploadId> tags of an S3 answer. */
static char *xml_value(const char *xml, const char *tag)
{
    char open[64], close_[64];
    snprintf(open, sizeof open, "<%s>", tag);
    snprintf(close_, sizeof close_, "</%s>", tag);
    const char *a = xml ? strstr(xml, open) : NULL;
    const char *b = a ? strstr(a, close_) : NULL;
    return b ? lr_xstrndup(a + strlen(open), (size_t)(b - a - strlen(open))) : NULL;
}

/* A commit: one PUT, or a multipart upload (create, the parts in order
 * from the spool, complete; abort after any failure, so the bucket keeps
 * no parts), one request at a time. */
typedef enum { PUT_WHOLE, CREATE, PART, COMPLETE, ABORT, FINISHED } s3_step;

typedef struct {
    lr_spooled_op op; /* first */
    s3_store *s;
    s3_step step;
    s3_req q; /* the request in flight, and what it holds */
    s3_held held;
    lr_spool_range body;
    sink_buf resp;
    char etag[96];
    char query[512];
    char sha[65];
    char *upload_id;
    size_t part, parts;
    char *xml; /* CompleteMultipartUpload, built as the parts' ETags come */
    size_t xml_len, xml_cap;
} s3_commit_op;

static void xml_add(s3_commit_op *m, const char *text)
{
    lr_buf_append(&m->xml, &m->xml_len, &m->xml_cap, text, strlen(text));
}

static void commit_request(s3_commit_op *m)
{
    lr_store_writer *w = m->op.w;
    size_t size = w->spool.size, ps = m->s->part_size;
    s3_req q = {.key = w->key, .resp = &m->resp};
    switch (m->step) {
    case PUT_WHOLE:
        m->body = (lr_spool_range){w->spool.fd, 0, size};
        q = (s3_req){.method = "PUT",
                     .key = w->key,
                     .body = &m->body,
                     .payload_sha = m->sha,
                     .content_type = w->content_type,
                     .resp = &m->resp};
        break;
    case CREATE:
        q.method = "POST";
        q.query = "uploads=";
        q.content_type = w->content_type;
        q.xml = "";
        break;
    case PART: {
        /* Parts are signed as UNSIGNED-PAYLOAD: hashing each would read
         * the spool twice; TLS protects the bytes in transit. */
        size_t off = m->part * ps;
        m->body = (lr_spool_range){w->spool.fd, (off_t)off, size - off < ps ? size - off : ps};
        snprintf(m->query, sizeof m->query, "partNumber=%zu&uploadId=%s", m->part + 1,
                 m->upload_id);
        q = (s3_req){.method = "PUT",
                     .key = w->key,
                     .query = m->query,
                     .body = &m->body,
                     .payload_sha = "UNSIGNED-PAYLOAD",
                     .resp = &m->resp,
                     .etag = m->etag,
                     .etag_len = sizeof m->etag};
        break;
    }
    case COMPLETE: {
        unsigned char d[32];
        EVP_Digest(m->xml, m->xml_len, d, NULL, EVP_sha256(), NULL);
        lr_hex(d, 32, m->sha);
        snprintf(m->query, sizeof m->query, "uploadId=%s", m->upload_id);
        q.method = "POST";
        q.query = m->query;
        q.payload_sha = m->sha;
        q.content_type = "application/xml";
        q.xml = m->xml;
        break;
    }
    default: /* ABORT */
        snprintf(m->query, sizeof m->query, "uploadId=%s", m->upload_id);
        q.method = "DELETE";
        q.query = m->query;
        break;
    }
    m->q = q;
}

static bool commit_next(lr_spooled_op *op)
{
    s3_commit_op *m = (s3_commit_op *)op;
    if (m->step == FINISHED)
        return false;
    s3_held_clear(&m->held);
    free(m->resp.buf);
    m->resp = (sink_buf){0};
    m->etag[0] = '\0';
    commit_request(m);
    s3_prepare(m->s, &m->q, op->xfer.easy, &m->held);
    return true;
}

static void commit_answer(lr_spooled_op *op, CURLcode rc)
{
    s3_commit_op *m = (s3_commit_op *)op;
    long status = s3_answer(&m->q, op->xfer.easy, &m->held, rc);
    switch (m->step) {
    case PUT_WHOLE:
        op->result = status == 200 ? LR_OK : LR_ERR_IO;
        m->step = FINISHED;
        break;
    case CREATE:
        m->upload_id = status == 200 ? xml_value(m->resp.buf, "UploadId") : NULL;
        m->step = m->upload_id ? PART : FINISHED;
        if (m->upload_id)
            xml_add(m, "<CompleteMultipartUpload>");
        break;
    case PART:
        if (status != 200 || !m->etag[0]) {
            m->step = ABORT;
            break;
        }
        char part[160];
        snprintf(part, sizeof part, "<Part><PartNumber>%zu</PartNumber><ETag>%s</ETag></Part>",
                 m->part + 1, m->etag);
        xml_add(m, part);
        if (++m->part == m->parts) {
            xml_add(m, "</CompleteMultipartUpload>");
            m->step = COMPLETE;
        }
        break;
    case COMPLETE:
        /* S3 may answer 200 and still report an error in the body. */
        if (status == 200 && !(m->resp.buf && strstr(m->resp.buf, "<Error>"))) {
            op->result = LR_OK;
            m->step = FINISHED;
        } else {
            m->step = ABORT;
        }
        break;
    default: m->step = FINISHED;
    }
}

static void commit_clear(lr_spooled_op *op)
{
    s3_commit_op *m = (s3_commit_op *)op;
    s3_held_clear(&m->held);
    free(m->resp.buf);
    free(m->upload_id);
    free(m->xml);
}

/* The commit's steps for w; nothing sent yet. */
static lr_spooled_op *commit_op(lr_store_writer *w)
{
    s3_commit_op *m = lr_xcalloc(1, sizeof *m);
    m->s = w->store;
    m->op = (lr_spooled_op){.w = w,
                            .next = commit_next,
                            .answer = commit_answer,
                            .clear = commit_clear,
                            .result = LR_ERR_IO};
    size_t ps = m->s->part_size;
    m->parts = (w->spool.size + ps - 1) / ps;
    m->step = w->spool.size > ps ? CREATE : PUT_WHOLE;
    lr_spool_sha256_hex(&w->spool, m->sha);
    return &m->op;
}

static lr_err s3_commit(lr_store_writer *w)
{
    return lr_spooled_run(commit_op(w));
}

static void s3_commit_start(lr_store_writer *w, lr_store_commit *c)
{
    lr_spooled_start(commit_op(w), c);
}

static lr_err s3_remove(lr_store *st, const char *key)
{
    if (!lr_store_key_valid(key))
        return LR_ERR_INVALID;
    long status = s3_call((s3_store *)st, &(s3_req){.method = "DELETE", .key = key});
    return status == 204 || status == 200 ? LR_OK : status == 404 ? LR_ERR_NOT_FOUND : LR_ERR_IO;
}

static lr_err s3_read(lr_store *st, const char *key, size_t max, char **buf, size_t *len)
{
    if (!lr_store_key_valid(key))
        return LR_ERR_INVALID;
    sink_buf resp = {0};
    long status = s3_call((s3_store *)st, &(s3_req){.method = "GET", .key = key, .resp = &resp});
    if (status != 200) {
        free(resp.buf);
        return status == 404 ? LR_ERR_NOT_FOUND : LR_ERR_IO;
    }
    if (resp.len > max) {
        free(resp.buf);
        return LR_ERR_TOO_LARGE;
    }
    *buf = resp.buf ? resp.buf : lr_xstrdup("");
    *len = resp.len;
    return LR_OK;
}

static lr_err s3_ping(lr_store *st)
{
    return lr_spool_bucket_status(s3_call((s3_store *)st, &(s3_req){.method = "HEAD"}));
}

static void s3_close(lr_store *st)
{
    s3_store *s = (s3_store *)st;
    lr_remote_store_clear(&s->r);
    free(s->endpoint);
    free(s->region);
    lr_secret_free(s->userpwd);
    free(s->sigv4);
    free(s);
}

static const lr_store_ops s3_ops = {
    .open_writer = s3_open_writer,
    .write = lr_spooled_write,
    .commit = s3_commit,
    .commit_start = s3_commit_start,
    .abort = lr_spooled_free,
    .remove = s3_remove,
    .open_local = NULL,
    .ping = s3_ping,
    .sweep = lr_remote_store_sweep,
    .read = s3_read,
    .close = s3_close,
};

static void trim_slashes(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '/')
        s[--n] = '\0';
}

lr_err lr_store_s3_open(const lr_s3_options *o, lr_store **out)
{
    s3_store *s = lr_xcalloc(1, sizeof *s);
    s->endpoint = lr_xstrdup(o->endpoint);
    trim_slashes(s->endpoint);
    s->region = lr_xstrdup(o->region);
    s->path_style = o->path_style;
    s->part_size = o->part_size ? o->part_size : 16u * 1024u * 1024u;
    s->userpwd = lr_xasprintf("%s:%s", o->access_key, o->secret_key);
    s->sigv4 = lr_xasprintf("aws:amz:%s:s3", o->region);
    lr_err e = lr_remote_store_init(&s->r, &s3_ops, "s3", o->bucket, o->tmp_dir);
    if (e != LR_OK) {
        s3_close(&s->r.base);
        return e;
    }
    s->r.base.url_prefix = o->public_url ? lr_xstrdup(o->public_url) : object_url(s, NULL, NULL);
    trim_slashes(s->r.base.url_prefix);
    *out = &s->r.base;
    return LR_OK;
}
