#include "media/transform.h"

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libavutil/opt.h>
#include <libswscale/swscale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <webp/encode.h>

#include "core/util.h"
#include "storage/storage.h"

#define IOBUF 32768

lr_media_limits lr_media_default_limits(void)
{
    return (lr_media_limits){.max_pixels = 40LL * 1000 * 1000,
                             .max_side = 8192,
                             .max_duration_s = 600,
                             .max_frames = 100000,
                             .max_decoded = 600};
}

void lr_media_blob_clear(lr_media_blob *b)
{
    free(b->data);
    *b = (lr_media_blob){0};
}

static lr_err fail(lr_media_reason *why, lr_err e, const char *fmt, ...)
{
    if (why && !why->text[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why->text, sizeof why->text, fmt, ap);
        va_end(ap);
    }
    return e;
}

/* libav's own log would go to stderr, which is the server's JSON-lines
 * log. Instead each thread keeps the first error libav reported since the
 * input was opened (the cause; later ones follow from it), which a
 * failure's reason quotes ("Picture size 20000x20000 is invalid"). */
static __thread char av_first_error[96];

static void keep_av_error(void *avcl, int level, const char *fmt, va_list ap)
{
    if (level > AV_LOG_ERROR || av_first_error[0])
        return;
    vsnprintf(av_first_error, sizeof av_first_error, fmt, ap);
    av_first_error[strcspn(av_first_error, "\n")] = '\0';
}

static void quiet_libav(void)
{
    av_log_set_callback(keep_av_error);
}

static lr_err av_fail(lr_media_reason *why, const char *what, int rc)
{
    char msg[AV_ERROR_MAX_STRING_SIZE] = {0};
    av_strerror(rc, msg, sizeof msg);
    if (rc == AVERROR_EXIT)
        return fail(why, LR_ERR_UNAVAILABLE, "%s: time limit reached", what);
    if (av_first_error[0] && strcmp(av_first_error, msg) != 0)
        return fail(why, LR_ERR_INVALID, "%s: %s (%s)", what, msg, av_first_error);
    return fail(why, LR_ERR_INVALID, "%s: %s", what, msg);
}

/* ---- input: a memory buffer behind libavformat, under a deadline ------- */

typedef struct {
    const uint8_t *buf;
    size_t len, pos;
    int64_t deadline_ms;
    const atomic_bool *stop;
} mem_in;

static int mem_read(void *opaque, uint8_t *dst, int n)
{
    mem_in *m = opaque;
    size_t left = m->len - m->pos;
    if (left == 0)
        return AVERROR_EOF;
    size_t k = (size_t)n < left ? (size_t)n : left;
    memcpy(dst, m->buf + m->pos, k);
    m->pos += k;
    return (int)k;
}

static int64_t mem_seek(void *opaque, int64_t off, int whence)
{
    mem_in *m = opaque;
    int64_t base = 0;
    switch (whence & ~AVSEEK_FORCE) {
    case AVSEEK_SIZE: return (int64_t)m->len;
    case SEEK_SET: base = 0; break;
    case SEEK_CUR: base = (int64_t)m->pos; break;
    case SEEK_END: base = (int64_t)m->len; break;
    default: return AVERROR(EINVAL);
    }
    if (base + off < 0 || base + off > (int64_t)m->len)
        return AVERROR(EINVAL);
    m->pos = (size_t)(base + off);
    return (int64_t)m->pos;
}

/* libav polls this during blocking work: non-zero stops it (AVERROR_EXIT). */
static int past_deadline(void *opaque)
{
    const mem_in *m = opaque;
    return (m->stop && atomic_load(m->stop)) ||
           (m->deadline_ms > 0 && lr_monotonic_ms() > m->deadline_ms);
}

/* An open input: the container, its best video stream and a decoder. */
typedef struct {
    mem_in m;
    AVFormatContext *fmt;
    AVCodecContext *dec;
    int stream;
    AVPacket *pkt;
    AVFrame *frame;
    int decoded;
    bool eof;
} input;

static void input_close(input *in)
{
    avcodec_free_context(&in->dec);
    if (in->fmt) {
        AVIOContext *io = in->fmt->pb;
        avformat_close_input(&in->fmt);
        if (io) {
            av_freep(&io->buffer);
            avio_context_free(&io);
        }
    }
    av_packet_free(&in->pkt);
    av_frame_free(&in->frame);
}

/* The header's claims against the limits, before a frame is decoded. */
static lr_err check_claims(const input *in, const lr_media_limits *lim, lr_media_reason *why)
{
    const AVStream *st = in->fmt->streams[in->stream];
    const AVCodecParameters *cp = st->codecpar;
    if (cp->width > lim->max_side || cp->height > lim->max_side ||
        (int64_t)cp->width * cp->height > lim->max_pixels)
        return fail(why, LR_ERR_INVALID, "picture of %dx%d is larger than the limit (%d px a side)",
                    cp->width, cp->height, lim->max_side);
    if (st->nb_frames > lim->max_frames)
        return fail(why, LR_ERR_INVALID, "video claims %lld frames (limit %lld)",
                    (long long)st->nb_frames, (long long)lim->max_frames);
    double seconds = in->fmt->duration > 0 ? (double)in->fmt->duration / AV_TIME_BASE : 0;
    if (st->duration > 0 && st->time_base.den > 0)
        seconds = fmax(seconds, (double)st->duration * av_q2d(st->time_base));
    if (seconds > lim->max_duration_s)
        return fail(why, LR_ERR_INVALID, "video claims %.0f s (limit %d s)", seconds,
                    lim->max_duration_s);
    return LR_OK;
}

/* The reason of a failure, with what libav said first when it said anything. */
static lr_err fail_av(lr_media_reason *why, lr_err e, const char *what)
{
    return av_first_error[0] ? fail(why, e, "%s: %s", what, av_first_error)
                             : fail(why, e, "%s", what);
}

static lr_err input_open(input *in, const void *buf, size_t len, const lr_media_limits *lim,
                         lr_media_reason *why)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, quiet_libav);
    av_first_error[0] = '\0';
    *in = (input){.m = {.buf = buf, .len = len, .deadline_ms = lim->deadline_ms, .stop = lim->stop},
                  .stream = -1};
    uint8_t *iobuf = av_malloc(IOBUF);
    AVIOContext *io =
        iobuf ? avio_alloc_context(iobuf, IOBUF, 0, &in->m, mem_read, NULL, mem_seek) : NULL;
    in->fmt = avformat_alloc_context();
    in->pkt = av_packet_alloc();
    in->frame = av_frame_alloc();
    if (!io || !in->fmt || !in->pkt || !in->frame) {
        if (io)
            avio_context_free(&io);
        av_free(iobuf);
        abort(); /* out of memory, as lr_xmalloc */
    }
    in->fmt->pb = io;
    in->fmt->flags |= AVFMT_FLAG_CUSTOM_IO;
    in->fmt->interrupt_callback = (AVIOInterruptCB){past_deadline, &in->m};
    in->fmt->probesize = 1 << 20;
    in->fmt->max_analyze_duration = 2 * AV_TIME_BASE;
    AVDictionary *opts = NULL;
    char px[32];
    snprintf(px, sizeof px, "%lld", (long long)lim->max_pixels);
    av_dict_set(&opts, "max_pixels", px, 0);
    int rc = avformat_open_input(&in->fmt, NULL, NULL, NULL);
    if (rc < 0) {
        /* avformat_open_input freed the context, not our I/O */
        av_freep(&io->buffer);
        avio_context_free(&io);
        av_dict_free(&opts);
        return av_fail(why, "not a readable media file", rc);
    }
    /* One dictionary per stream: the decoders opened to probe get the
     * pixel limit, so a huge picture is refused from its header. */
    unsigned ns = in->fmt->nb_streams;
    AVDictionary **per = ns ? lr_xcalloc(ns, sizeof *per) : NULL;
    for (unsigned i = 0; i < ns; i++)
        av_dict_copy(&per[i], opts, 0);
    rc = avformat_find_stream_info(in->fmt, per);
    for (unsigned i = 0; i < ns; i++)
        av_dict_free(&per[i]);
    free(per);
    lr_err e = LR_OK;
    const AVCodec *codec = NULL;
    if (rc < 0)
        e = av_fail(why, "unreadable stream information", rc);
    if (e == LR_OK) {
        in->stream = av_find_best_stream(in->fmt, AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
        if (in->stream < 0 || !codec)
            e = fail_av(why, LR_ERR_INVALID, "no decodable picture in the file");
    }
    if (e == LR_OK)
        e = check_claims(in, lim, why);
    if (e == LR_OK) {
        in->dec = avcodec_alloc_context3(codec);
        if (!in->dec)
            abort();
        in->dec->thread_count = 1;
        rc = avcodec_parameters_to_context(in->dec, in->fmt->streams[in->stream]->codecpar);
        if (rc >= 0)
            rc = avcodec_open2(in->dec, codec, &opts);
        if (rc < 0)
            e = av_fail(why, "the decoder refused the stream", rc);
    }
    av_dict_free(&opts);
    return e;
}

/* The next decoded frame into in->frame; LR_ERR_NOT_FOUND at the end. */
static lr_err next_frame(input *in, const lr_media_limits *lim, lr_media_reason *why)
{
    for (;;) {
        int rc = avcodec_receive_frame(in->dec, in->frame);
        if (rc >= 0) {
            if (++in->decoded > lim->max_decoded)
                return fail(why, LR_ERR_INVALID, "more than %d frames decoded", lim->max_decoded);
            if (in->frame->width > lim->max_side || in->frame->height > lim->max_side)
                return fail(why, LR_ERR_INVALID, "frame of %dx%d is larger than the limit",
                            in->frame->width, in->frame->height);
            return LR_OK;
        }
        if (rc == AVERROR_EOF)
            return LR_ERR_NOT_FOUND;
        if (rc != AVERROR(EAGAIN))
            return av_fail(why, "the picture could not be decoded", rc);
        if (past_deadline(&in->m))
            return fail(why, LR_ERR_UNAVAILABLE, "time limit reached");
        if (in->eof)
            return LR_ERR_NOT_FOUND;
        rc = av_read_frame(in->fmt, in->pkt);
        if (rc == AVERROR_EOF) {
            in->eof = true;
            rc = avcodec_send_packet(in->dec, NULL);
        } else if (rc < 0) {
            return av_fail(why, "the file is damaged", rc);
        } else {
            if (in->pkt->stream_index == in->stream)
                rc = avcodec_send_packet(in->dec, in->pkt);
            av_packet_unref(in->pkt);
        }
        if (rc < 0 && rc != AVERROR(EAGAIN) && rc != AVERROR_EOF) {
            if (rc == AVERROR_INVALIDDATA)
                continue; /* one bad packet; the limits bound how many */
            return av_fail(why, "the picture could not be decoded", rc);
        }
    }
}

/* ---- scaling and encoding ---------------------------------------------- */

/* The box a picture of w x h gets for size s: (*sw, *sh) it is scaled to,
 * (*ow, *oh) the output (smaller than the scale only for cover). */
static void fit_box(int w, int h, const lr_media_size *s, int *sw, int *sh, int *ow, int *oh)
{
    double bw = s->width, bh = s->height;
    if (bw <= 0)
        bw = bh * w / h;
    if (bh <= 0)
        bh = bw * h / w;
    if (s->no_upscale && bw > w && bh > h) {
        bw = w;
        bh = h;
    }
    double k;
    switch (s->fit) {
    case LR_FIT_FILL:
        *sw = *ow = (int)(bw + 0.5);
        *sh = *oh = (int)(bh + 0.5);
        break;
    case LR_FIT_COVER:
        k = fmax(bw / w, bh / h);
        *sw = (int)(w * k + 0.5);
        *sh = (int)(h * k + 0.5);
        *ow = (int)(bw + 0.5);
        *oh = (int)(bh + 0.5);
        break;
    default:
        k = fmin(bw / w, bh / h);
        *sw = *ow = (int)(w * k + 0.5);
        *sh = *oh = (int)(h * k + 0.5);
        break;
    }
    *sw = *sw < 1 ? 1 : *sw;
    *sh = *sh < 1 ? 1 : *sh;
    *ow = *ow < 1 ? 1 : *ow > *sw ? *sw : *ow;
    *oh = *oh < 1 ? 1 : *oh > *sh ? *sh : *oh;
}

/* f scaled to w x h as packed RGBA (malloc'd, stride 4w). */
static lr_err scale_rgba(const AVFrame *f, int w, int h, uint8_t **out, lr_media_reason *why)
{
    struct SwsContext *sws = sws_getContext(f->width, f->height, f->format, w, h, AV_PIX_FMT_RGBA,
                                            SWS_AREA, NULL, NULL, NULL);
    if (!sws)
        return fail(why, LR_ERR_INVALID, "pixel format %d cannot be converted", f->format);
    uint8_t *rgba = lr_xmalloc((size_t)w * h * 4);
    uint8_t *dst[4] = {rgba};
    int stride[4] = {w * 4};
    int rows =
        sws_scale(sws, (const uint8_t *const *)f->data, f->linesize, 0, f->height, dst, stride);
    sws_freeContext(sws);
    if (rows != h) {
        free(rgba);
        return fail(why, LR_ERR_INVALID, "the picture could not be scaled");
    }
    *out = rgba;
    return LR_OK;
}

/* w x h RGBA at stride as PNG, through libavcodec's encoder. */
static lr_err encode_png(const uint8_t *rgba, int w, int h, int stride, lr_media_blob *out,
                         lr_media_reason *why)
{
    const AVCodec *codec = avcodec_find_encoder(AV_CODEC_ID_PNG);
    AVCodecContext *enc = codec ? avcodec_alloc_context3(codec) : NULL;
    AVFrame *f = av_frame_alloc();
    AVPacket *pkt = av_packet_alloc();
    lr_err e = fail(why, LR_ERR_INVALID, "the PNG encoder failed");
    if (!enc || !f || !pkt)
        goto out;
    enc->width = w;
    enc->height = h;
    enc->pix_fmt = AV_PIX_FMT_RGBA;
    enc->time_base = (AVRational){1, 25};
    if (avcodec_open2(enc, codec, NULL) < 0)
        goto out;
    f->format = AV_PIX_FMT_RGBA;
    f->width = w;
    f->height = h;
    f->data[0] = (uint8_t *)rgba;
    f->linesize[0] = stride;
    if (avcodec_send_frame(enc, f) < 0 || avcodec_receive_packet(enc, pkt) < 0)
        goto out;
    out->data = lr_xmalloc((size_t)pkt->size);
    memcpy(out->data, pkt->data, (size_t)pkt->size);
    out->len = (size_t)pkt->size;
    out->width = w;
    out->height = h;
    why->text[0] = 0;
    e = LR_OK;
out:
    av_packet_free(&pkt);
    av_frame_free(&f);
    avcodec_free_context(&enc);
    return e;
}

static lr_err encode_rgba(const uint8_t *rgba, int w, int h, int stride, const lr_media_size *s,
                          lr_media_blob *out, lr_media_reason *why)
{
    if (s->format == LR_OUT_PNG)
        return encode_png(rgba, w, h, stride, out, why);
    uint8_t *webp = NULL;
    int q = s->quality > 0 && s->quality <= 100 ? s->quality : 80;
    size_t n = WebPEncodeRGBA(rgba, w, h, stride, (float)q, &webp);
    if (n == 0)
        return fail(why, LR_ERR_INVALID, "the WebP encoder failed");
    /* WebP's own allocator: copied so the caller frees with free(). */
    out->data = lr_xmalloc(n);
    memcpy(out->data, webp, n);
    WebPFree(webp);
    out->len = n;
    out->width = w;
    out->height = h;
    return LR_OK;
}

/* One size of frame f: scaled, cropped for cover, encoded. */
static lr_err encode_size(const AVFrame *f, const lr_media_size *s, lr_media_blob *out,
                          lr_media_reason *why)
{
    int sw, sh, ow, oh;
    fit_box(f->width, f->height, s, &sw, &sh, &ow, &oh);
    uint8_t *rgba = NULL;
    lr_err e = scale_rgba(f, sw, sh, &rgba, why);
    if (e != LR_OK)
        return e;
    size_t x0 = (size_t)(sw - ow) / 2, y0 = (size_t)(sh - oh) / 2;
    e = encode_rgba(rgba + (y0 * (size_t)sw + x0) * 4, ow, oh, sw * 4, s, out, why);
    free(rgba);
    return e;
}

lr_err lr_media_image(const void *buf, size_t len, const lr_media_limits *lim,
                      const lr_media_size *sizes, size_t n, lr_media_blob *out,
                      lr_media_reason *why)
{
    input in;
    lr_err e = input_open(&in, buf, len, lim, why);
    if (e == LR_OK) {
        e = next_frame(&in, lim, why);
        if (e == LR_ERR_NOT_FOUND)
            e = fail_av(why, LR_ERR_INVALID, "the file holds no picture");
    }
    for (size_t i = 0; e == LR_OK && i < n; i++)
        e = encode_size(in.frame, &sizes[i], &out[i], why);
    if (e != LR_OK) {
        for (size_t i = 0; i < n; i++)
            lr_media_blob_clear(&out[i]);
    }
    input_close(&in);
    return e;
}

/* ---- video: poster ----------------------------------------------------- */

/* Mean luma of a frame, sampled on a grid, from an 8-bit luma or first
 * plane (YUV formats; RGB formats are judged on their first channel,
 * enough to tell black from not). */
static bool frame_is_black(const AVFrame *f)
{
    const int step = 16;
    int64_t sum = 0, n = 0;
    for (int y = 0; y < f->height; y += step) {
        const uint8_t *row = f->data[0] + (ptrdiff_t)y * f->linesize[0];
        for (int x = 0; x < f->width; x += step, n++)
            sum += row[x];
    }
    return n == 0 || sum / n < 24;
}

static double frame_seconds(const input *in)
{
    int64_t ts = in->frame->best_effort_timestamp;
    if (ts == AV_NOPTS_VALUE)
        return 0;
    const AVStream *st = in->fmt->streams[in->stream];
    int64_t start = st->start_time == AV_NOPTS_VALUE ? 0 : st->start_time;
    return (double)(ts - start) * av_q2d(st->time_base);
}

/* Decodes until the first keyframe that is not black, or the frame at 1 s,
 * or the last frame of a shorter clip; encodes it at s. */
static lr_err make_poster(input *in, const lr_media_limits *lim, const lr_media_size *s,
                          lr_media_blob *out, lr_media_reason *why)
{
    AVFrame *kept = av_frame_alloc();
    if (!kept)
        abort();
    lr_err e;
    while ((e = next_frame(in, lim, why)) == LR_OK) {
        bool key = in->frame->key_frame || in->frame->pict_type == AV_PICTURE_TYPE_I;
        bool chosen = (key && !frame_is_black(in->frame)) || frame_seconds(in) >= 1.0;
        av_frame_unref(kept);
        av_frame_move_ref(kept, in->frame);
        if (chosen)
            break;
    }
    if (e == LR_ERR_NOT_FOUND && kept->width > 0)
        e = LR_OK;
    else if (e == LR_ERR_NOT_FOUND)
        e = fail_av(why, LR_ERR_INVALID, "the video holds no decodable frame");
    if (e == LR_OK)
        e = encode_size(kept, s, out, why);
    av_frame_free(&kept);
    return e;
}

/* ---- video: preview ---------------------------------------------------- */

typedef struct {
    AVFormatContext *fmt;
    AVCodecContext *enc;
    AVStream *st;
    struct SwsContext *sws;
    AVFrame *yuv;
    AVPacket *pkt;
    int64_t next_pts;
} encoder;

static void encoder_close(encoder *x)
{
    if (x->fmt && x->fmt->pb)
        avio_closep(&x->fmt->pb);
    avformat_free_context(x->fmt);
    avcodec_free_context(&x->enc);
    sws_freeContext(x->sws);
    av_frame_free(&x->yuv);
    av_packet_free(&x->pkt);
}

/* Even dimensions with the long side at most side, the aspect kept. */
static void preview_dims(int w, int h, int side, int *ow, int *oh)
{
    double k = fmin(1.0, (double)side / (w > h ? w : h));
    *ow = ((int)(w * k + 0.5)) & ~1;
    *oh = ((int)(h * k + 0.5)) & ~1;
    *ow = *ow < 2 ? 2 : *ow;
    *oh = *oh < 2 ? 2 : *oh;
}

static lr_err encoder_open(encoder *x, const input *in, const lr_media_video_opts *o,
                           const char *path, lr_media_reason *why)
{
    const AVCodec *codec = avcodec_find_encoder_by_name("libx264");
    if (!codec)
        return fail(why, LR_ERR_UNSUPPORTED, "no H.264 encoder in this libavcodec");
    int w, h;
    preview_dims(in->dec->width, in->dec->height, o->preview_side, &w, &h);
    AVRational fr = av_guess_frame_rate(in->fmt, in->fmt->streams[in->stream], NULL);
    if (fr.num <= 0 || fr.den <= 0 || av_q2d(fr) > 60)
        fr = (AVRational){30, 1};
    x->pkt = av_packet_alloc();
    x->yuv = av_frame_alloc();
    x->enc = avcodec_alloc_context3(codec);
    if (!x->pkt || !x->yuv || !x->enc ||
        avformat_alloc_output_context2(&x->fmt, NULL, "mp4", path) < 0)
        abort();
    x->enc->width = w;
    x->enc->height = h;
    x->enc->pix_fmt = AV_PIX_FMT_YUV420P;
    x->enc->time_base = av_inv_q(fr);
    x->enc->framerate = fr;
    x->enc->gop_size = (int)(av_q2d(fr) + 0.5);
    x->enc->thread_count = 1;
    if (x->fmt->oformat->flags & AVFMT_GLOBALHEADER)
        x->enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    av_opt_set(x->enc->priv_data, "preset", "veryfast", 0);
    av_opt_set(x->enc->priv_data, "crf", "30", 0);
    av_opt_set(x->enc->priv_data, "profile", "main", 0);
    int rc = avcodec_open2(x->enc, codec, NULL);
    if (rc < 0)
        return av_fail(why, "the H.264 encoder refused the size", rc);
    x->st = avformat_new_stream(x->fmt, NULL);
    if (!x->st || avcodec_parameters_from_context(x->st->codecpar, x->enc) < 0)
        abort();
    x->st->time_base = x->enc->time_base;
    rc = avio_open(&x->fmt->pb, path, AVIO_FLAG_WRITE);
    if (rc < 0)
        return av_fail(why, "the preview file could not be written", rc);
    AVDictionary *opts = NULL;
    av_dict_set(&opts, "movflags", "+faststart", 0);
    rc = avformat_write_header(x->fmt, &opts);
    av_dict_free(&opts);
    if (rc < 0)
        return av_fail(why, "the preview could not be started", rc);
    x->yuv->format = AV_PIX_FMT_YUV420P;
    x->yuv->width = w;
    x->yuv->height = h;
    if (av_frame_get_buffer(x->yuv, 0) < 0)
        abort();
    return LR_OK;
}

static lr_err encoder_drain(encoder *x, const AVFrame *f, lr_media_reason *why)
{
    int rc = avcodec_send_frame(x->enc, f);
    while (rc >= 0) {
        rc = avcodec_receive_packet(x->enc, x->pkt);
        if (rc == AVERROR(EAGAIN) || rc == AVERROR_EOF)
            return LR_OK;
        if (rc < 0)
            break;
        av_packet_rescale_ts(x->pkt, x->enc->time_base, x->st->time_base);
        x->pkt->stream_index = x->st->index;
        rc = av_interleaved_write_frame(x->fmt, x->pkt);
    }
    return av_fail(why, "the preview could not be encoded", rc);
}

/* One decoded frame into the preview, rescaled (the input may change size
 * mid-stream: the scaler is made again when it does). */
static lr_err encoder_add(encoder *x, const AVFrame *f, lr_media_reason *why)
{
    x->sws =
        sws_getCachedContext(x->sws, f->width, f->height, f->format, x->yuv->width, x->yuv->height,
                             AV_PIX_FMT_YUV420P, SWS_BILINEAR, NULL, NULL, NULL);
    if (!x->sws || av_frame_make_writable(x->yuv) < 0)
        return fail(why, LR_ERR_INVALID, "the frames could not be scaled");
    sws_scale(x->sws, (const uint8_t *const *)f->data, f->linesize, 0, f->height, x->yuv->data,
              x->yuv->linesize);
    x->yuv->pts = x->next_pts++;
    return encoder_drain(x, x->yuv, why);
}

/* The first o->preview_s seconds of in, re-encoded into path. */
static lr_err make_preview(input *in, const lr_media_limits *lim, const lr_media_video_opts *o,
                           const char *path, lr_media_reason *why)
{
    encoder x = {0};
    lr_err e = encoder_open(&x, in, o, path, why);
    int max_frames = (int)(o->preview_s * av_q2d(x.enc ? x.enc->framerate : (AVRational){30, 1}));
    while (e == LR_OK && x.next_pts < max_frames) {
        e = next_frame(in, lim, why);
        if (e == LR_OK && frame_seconds(in) >= o->preview_s)
            break;
        if (e == LR_OK)
            e = encoder_add(&x, in->frame, why);
        av_frame_unref(in->frame);
    }
    if (e == LR_ERR_NOT_FOUND)
        e = x.next_pts > 0 ? LR_OK : fail(why, LR_ERR_INVALID, "the video holds no frame");
    if (e == LR_OK)
        e = encoder_drain(&x, NULL, why);
    if (e == LR_OK) {
        int rc = av_write_trailer(x.fmt);
        if (rc < 0)
            e = av_fail(why, "the preview could not be finished", rc);
    }
    encoder_close(&x);
    return e;
}

static lr_err slurp(int fd, lr_media_blob *out)
{
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size <= 0)
        return LR_ERR_IO;
    out->data = lr_xmalloc((size_t)st.st_size);
    if (pread(fd, out->data, (size_t)st.st_size, 0) != st.st_size) {
        lr_media_blob_clear(out);
        return LR_ERR_IO;
    }
    out->len = (size_t)st.st_size;
    return LR_OK;
}

lr_err lr_media_video(const void *buf, size_t len, const lr_media_limits *lim,
                      const lr_media_video_opts *o, lr_media_blob *poster, lr_media_blob *preview,
                      lr_media_reason *why)
{
    input in;
    lr_err e = input_open(&in, buf, len, lim, why);
    lr_media_size ps = {.width = o->poster_side,
                        .height = o->poster_side,
                        .fit = LR_FIT_CONTAIN,
                        .quality = 80,
                        .no_upscale = true,
                        .format = LR_OUT_WEBP};
    if (e == LR_OK)
        e = make_poster(&in, lim, &ps, poster, why);
    /* The preview starts again from the first frame. */
    if (e == LR_OK) {
        int rc = av_seek_frame(in.fmt, in.stream, INT64_MIN, AVSEEK_FLAG_BACKWARD);
        if (rc < 0)
            rc = avformat_seek_file(in.fmt, -1, INT64_MIN, 0, 0, 0);
        if (rc < 0)
            e = av_fail(why, "the video cannot be read again", rc);
        avcodec_flush_buffers(in.dec);
        in.eof = false;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/.lr-preview-XXXXXX", o->tmp_dir ? o->tmp_dir : "/tmp");
    int fd = e == LR_OK ? lr_temp_create(path) : -1;
    if (e == LR_OK && fd < 0)
        e = fail(why, LR_ERR_IO, "no temporary file for the preview");
    if (e == LR_OK)
        e = make_preview(&in, lim, o, path, why);
    if (e == LR_OK && slurp(fd, preview) != LR_OK)
        e = fail(why, LR_ERR_IO, "the preview file could not be read back");
    if (e == LR_OK) {
        preview->width = in.dec->width;
        preview_dims(in.dec->width, in.dec->height, o->preview_side, &preview->width,
                     &preview->height);
    }
    if (fd >= 0) {
        close(fd);
        unlink(path);
    }
    if (e != LR_OK) {
        lr_media_blob_clear(poster);
        lr_media_blob_clear(preview);
    }
    input_close(&in);
    return e;
}
