/* Derived media: thumbnails of images, posters and short previews of
 * videos, and images resized on request.
 *
 * Inputs are untrusted bytes (a provider may return anything whose first
 * bytes pass the MIME sniff), held in memory by the caller. Decoding is
 * libavformat/libavcodec, scaling libswscale, WebP encoding libwebp and
 * the preview's H.264 libx264 through libavcodec. Every call enforces the
 * limits it is given before anything large is allocated: the decoder
 * refuses a picture above max_pixels while reading its header (a PNG
 * claiming 20000x20000 never gets its buffer), a container claiming more
 * than max_duration_s or max_frames is refused from its header, at most
 * max_decoded frames are decoded, and every libav call is interrupted
 * once deadline_ms has passed (AVIOInterruptCB), so a hostile file ends
 * as an error with a reason, never a crash or a hang.
 *
 * Results are malloc'd blobs the caller frees with lr_media_blob_clear.
 * Thread-safe: no shared state; each call decodes on the calling thread
 * only (codec threads 1), so the caller's pool bounds the CPU used.
 */
#ifndef LR_MEDIA_TRANSFORM_H
#define LR_MEDIA_TRANSFORM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

typedef struct {
    int64_t max_pixels;      /* width x height of an input picture */
    int max_side;            /* either side of an input picture */
    int max_duration_s;      /* what a video's header may claim */
    int64_t max_frames;      /* frames a video's header may claim */
    int max_decoded;         /* frames decoded for one result */
    int64_t deadline_ms;     /* lr_monotonic_ms() after which every call stops */
    const atomic_bool *stop; /* NULL, or set to stop at once (shutdown) */
} lr_media_limits;

/* Defaults: 8192 px a side, 40 Mpx, 10 min, 100k frames, 600 decoded;
 * deadline_ms 0 (set by the caller: now + its time limit). */
lr_media_limits lr_media_default_limits(void);

typedef struct {
    uint8_t *data;
    size_t len;
    int width, height; /* of the picture or video made */
} lr_media_blob;

void lr_media_blob_clear(lr_media_blob *b);

/* Why a call failed, for the record (preview metadata, a 422's message). */
typedef struct {
    char text[160];
} lr_media_reason;

typedef enum { LR_FIT_CONTAIN, LR_FIT_COVER, LR_FIT_FILL } lr_media_fit;
typedef enum { LR_OUT_WEBP, LR_OUT_PNG } lr_media_format;

typedef struct {
    int width, height; /* box; 0 for one of them: from the other and the aspect */
    lr_media_fit fit;  /* contain: inside the box; cover: fills it, cropped; fill: stretched */
    int quality;       /* 1..100 (WebP) */
    bool no_upscale;   /* never larger than the input */
    lr_media_format format;
} lr_media_size;

/* The first picture of an image (PNG, JPEG, WebP, GIF) resized to each of
 * the n sizes: out[i] for sizes[i]. LR_ERR_INVALID (reason set) for a
 * file that cannot be decoded or breaks a limit; LR_ERR_UNAVAILABLE when
 * the deadline passed. */
lr_err lr_media_image(const void *buf, size_t len, const lr_media_limits *lim,
                      const lr_media_size *sizes, size_t n, lr_media_blob *out,
                      lr_media_reason *why);

/* A video's poster (the first keyframe that is not black, else the frame
 * at 1 s; WebP, aspect kept, long side at most poster_side) and its
 * preview (the first preview_s seconds, long side at most preview_side,
 * even dimensions, no audio, H.264 in MP4 with the index first, so a
 * browser plays it while it loads). tmp_dir holds the MP4 while it is
 * written (faststart moves the index by reading the file back), as
 * .lr-preview-XXXXXX locked by lr_temp_create, so lr_temp_sweep removes
 * what a killed process left. Errors as lr_media_image. */
typedef struct {
    int poster_side, preview_side;
    double preview_s;
    const char *tmp_dir;
} lr_media_video_opts;

lr_err lr_media_video(const void *buf, size_t len, const lr_media_limits *lim,
                      const lr_media_video_opts *o, lr_media_blob *poster, lr_media_blob *preview,
                      lr_media_reason *why);

#endif
