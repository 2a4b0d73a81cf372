/* Public files of the local storage backend, at the same path shape as
 * Supabase Storage: GET /storage/v1/object/public/{bucket}/{key}.
 * Content-Type from the stored extension (decided by magic bytes at
 * upload), a strong ETag from size and mtime, single byte ranges. Also
 * Supabase's image transformation URL, /storage/v1/render/image/public/
 * {bucket}/{key}: resized variants made and cached by media/render.h. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "api/api.h"
#include "media/render.h"

/* bytes=a-b | a- | -n against size; 0 ok, 1 unsatisfiable, -1 ignore. */
static int parse_range(const char *h, uint64_t size, uint64_t *off, uint64_t *len)
{
    if (strncmp(h, "bytes=", 6) != 0 || strchr(h, ','))
        return -1;
    const char *p = h + 6;
    char *end;
    if (*p == '-') {
        unsigned long long n = strtoull(p + 1, &end, 10);
        if (end == p + 1 || *end)
            return -1;
        if (n == 0 || size == 0)
            return 1;
        if (n > size)
            n = size;
        *off = size - n;
        *len = n;
        return 0;
    }
    unsigned long long a = strtoull(p, &end, 10);
    if (end == p || *end != '-')
        return -1;
    p = end + 1;
    unsigned long long b = size ? size - 1 : 0;
    if (*p) {
        b = strtoull(p, &end, 10);
        if (*end || b < a)
            return -1;
        if (b >= size)
            b = size - 1;
    }
    if (a >= size)
        return 1;
    *off = a;
    *len = b - a + 1;
    return 0;
}

/* The key of {bucket}/{key} in this server's bucket; NULL (answered 404)
 * for another bucket. */
static const char *key_in_bucket(lr_app *app, lr_req *req, const char *rest)
{
    const char *slash = strchr(rest, '/');
    size_t blen = slash ? (size_t)(slash - rest) : 0;
    if (!slash || blen != strlen(app->store->bucket) ||
        strncmp(rest, app->store->bucket, blen) != 0) {
        lr_api_error(req, LR_CODE_NOT_FOUND, "Object not found", NULL);
        return NULL;
    }
    return slash + 1;
}

void lr_api_public_file(lr_app *app, lr_req *req, const char *rest)
{
    const char *key = key_in_bucket(app, req, rest);
    if (!key)
        return;
    const char *dot = strrchr(key, '.');
    const lr_mime *mime = dot ? lr_mime_by_ext(dot + 1) : NULL;
    if (!lr_store_key_valid(key) || !mime) {
        lr_api_error(req, LR_CODE_NOT_FOUND, "Object not found", NULL);
        return;
    }
    int fd;
    struct stat st;
    if (!app->store->ops->open_local ||
        app->store->ops->open_local(app->store, key, &fd, &st) != LR_OK) {
        lr_api_error(req, LR_CODE_NOT_FOUND, "Object not found", NULL);
        return;
    }
    char etag[64];
    snprintf(etag, sizeof etag, "\"%" PRIx64 "-%" PRIx64 "\"", (uint64_t)st.st_size,
             (uint64_t)st.st_mtim.tv_sec * 1000000000u + (uint64_t)st.st_mtim.tv_nsec);
    lr_req_set_header(req, "ETag", etag);
    lr_req_set_header(req, "Accept-Ranges", "bytes");
    lr_req_set_header(req, "Cache-Control", "public, max-age=31536000, immutable");
    const char *inm = lr_req_header(req, "If-None-Match");
    if (inm && (strstr(inm, etag) || !strcmp(inm, "*"))) {
        close(fd);
        lr_req_reply_empty(req, 304);
        return;
    }
    uint64_t size = (uint64_t)st.st_size, off = 0, len = size;
    const char *range = lr_req_header(req, "Range");
    const char *if_range = lr_req_header(req, "If-Range");
    int r = (range && (!if_range || !strcmp(if_range, etag))) ? parse_range(range, size, &off, &len)
                                                              : -1;
    char cr[96];
    if (r == 1) {
        close(fd);
        snprintf(cr, sizeof cr, "bytes */%" PRIu64, size);
        lr_req_set_header(req, "Content-Range", cr);
        lr_api_error(req, LR_CODE_RANGE_NOT_SATISFIABLE, "Requested range not satisfiable", NULL);
        return;
    }
    if (r == 0) {
        snprintf(cr, sizeof cr, "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, off, off + len - 1, size);
        lr_req_set_header(req, "Content-Range", cr);
        lr_req_reply_fd(req, 206, fd, off, len, mime->content_type);
        return;
    }
    lr_req_reply_fd(req, 200, fd, 0, size, mime->content_type);
}

/* width, height, quality, resize and the format of a render URL into s;
 * false (answered 422) when one is out of range. Supabase's defaults:
 * resize cover, quality 80; WebP when the client accepts it (and did not
 * ask for format=origin), else PNG. */
static bool render_size(lr_app *app, lr_req *req, lr_media_size *s)
{
    long w = 0, h = 0, q = 80;
    int max = app->cfg->render_max_side;
    const char *ws = lr_req_query(req, "width"), *hs = lr_req_query(req, "height");
    const char *qs = lr_req_query(req, "quality"), *rs = lr_req_query(req, "resize");
    const char *fs = lr_req_query(req, "format"), *accept = lr_req_header(req, "Accept");
    lr_media_fit fit = LR_FIT_COVER;
    if (rs && !strcmp(rs, "contain"))
        fit = LR_FIT_CONTAIN;
    else if (rs && !strcmp(rs, "fill"))
        fit = LR_FIT_FILL;
    if ((ws && lr_parse_long(ws, 1, max, &w) != 0) || (hs && lr_parse_long(hs, 1, max, &h) != 0) ||
        (qs && lr_parse_long(qs, 20, 100, &q) != 0) ||
        (rs && strcmp(rs, "cover") != 0 && fit == LR_FIT_COVER) ||
        (fs && strcmp(fs, "origin") != 0)) {
        char msg[160];
        snprintf(msg, sizeof msg,
                 "width and height must be 1 to %d, quality 20 to 100, resize cover, contain or "
                 "fill, format origin",
                 max);
        lr_api_error(req, LR_CODE_INVALID_PARAMETER, msg, NULL);
        return false;
    }
    *s = (lr_media_size){.width = (int)w, .height = (int)h, .fit = fit, .quality = (int)q};
    if (!w && !h) /* only a format change: the picture's own size, within the limit */
        *s = (lr_media_size){.width = max,
                             .height = max,
                             .fit = LR_FIT_CONTAIN,
                             .quality = (int)q,
                             .no_upscale = true};
    bool webp = accept && strstr(accept, "image/webp") && !fs;
    s->format = webp ? LR_OUT_WEBP : LR_OUT_PNG;
    return true;
}

/* Supabase Storage has the same URL shape at its own host: sent there. */
static void render_elsewhere(lr_app *app, lr_req *req, const char *key)
{
    const char *prefix = app->store->url_prefix;
    const char *obj = strstr(prefix, "/storage/v1/object/public/");
    if (strcmp(app->store->backend, "supabase") != 0 || !obj) {
        lr_api_error(req, LR_CODE_NOT_FOUND,
                     "Image transformations are served for the local storage backend only", NULL);
        return;
    }
    const char *names[] = {"width", "height", "quality", "resize", "format"};
    char query[512] = "";
    size_t n = 0;
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        const char *v = lr_req_query(req, names[i]);
        char *enc = v ? curl_easy_escape(NULL, v, 0) : NULL;
        if (enc && n < sizeof query)
            n += (size_t)snprintf(query + n, sizeof query - n, "%s%s=%s", n ? "&" : "?", names[i],
                                  enc);
        curl_free(enc);
    }
    char *loc = NULL;
    if (asprintf(&loc, "%.*s/storage/v1/render/image/public/%s/%s%s", (int)(obj - prefix), prefix,
                 obj + strlen("/storage/v1/object/public/"), key,
                 n < sizeof query ? query : "") < 0)
        abort();
    lr_req_set_header(req, "Location", loc);
    free(loc);
    lr_req_reply_empty(req, 302);
}

void lr_api_render_image(lr_app *app, lr_req *req, const char *rest)
{
    const char *key = key_in_bucket(app, req, rest);
    lr_media_size s;
    if (!key || !render_size(app, req, &s))
        return;
    if (!app->render) {
        render_elsewhere(app, req, key);
        return;
    }
    int fd;
    struct stat st;
    lr_media_reason why = {{0}};
    lr_err e = lr_render_variant(app->render, key, &s, &fd, &st, &why);
    if (e == LR_ERR_NOT_FOUND) {
        lr_api_error(req, LR_CODE_NOT_FOUND, "Object not found", NULL);
        return;
    }
    if (e == LR_ERR_UNAVAILABLE && !why.text[0]) {
        lr_req_set_header(req, "Retry-After", "1");
        lr_api_error(req, LR_CODE_RATE_LIMITED, "Another image is being resized; retry", NULL);
        return;
    }
    if (e != LR_OK) {
        lr_api_error(req, LR_CODE_UNSUPPORTED_INPUT_IMAGE, why.text[0] ? why.text : lr_strerror(e),
                     NULL);
        return;
    }
    char etag[64];
    snprintf(etag, sizeof etag, "\"r%" PRIx64 "-%" PRIx64 "\"", (uint64_t)st.st_size,
             (uint64_t)st.st_mtim.tv_sec * 1000000000u + (uint64_t)st.st_mtim.tv_nsec);
    lr_req_set_header(req, "ETag", etag);
    lr_req_set_header(req, "Vary", "Accept");
    lr_req_set_header(req, "Cache-Control", "public, max-age=86400");
    const char *inm = lr_req_header(req, "If-None-Match");
    if (inm && strstr(inm, etag)) {
        close(fd);
        lr_req_reply_empty(req, 304);
        return;
    }
    lr_req_reply_fd(req, 200, fd, 0, (uint64_t)st.st_size,
                    s.format == LR_OUT_PNG ? "image/png" : "image/webp");
}
