/* Small utilities with no state: UUIDs, clocks, base64url, constant-time
 * comparison, file helpers. All functions are thread-safe. */
#ifndef LR_UTIL_H
#define LR_UTIL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define LR_UUID_LEN 36

/* Random (version 4) UUID, lowercase, NUL-terminated in out[37]. */
void lr_uuid_v4(char out[LR_UUID_LEN + 1]);
/* Time-ordered (version 7, RFC 9562) UUID: the wall clock's milliseconds,
 * then 74 random bits. For the ids of rows inserted at a high rate
 * (generations, ledger rows): consecutive ids land on the same B-tree page
 * of their primary key (and of every index that starts with them), where
 * random ones touch a page each, and a page written is a page copied into
 * the WAL or PostgreSQL's. Still unguessable: 74 random bits. */
void lr_uuid_v7(char out[LR_UUID_LEN + 1]);
/* True when s[0..len) is a canonical 8-4-4-4-12 hex UUID (either case). */
bool lr_uuid_valid(const char *s, size_t len);

int64_t lr_now_ms(void);       /* wall clock, ms since the epoch */
int64_t lr_monotonic_ms(void); /* for deadlines and durations */
/* ISO-8601 UTC with milliseconds: 2026-11-26T13:38:00.123Z (out[32]). */
void lr_time_iso(int64_t ms, char out[32]);
/* The inverse (UTC, fraction optional); -1 when s is not such a time. */
int64_t lr_time_parse_iso(const char *s);

/* base64url without padding. Encode returns a malloc'd string. Decode
 * accepts url or standard alphabet, with or without padding; returns a
 * malloc'd buffer (NUL-terminated for convenience) or NULL when malformed. */
char *lr_b64url_encode(const unsigned char *in, size_t len);
unsigned char *lr_b64_decode(const char *in, size_t len, size_t *out_len);

/* Constant-time equality of two byte strings (length leaks, content not). */
bool lr_ct_equal(const void *a, size_t alen, const void *b, size_t blen);

/* Uniform random double in [0,1) from the OpenSSL CSPRNG. */
double lr_random_unit(void);
void lr_random_bytes(unsigned char *out, size_t len);

/* mkdir -p with the given mode; LR_ERR_IO when a folder cannot be made. */
lr_err lr_mkdir_p(const char *path, unsigned mode);
/* fsync of the file path; 0, or -1 with errno. */
int lr_fsync_file(const char *path);
/* fsync of the folder path (it must be one), so the names made in it (a
 * rename, a new file or folder) survive a power loss; 0, or -1 with
 * errno. */
int lr_fsync_dir(const char *path);
/* lr_fsync_dir of the folder that holds path ("." when it names none). */
int lr_fsync_parent(const char *path);
/* Reads a whole (small) file; NULL on error. */
char *lr_read_file(const char *path, size_t *len);

/* Appends n bytes to the malloc'd buffer *buf of *len used / *cap
 * allocated bytes, growing it by doubling and keeping it NUL-terminated
 * (aborts when memory runs out, as lr_xmalloc). */
void lr_buf_append(char **buf, size_t *len, size_t *cap, const void *data, size_t n);

/* Allocation that aborts when memory runs out, so callers never check
 * (as redis's zmalloc and h2o's h2o_mem_alloc do). lr_xstrdup(NULL) is
 * NULL. */
void *lr_xmalloc(size_t n);
void *lr_xcalloc(size_t count, size_t size);
void *lr_xrealloc(void *p, size_t n);
char *lr_xstrdup(const char *s);
char *lr_xstrndup(const char *s, size_t n);
/* asprintf that aborts when memory runs out. */
char *lr_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A list of strings. Owned by the array when it comes from a read or
 * lr_strv_push (lr_strv_clear frees it); a view when a request lends it
 * (the strings belong to whoever filled it). An entry may be NULL (a slot
 * without a value, as an output whose provider task never started). */
typedef struct {
    char **v;
    size_t n;
} lr_strv;

/* Appends a copy of s (NULL stays NULL) to an owned array. */
void lr_strv_push(lr_strv *a, const char *s);
void lr_strv_clear(lr_strv *a);
/* a as a new JSON array, NULL entries as null. */
json_t *lr_strv_json(const lr_strv *a);

/* Lowercase hex of len bytes into out (2*len+1). */
void lr_hex(const unsigned char *in, size_t len, char *out);

/* Parses a whole decimal integer in [min,max]; LR_ERR_INVALID otherwise. */
lr_err lr_parse_long(const char *s, long min, long max, long *out);

#endif
