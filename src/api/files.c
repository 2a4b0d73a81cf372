/* Public files of the local storage backend, at the same path shape as
 * Supabase Storage: GET /storage/v1/object/public/{bucket}/{key}.
 * Content-Type from the stored extension (decided by magic bytes at
 * upload), a strong ETag from size and mtime, single byte ranges. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/api.h"

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

void lr_api_public_file(lr_app *app, lr_req *req, const char *rest)
{
    const char *slash = strchr(rest, '/');
    size_t blen = slash ? (size_t)(slash - rest) : 0;
    if (!slash || blen != strlen(app->store->bucket) ||
        strncmp(rest, app->store->bucket, blen) != 0) {
        lr_api_error(req, LR_CODE_NOT_FOUND, "Object not found", NULL);
        return;
    }
    const char *key = slash + 1;
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
