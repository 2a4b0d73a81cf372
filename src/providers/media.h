/* Real media files for the mock provider, written as a stream.
 *
 * lr_media_png draws a deterministic picture from the prompt (same prompt,
 * same image) with libpng; lr_media_mp4 encodes a short clip with
 * libavcodec into fragmented MP4 so it can be streamed without seeking.
 * Both call write(ctx, bytes, len) as data is ready; a non-zero return
 * from write aborts. Thread-safe: no shared state.
 */
#ifndef LR_MEDIA_H
#define LR_MEDIA_H

#include <stddef.h>

#include "core/err.h"

typedef int (*lr_media_write_fn)(void *ctx, const void *buf, size_t len);

lr_err lr_media_png(const char *prompt, int variant, int width, int height, lr_media_write_fn write,
                    void *ctx);
lr_err lr_media_mp4(const char *prompt, int variant, int width, int height, lr_media_write_fn write,
                    void *ctx);

#endif
