/* Real media files for the mock provider, written as a stream.
 *
 * lr_media_png draws a deterministic picture from the prompt (same prompt,
 * same image) with libpng; lr_media_mp4 encodes a short clip with
 * libavcodec into fragmented MP4 so it can be streamed without seeking.
 * Both call write(ctx, bytes, len) as data is ready; a non-zero return
 * from write aborts. Thread-safe: no shared state.
 *
 * lr_media_render is the same through a cache of rendered files: since
 * the bytes depend only on (kind, prompt, variant, size), a repeated
 * request is written from memory, so the mock costs the server next to
 * nothing, as a remote provider would. The cache is bounded in bytes and
 * entries and drops the least recently used file first; one cache may be
 * shared by any number of threads.
 */
#ifndef LR_MEDIA_H
#define LR_MEDIA_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

typedef int (*lr_media_write_fn)(void *ctx, const void *buf, size_t len);

lr_err lr_media_png(const char *prompt, int variant, int width, int height, lr_media_write_fn write,
                    void *ctx);
lr_err lr_media_mp4(const char *prompt, int variant, int width, int height, lr_media_write_fn write,
                    void *ctx);

typedef enum { LR_MEDIA_PNG, LR_MEDIA_MP4 } lr_media_kind;

typedef struct lr_media_cache lr_media_cache;

/* Keeps at most max_bytes of files and max_entries files; a file larger
 * than a quarter of max_bytes is rendered each time, never kept. */
lr_media_cache *lr_media_cache_new(size_t max_bytes, size_t max_entries);
void lr_media_cache_free(lr_media_cache *c);

/* Writes the file of this kind to write(ctx, ...), from the cache or
 * rendered (and then kept). c may be NULL: always rendered. The bytes are
 * those lr_media_png or lr_media_mp4 writes. */
lr_err lr_media_render(lr_media_cache *c, lr_media_kind kind, const char *prompt, int variant,
                       int width, int height, lr_media_write_fn write, void *ctx);

typedef struct {
    size_t bytes, entries;
    uint64_t hits, misses;
} lr_media_cache_stats;

lr_media_cache_stats lr_media_cache_stat(lr_media_cache *c);

#endif
