/* Images resized on request, for GET /storage/v1/render/image/public/...
 * (Supabase's image transformation URL) on the local storage backend.
 *
 * A variant is made once from the stored object (lr_media_image under
 * the default limits and a time limit), kept in a cache folder under a
 * name hashed from the key, the object's size and mtime and the asked
 * size, fit, quality and format, and served from there as a file
 * afterwards; a changed object gets new names. Variants are written to a
 * locked temp file and renamed, so a reader never sees half a file. The
 * cache holds at most max_bytes: past that the oldest variants go first.
 * At most one variant is made at a time per process (renders run on the
 * HTTP threads, which must not all be taken by decoding); a request that
 * finds one running gets LR_ERR_UNAVAILABLE. Thread-safe.
 */
#ifndef LR_MEDIA_RENDER_H
#define LR_MEDIA_RENDER_H

#include <stdint.h>
#include <sys/stat.h>

#include "media/transform.h"
#include "storage/storage.h"

typedef struct lr_render lr_render;

lr_render *lr_render_new(lr_store *store, const char *cache_dir, uint64_t max_bytes,
                         int time_limit_ms);
void lr_render_free(lr_render *r);

/* The variant of image object key at size s, as an open read-only fd
 * (*st its stat) the caller closes. NOT_FOUND: no such object, or not an
 * image; INVALID (why set): it cannot be decoded within the limits;
 * UNAVAILABLE: another variant is being made (retry shortly). */
lr_err lr_render_variant(lr_render *r, const char *key, const lr_media_size *s, int *fd,
                         struct stat *st, lr_media_reason *why);

#endif
