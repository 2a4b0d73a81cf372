/* Backup archives (archive.h) on libarchive: pax-restricted tar through
 * the zstd filter, entries streamed through one buffer and EVP SHA-256. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backup/archive.h"
#include "core/util.h"

#define CHUNK (64 * 1024)

struct lr_archive_writer {
    struct archive *a;
    int fd;
    char *path, *partial;
    unsigned char buf[CHUNK];
};

struct lr_archive_reader {
    struct archive *a;
    unsigned char buf[CHUNK];
};

static void set_err(char **errmsg, const char *what, const char *detail)
{
    if (errmsg && asprintf(errmsg, "%s: %s", what, detail ? detail : "unknown error") < 0)
        *errmsg = NULL;
}

static void hash_hex(EVP_MD_CTX *h, char out[LR_SHA256_HEX])
{
    unsigned char md[32];
    unsigned int n = 0;
    EVP_DigestFinal_ex(h, md, &n);
    lr_hex(md, n, out);
}

lr_err lr_archive_create(const char *path, lr_archive_writer **out, char **errmsg)
{
    lr_archive_writer *w = lr_xcalloc(1, sizeof *w);
    w->path = lr_xstrdup(path);
    if (asprintf(&w->partial, "%s.partial", path) < 0)
        abort();
    w->fd = open(w->partial, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (w->fd >= 0 && flock(w->fd, LOCK_EX | LOCK_NB) != 0) {
        close(w->fd);
        unlink(w->partial);
        w->fd = -1;
    }
    if (w->fd < 0) {
        set_err(errmsg, w->partial, strerror(errno));
        free(w->partial);
        free(w->path);
        free(w);
        return LR_ERR_IO;
    }
    w->a = archive_write_new();
    if (archive_write_set_format_pax_restricted(w->a) != ARCHIVE_OK ||
        archive_write_add_filter_zstd(w->a) != ARCHIVE_OK ||
        archive_write_set_bytes_in_last_block(w->a, 1) != ARCHIVE_OK ||
        archive_write_open_fd(w->a, w->fd) != ARCHIVE_OK) {
        set_err(errmsg, "archive", archive_error_string(w->a));
        lr_archive_abort(w);
        return LR_ERR_IO;
    }
    *out = w;
    return LR_OK;
}

bool lr_archive_partial_stale(const char *partial)
{
    int fd = open(partial, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT;
    bool stale = flock(fd, LOCK_EX | LOCK_NB) == 0;
    close(fd);
    return stale;
}

static lr_err write_header(lr_archive_writer *w, const char *name, int64_t size, char **errmsg)
{
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, name);
    archive_entry_set_size(e, size);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0600);
    archive_entry_set_mtime(e, time(NULL), 0);
    int rc = archive_write_header(w->a, e);
    archive_entry_free(e);
    if (rc != ARCHIVE_OK) {
        set_err(errmsg, name, archive_error_string(w->a));
        return LR_ERR_IO;
    }
    return LR_OK;
}

static lr_err write_data(lr_archive_writer *w, const char *name, const void *p, size_t n,
                         char **errmsg)
{
    if (archive_write_data(w->a, p, n) != (la_ssize_t)n) {
        set_err(errmsg, name, archive_error_string(w->a));
        return LR_ERR_IO;
    }
    return LR_OK;
}

lr_err lr_archive_add_fd(lr_archive_writer *w, const char *name, int fd, int64_t size,
                         char sha256[LR_SHA256_HEX], char **errmsg)
{
    lr_err e = write_header(w, name, size, errmsg);
    if (e != LR_OK)
        return e;
    EVP_MD_CTX *h = EVP_MD_CTX_new();
    EVP_DigestInit_ex(h, EVP_sha256(), NULL);
    int64_t left = size;
    while (e == LR_OK && left > 0) {
        ssize_t n = read(fd, w->buf, left < CHUNK ? (size_t)left : CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            set_err(errmsg, name, n < 0 ? strerror(errno) : "the file shrank while being read");
            e = LR_ERR_IO;
            break;
        }
        EVP_DigestUpdate(h, w->buf, (size_t)n);
        e = write_data(w, name, w->buf, (size_t)n, errmsg);
        left -= n;
    }
    hash_hex(h, sha256);
    EVP_MD_CTX_free(h);
    return e;
}

lr_err lr_archive_add_buf(lr_archive_writer *w, const char *name, const void *buf, size_t len,
                          char sha256[LR_SHA256_HEX], char **errmsg)
{
    lr_err e = write_header(w, name, (int64_t)len, errmsg);
    if (e == LR_OK && len > 0)
        e = write_data(w, name, buf, len, errmsg);
    EVP_MD_CTX *h = EVP_MD_CTX_new();
    EVP_DigestInit_ex(h, EVP_sha256(), NULL);
    EVP_DigestUpdate(h, buf, len);
    hash_hex(h, sha256);
    EVP_MD_CTX_free(h);
    return e;
}

static void writer_free(lr_archive_writer *w)
{
    archive_write_free(w->a);
    if (w->fd >= 0)
        close(w->fd);
    free(w->path);
    free(w->partial);
    free(w);
}

lr_err lr_archive_finish(lr_archive_writer *w, char **errmsg)
{
    lr_err e = LR_OK;
    if (archive_write_close(w->a) != ARCHIVE_OK) {
        set_err(errmsg, "archive", archive_error_string(w->a));
        e = LR_ERR_IO;
    } else if (fsync(w->fd) != 0 || rename(w->partial, w->path) != 0 ||
               lr_fsync_parent(w->path) != 0) {
        set_err(errmsg, w->path, strerror(errno));
        e = LR_ERR_IO;
    }
    if (e != LR_OK)
        unlink(w->partial);
    writer_free(w);
    return e;
}

void lr_archive_abort(lr_archive_writer *w)
{
    if (!w)
        return;
    unlink(w->partial);
    writer_free(w);
}

lr_err lr_archive_open(const char *path, lr_archive_reader **out, char **errmsg)
{
    lr_archive_reader *r = lr_xcalloc(1, sizeof *r);
    r->a = archive_read_new();
    archive_read_support_filter_zstd(r->a);
    archive_read_support_format_tar(r->a);
    if (archive_read_open_filename(r->a, path, CHUNK) != ARCHIVE_OK) {
        set_err(errmsg, path, archive_error_string(r->a));
        lr_archive_close(r);
        return LR_ERR_IO;
    }
    *out = r;
    return LR_OK;
}

int lr_archive_next(lr_archive_reader *r, const char **name, int64_t *size, char **errmsg)
{
    struct archive_entry *e;
    int rc = archive_read_next_header(r->a, &e);
    if (rc == ARCHIVE_EOF)
        return 0;
    if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN) {
        set_err(errmsg, "the archive cannot be read on", archive_error_string(r->a));
        return -1;
    }
    *name = archive_entry_pathname(e);
    *size = archive_entry_size(e);
    if (!*name || archive_entry_filetype(e) != AE_IFREG) {
        set_err(errmsg, "unexpected entry", *name ? *name : "(no name)");
        return -1;
    }
    return 1;
}

lr_err lr_archive_read(lr_archive_reader *r, lr_archive_sink sink, void *ctx,
                       char sha256[LR_SHA256_HEX], int64_t *bytes, char **errmsg)
{
    EVP_MD_CTX *h = EVP_MD_CTX_new();
    EVP_DigestInit_ex(h, EVP_sha256(), NULL);
    lr_err e = LR_OK;
    *bytes = 0;
    for (;;) {
        la_ssize_t n = archive_read_data(r->a, r->buf, sizeof r->buf);
        if (n == 0)
            break;
        if (n < 0) {
            set_err(errmsg, "the archive cannot be read on", archive_error_string(r->a));
            e = LR_ERR_IO;
            break;
        }
        EVP_DigestUpdate(h, r->buf, (size_t)n);
        *bytes += n;
        if (sink && (e = sink(ctx, r->buf, (size_t)n)) != LR_OK) {
            set_err(errmsg, "writing what the archive holds", lr_strerror(e));
            break;
        }
    }
    hash_hex(h, sha256);
    EVP_MD_CTX_free(h);
    return e;
}

void lr_archive_close(lr_archive_reader *r)
{
    if (!r)
        return;
    archive_read_free(r->a);
    free(r);
}
