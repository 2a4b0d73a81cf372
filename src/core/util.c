#include "core/util.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void lr_random_bytes(unsigned char *out, size_t len)
{
    if (RAND_bytes(out, (int)len) != 1)
        abort(); /* a broken CSPRNG must never produce ids or secrets */
}

/* b as the text of a UUID of the given version (RFC 9562 variant). */
static void uuid_text(unsigned char b[16], int version, char out[LR_UUID_LEN + 1])
{
    b[6] = (unsigned char)((b[6] & 0x0f) | (version << 4));
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, LR_UUID_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
}

void lr_uuid_v4(char out[LR_UUID_LEN + 1])
{
    unsigned char b[16];
    lr_random_bytes(b, sizeof b);
    uuid_text(b, 4, out);
}

void lr_uuid_v7(char out[LR_UUID_LEN + 1])
{
    unsigned char b[16];
    lr_random_bytes(b, sizeof b);
    uint64_t ms = (uint64_t)lr_now_ms();
    for (int i = 0; i < 6; i++)
        b[i] = (unsigned char)(ms >> (40 - 8 * i));
    uuid_text(b, 7, out);
}

static bool is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

bool lr_uuid_valid(const char *s, size_t len)
{
    if (!s || len != LR_UUID_LEN)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return false;
        } else if (!is_hex(s[i])) {
            return false;
        }
    }
    return true;
}

int64_t lr_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t lr_monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void lr_time_iso(int64_t ms, char out[32])
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03dZ", (int)(ms % 1000));
}

void *lr_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        abort();
    return p;
}

void *lr_xcalloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        abort();
    return p;
}

void *lr_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        abort();
    return q;
}

char *lr_xstrndup(const char *s, size_t n)
{
    if (!s)
        return NULL;
    char *d = strndup(s, n);
    if (!d)
        abort();
    return d;
}

char *lr_xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s;
    int rc = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (rc < 0)
        abort();
    return s;
}

void lr_strv_push(lr_strv *a, const char *s)
{
    a->v = lr_xrealloc(a->v, (a->n + 1) * sizeof *a->v);
    a->v[a->n++] = lr_xstrdup(s);
}

void lr_strv_clear(lr_strv *a)
{
    for (size_t i = 0; i < a->n; i++)
        free(a->v[i]);
    free(a->v);
    *a = (lr_strv){0};
}

json_t *lr_strv_json(const lr_strv *a)
{
    json_t *j = json_array();
    for (size_t i = 0; i < a->n; i++)
        json_array_append_new(j, a->v[i] ? json_string(a->v[i]) : json_null());
    return j;
}

char *lr_xstrdup(const char *s)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        abort();
    return d;
}

void lr_buf_append(char **buf, size_t *len, size_t *cap, const void *data, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 1024;
        while (c < *len + n + 1)
            c *= 2;
        *buf = lr_xrealloc(*buf, c);
        *cap = c;
    }
    memcpy(*buf + *len, data, n);
    *len += n;
    (*buf)[*len] = '\0';
}

int64_t lr_time_parse_iso(const char *s)
{
    struct tm tm = {0};
    const char *rest = s ? strptime(s, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
    if (!rest)
        return -1;
    int64_t ms = (int64_t)timegm(&tm) * 1000;
    if (*rest == '.') {
        int scale = 100;
        for (rest++; *rest >= '0' && *rest <= '9'; rest++, scale /= 10)
            ms += (*rest - '0') * scale;
    }
    return ms;
}

char *lr_b64url_encode(const unsigned char *in, size_t len)
{
    size_t cap = 4 * ((len + 2) / 3) + 1;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    int n = EVP_EncodeBlock((unsigned char *)out, in, (int)len);
    while (n > 0 && out[n - 1] == '=')
        n--;
    out[n] = '\0';
    for (int i = 0; i < n; i++) {
        if (out[i] == '+')
            out[i] = '-';
        else if (out[i] == '/')
            out[i] = '_';
    }
    return out;
}

unsigned char *lr_b64_decode(const char *in, size_t len, size_t *out_len)
{
    while (len > 0 && in[len - 1] == '=')
        len--;
    if (len % 4 == 1)
        return NULL;
    /* EVP_DecodeBlock wants the standard alphabet, padded to a multiple of 4. */
    size_t padded = (len + 3) / 4 * 4;
    unsigned char *tmp = malloc(padded + 1);
    unsigned char *out = malloc(padded / 4 * 3 + 1);
    if (!tmp || !out)
        goto fail;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (c == '-')
            c = '+';
        else if (c == '_')
            c = '/';
        else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                   c == '+' || c == '/'))
            goto fail;
        tmp[i] = (unsigned char)c;
    }
    for (size_t i = len; i < padded; i++)
        tmp[i] = '=';
    int n = EVP_DecodeBlock(out, tmp, (int)padded);
    if (n < 0)
        goto fail;
    n -= (int)(padded - len); /* EVP counts padding as zero bytes */
    out[n] = '\0';
    *out_len = (size_t)n;
    free(tmp);
    return out;
fail:
    free(tmp);
    free(out);
    return NULL;
}

bool lr_ct_equal(const void *a, size_t alen, const void *b, size_t blen)
{
    if (alen != blen)
        return false;
    return CRYPTO_memcmp(a, b, alen) == 0;
}

double lr_random_unit(void)
{
    uint64_t v;
    lr_random_bytes((unsigned char *)&v, sizeof v);
    return (double)(v >> 11) / (double)(1ULL << 53);
}

static int fsync_opened(const char *path, int flags)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | flags);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

int lr_fsync_file(const char *path)
{
    return fsync_opened(path, 0);
}

int lr_fsync_dir(const char *path)
{
    return fsync_opened(path, O_DIRECTORY);
}

int lr_fsync_parent(const char *path)
{
    char *dir = lr_xstrdup(path);
    char *slash = strrchr(dir, '/');
    if (slash)
        slash[slash == dir] = '\0'; /* "/srv" -> "/" */
    int rc = lr_fsync_dir(slash ? dir : ".");
    int saved = errno;
    free(dir);
    errno = saved;
    return rc;
}

lr_err lr_mkdir_p(const char *path, unsigned mode)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf)
        return LR_ERR_IO;
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, mode) != 0 && errno != EEXIST)
                return LR_ERR_IO;
            *p = '/';
        }
    }
    if (mkdir(buf, mode) != 0 && errno != EEXIST)
        return LR_ERR_IO;
    return LR_OK;
}

char *lr_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0)
            break;
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

void lr_hex(const unsigned char *in, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}

lr_err lr_parse_long(const char *s, long min, long max, long *out)
{
    if (!s || !*s)
        return LR_ERR_INVALID;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return LR_ERR_INVALID;
    *out = v;
    return LR_OK;
}
