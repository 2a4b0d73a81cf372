/* Backup archives: tar (pax) compressed with zstd, written and read as a
 * stream through libarchive, every entry hashed (SHA-256, OpenSSL EVP) as
 * its bytes pass. Nothing is held whole in memory: an entry goes through
 * a 64 KiB buffer.
 *
 * A writer writes to {path}.partial (mode 0600: the archive holds the
 * ledger) and renames it to path on finish, after fsync, so a folder of
 * archives only ever shows complete ones. While it writes, it holds an
 * exclusive flock on the partial file: a process killed mid-way (even by
 * SIGKILL) loses the lock with its life, so lr_archive_partial_stale
 * tells a live writer's file from one left behind. A writer or reader
 * belongs to one thread.
 */
#ifndef LR_BACKUP_ARCHIVE_H
#define LR_BACKUP_ARCHIVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define LR_SHA256_HEX 65 /* 64 hex digits and a NUL */

typedef struct lr_archive_writer lr_archive_writer;
typedef struct lr_archive_reader lr_archive_reader;

/* *errmsg (malloc'd) says why a call failed, for every call below. */
lr_err lr_archive_create(const char *path, lr_archive_writer **out, char **errmsg);
/* Adds an entry with the size bytes read from fd (from its offset);
 * a file that is shorter than size is an error. sha256: its hash. */
lr_err lr_archive_add_fd(lr_archive_writer *w, const char *name, int fd, int64_t size,
                         char sha256[LR_SHA256_HEX], char **errmsg);
lr_err lr_archive_add_buf(lr_archive_writer *w, const char *name, const void *buf, size_t len,
                          char sha256[LR_SHA256_HEX], char **errmsg);
/* Closes the stream, fsyncs and renames it into place. Frees w. */
lr_err lr_archive_finish(lr_archive_writer *w, char **errmsg);
/* Discards the partial file. Frees w (NULL is fine). */
void lr_archive_abort(lr_archive_writer *w);
/* True when no writer holds the partial file at this path (it is gone,
 * or the process writing it died): it can be removed. */
bool lr_archive_partial_stale(const char *partial);

lr_err lr_archive_open(const char *path, lr_archive_reader **out, char **errmsg);
/* The next entry: 1 with *name (valid until the next call) and *size,
 * 0 at the end, negative when the archive cannot be read on (*errmsg). */
int lr_archive_next(lr_archive_reader *r, const char **name, int64_t *size, char **errmsg);
/* Where lr_archive_read sends an entry's bytes; an error stops it. */
typedef lr_err (*lr_archive_sink)(void *ctx, const void *buf, size_t len);
/* Streams the current entry's data to sink (NULL: only hashes it),
 * returning its hash and the number of bytes read. */
lr_err lr_archive_read(lr_archive_reader *r, lr_archive_sink sink, void *ctx,
                       char sha256[LR_SHA256_HEX], int64_t *bytes, char **errmsg);
void lr_archive_close(lr_archive_reader *r);

#endif
