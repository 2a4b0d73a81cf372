/* Spooling an upload: the bytes go to a nameless temp file while their
 * SHA-256 is computed, so a remote backend can send a signed,
 * Content-Length'd request afterwards without holding the object in
 * memory. One spool per writer; not shared between threads. */
#ifndef LR_SPOOL_H
#define LR_SPOOL_H

#include <openssl/evp.h>
#include <stddef.h>
#include <sys/types.h>

#include "core/err.h"

typedef struct {
    int fd;
    size_t size;
    EVP_MD_CTX *sha;
} lr_spool;

lr_err lr_spool_open(lr_spool *s, const char *dir);
lr_err lr_spool_write(lr_spool *s, const void *buf, size_t len);
/* Hex SHA-256 of everything written; call once, after the last write. */
void lr_spool_sha256_hex(lr_spool *s, char hex[65]);
void lr_spool_close(lr_spool *s);

/* What remote backends keep per writer: the object's key and type and its
 * spool. Each backend's struct lr_store_writer embeds one. */
typedef struct {
    char *key;
    char *content_type;
    lr_spool spool;
} lr_spooled;

lr_err lr_spooled_init(lr_spooled *o, const char *dir, const char *key, const char *content_type);
void lr_spooled_release(lr_spooled *o);

/* A byte range of a spool as a libcurl read callback source. */
typedef struct {
    int fd;
    off_t off;
    size_t left;
} lr_spool_range;

size_t lr_spool_read_cb(char *dst, size_t size, size_t n, void *range);

#endif
