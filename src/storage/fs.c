/* Local folder backend: objects are files under {root}/{bucket}/{key},
 * written to a hidden, locked temp file (.tmp-XXXXXX) in the same folder
 * and renamed into place after fsync, so a reader never sees half an
 * object; then its folder is fsynced, so the name survives a power loss
 * too (a journaling file system commits it with the data anyway; one
 * without a journal, such as ext4 made without one, would otherwise keep
 * the data and lose the name of a generation already answered). A crash
 * leaves at most that temp file; the server's start sweeps the ones no
 * live process holds (lr_store_sweep_start, in the background: the walk
 * covers the whole tree). Every path is built from a validated key. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "storage/storage.h"

#define FS_TEMP_PREFIX ".tmp-"
/* {user}/{photo|video|inputs}/{file}, with room to spare. */
#define FS_SWEEP_DEPTH 4

typedef struct {
    lr_store base;
    char *dir; /* {root}/{bucket} */
} fs_store;

struct lr_store_writer {
    int fd;
    char *tmp_path;
    char *final_path;
    size_t root_len; /* final_path's first root_len bytes: the store's folder */
    bool made;       /* folders were made for it: their names need syncing too */
};

static char *object_path(fs_store *s, const char *key)
{
    return lr_store_key_valid(key) ? lr_xasprintf("%s/%s", s->dir, key) : NULL;
}

/* The temp file beside the object; the folders are made only when the
 * file cannot be created for want of them (ENOENT), so storing into an
 * existing folder costs one openat and no mkdir per component. */
static int open_temp(const char *folder, char **tmp, bool *made)
{
    *tmp = lr_xasprintf("%s/" FS_TEMP_PREFIX "XXXXXX", folder);
    int fd = lr_temp_create(*tmp);
    if (fd >= 0 || errno != ENOENT)
        return fd;
    if (lr_mkdir_p(folder, 0755) != 0)
        return -1;
    *made = true;
    memcpy(*tmp + strlen(*tmp) - 6, "XXXXXX", 6); /* the failed try filled them in */
    return lr_temp_create(*tmp);
}

static lr_err fs_open_writer(lr_store *st, const char *key, const char *content_type,
                             lr_store_writer **out)
{
    fs_store *s = (fs_store *)st;
    char *path = object_path(s, key);
    if (!path)
        return LR_ERR_INVALID;
    char *slash = strrchr(path, '/');
    *slash = '\0';
    char *tmp = NULL;
    bool made = false;
    int fd = open_temp(path, &tmp, &made);
    *slash = '/';
    if (fd < 0) {
        lr_error("storage: cannot create temp file for %s: %s", key, strerror(errno));
        free(tmp);
        free(path);
        return LR_ERR_IO;
    }
    fchmod(fd, 0644);
    lr_store_writer *w = lr_xmalloc(sizeof *w);
    *w = (lr_store_writer){fd, tmp, path, strlen(s->dir), made};
    *out = w;
    return LR_OK;
}

static lr_err fs_write(lr_store_writer *w, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(w->fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            lr_error("storage: write failed: %s", strerror(errno));
            return LR_ERR_IO;
        }
        p += n;
        len -= (size_t)n;
    }
    return LR_OK;
}

static void writer_free(lr_store_writer *w)
{
    free(w->tmp_path);
    free(w->final_path);
    free(w);
}

/* The object's folder fsynced, so its new name is on disk; when folders
 * were made for it, each of them in its parent as well, up to the
 * store's folder. */
static int sync_names(const lr_store_writer *w)
{
    char *dir = lr_xstrdup(w->final_path);
    int rc = 0;
    char *slash;
    while (rc == 0 && (slash = strrchr(dir, '/')) && (size_t)(slash - dir) >= w->root_len) {
        *slash = '\0';
        rc = lr_fsync_dir(dir);
        if (!w->made)
            break;
    }
    free(dir);
    return rc;
}

/* Renamed while still open: the temp file's lock is held until it has
 * its final name, so a sweep never takes a file being committed. */
static lr_err fs_commit(lr_store_writer *w)
{
    lr_err e = LR_OK;
    if (fdatasync(w->fd) != 0 || rename(w->tmp_path, w->final_path) != 0) {
        e = LR_ERR_IO;
        lr_error("storage: commit failed: %s", strerror(errno));
        unlink(w->tmp_path);
    } else if (sync_names(w) != 0) {
        e = LR_ERR_IO;
        lr_error("storage: commit failed (folder sync): %s", strerror(errno));
        unlink(w->final_path);
    }
    if (close(w->fd) != 0 && e == LR_OK) {
        e = LR_ERR_IO;
        lr_error("storage: commit failed: %s", strerror(errno));
        unlink(w->final_path);
    }
    writer_free(w);
    return e;
}

static void fs_abort(lr_store_writer *w)
{
    unlink(w->tmp_path);
    close(w->fd);
    writer_free(w);
}

static lr_err fs_remove(lr_store *st, const char *key)
{
    char *path = object_path((fs_store *)st, key);
    if (!path)
        return LR_ERR_INVALID;
    int rc = unlink(path);
    int err = errno;
    free(path);
    if (rc != 0)
        return err == ENOENT ? LR_ERR_NOT_FOUND : LR_ERR_IO;
    return LR_OK;
}

static lr_err fs_open_local(lr_store *st, const char *key, int *fd, struct stat *sb)
{
    char *path = object_path((fs_store *)st, key);
    if (!path)
        return LR_ERR_INVALID;
    /* O_NOFOLLOW: a symlink planted in the tree is never followed out. */
    int f = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    free(path);
    if (f < 0)
        return LR_ERR_NOT_FOUND;
    if (fstat(f, sb) != 0 || !S_ISREG(sb->st_mode)) {
        close(f);
        return LR_ERR_NOT_FOUND;
    }
    *fd = f;
    return LR_OK;
}

static lr_err fs_read(lr_store *st, const char *key, size_t max, char **buf, size_t *len)
{
    int fd;
    struct stat sb;
    lr_err e = fs_open_local(st, key, &fd, &sb);
    if (e != LR_OK)
        return e;
    if ((size_t)sb.st_size > max) {
        close(fd);
        return LR_ERR_TOO_LARGE;
    }
    char *b = lr_xmalloc((size_t)sb.st_size + 1);
    ssize_t n = read(fd, b, (size_t)sb.st_size);
    close(fd);
    if (n != sb.st_size) {
        free(b);
        return LR_ERR_IO;
    }
    *buf = b;
    *len = (size_t)n;
    return LR_OK;
}

static lr_err fs_ping(lr_store *st)
{
    return access(((fs_store *)st)->dir, W_OK) == 0 ? LR_OK : LR_ERR_NOT_FOUND;
}

static int fs_sweep(lr_store *st, const struct timespec *before)
{
    return lr_temp_sweep(((fs_store *)st)->dir, FS_TEMP_PREFIX, FS_SWEEP_DEPTH, before);
}

static void fs_close(lr_store *st)
{
    fs_store *s = (fs_store *)st;
    free(s->dir);
    free(s->base.bucket);
    free(s->base.url_prefix);
    free(s);
}

static const lr_store_ops fs_ops = {
    .open_writer = fs_open_writer,
    .write = fs_write,
    .commit = fs_commit,
    .abort = fs_abort,
    .remove = fs_remove,
    .open_local = fs_open_local,
    .ping = fs_ping,
    .sweep = fs_sweep,
    .read = fs_read,
    .close = fs_close,
};

lr_err lr_store_fs_open(const char *root, const char *bucket, const char *public_base,
                        lr_store **out)
{
    fs_store *s = lr_xcalloc(1, sizeof *s);
    s->base.ops = &fs_ops;
    s->base.backend = "local";
    s->base.bucket = lr_xstrdup(bucket);
    s->base.url_prefix = lr_xasprintf("%s/storage/v1/object/public/%s", public_base, bucket);
    s->dir = lr_xasprintf("%s/%s", root, bucket);
    bool made = access(s->dir, F_OK) != 0;
    if (lr_mkdir_p(s->dir, 0755) != LR_OK) {
        lr_error("storage: cannot create %s/%s: %s", root, bucket, strerror(errno));
        fs_close(&s->base);
        return LR_ERR_IO;
    }
    /* The bucket's folder (and maybe the root's) made just now: their
     * names synced as an object's new folders are. */
    if (made && (lr_fsync_dir(root) != 0 || lr_fsync_parent(root) != 0)) {
        lr_error("storage: cannot sync %s: %s", s->dir, strerror(errno));
        fs_close(&s->base);
        return LR_ERR_IO;
    }
    *out = &s->base;
    return LR_OK;
}
