#include "providers/media.h"

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/opt.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 32 bytes of seed from prompt and variant: colours and shapes come from it. */
static void seed_of(const char *prompt, int variant, unsigned char seed[SHA256_DIGEST_LENGTH])
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (!c || !EVP_DigestInit_ex(c, EVP_sha256(), NULL) ||
        !EVP_DigestUpdate(c, prompt, strlen(prompt)) ||
        !EVP_DigestUpdate(c, &variant, sizeof variant) || !EVP_DigestFinal_ex(c, seed, NULL))
        memset(seed, 0x80, SHA256_DIGEST_LENGTH);
    EVP_MD_CTX_free(c);
}

/* One row of the picture at time t: a diagonal gradient between two
 * seeded colours, with three seeded discs painted over their span only, so
 * the cost is a few operations per pixel. */
static void shade_row(const unsigned char *s, int w, int h, int y, int t, unsigned char *row)
{
    int span = w + h;
    for (int x = 0; x < w; x++) {
        int g = (x + y) * 255 / span;
        unsigned char *px = row + 3 * x;
        for (int c = 0; c < 3; c++)
            px[c] = (unsigned char)((s[c] * (255 - g) + s[3 + c] * g) / 255);
    }
    for (int d = 0; d < 3; d++) {
        int cx = (s[6 + d] * w / 256 + t * (d + 1)) % w;
        int cy = s[9 + d] * h / 256;
        int r = 8 + s[12 + d] * (w < h ? w : h) / 1024;
        int dy = y - cy;
        if (dy * dy > r * r)
            continue;
        int half = 0;
        while ((half + 1) * (half + 1) + dy * dy <= r * r)
            half++;
        int x0 = cx - half < 0 ? 0 : cx - half, x1 = cx + half >= w ? w - 1 : cx + half;
        for (int x = x0; x <= x1; x++)
            memcpy(row + 3 * x, s + 15 + 3 * d, 3);
    }
}

typedef struct {
    lr_media_write_fn write;
    void *ctx;
    int failed;
} png_sink;

static void png_write_cb(png_structp p, png_bytep data, png_size_t len)
{
    png_sink *k = png_get_io_ptr(p);
    if (!k->failed && k->write(k->ctx, data, len) != 0) {
        k->failed = 1;
        png_error(p, "sink refused data");
    }
}

static void png_flush_cb(png_structp p)
{
    (void)p;
}

lr_err lr_media_png(const char *prompt, int variant, int width, int height, lr_media_write_fn write,
                    void *ctx)
{
    unsigned char seed[SHA256_DIGEST_LENGTH];
    seed_of(prompt, variant, seed);
    png_sink sink = {write, ctx, 0};
    png_structp p = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = p ? png_create_info_struct(p) : NULL;
    unsigned char *volatile row = malloc((size_t)width * 3);
    if (!p || !info || !row) {
        png_destroy_write_struct(&p, &info);
        free(row);
        return LR_ERR_NOMEM;
    }
    if (setjmp(png_jmpbuf(p))) {
        png_destroy_write_struct(&p, &info);
        free(row);
        return sink.failed ? LR_ERR_IO : LR_ERR_INVALID;
    }
    png_set_write_fn(p, &sink, png_write_cb, png_flush_cb);
    png_set_compression_level(p, 1);
    /* Flat colour areas compress well without per-row filter search. */
    png_set_filter(p, PNG_FILTER_TYPE_BASE, PNG_FILTER_SUB);
    png_set_IHDR(p, info, (png_uint_32)width, (png_uint_32)height, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_text text = {.compression = PNG_TEXT_COMPRESSION_NONE,
                     .key = "Software",
                     .text = "LensRoom mock provider"};
    png_set_text(p, info, &text, 1);
    png_write_info(p, info);
    for (int y = 0; y < height; y++) {
        shade_row(seed, width, height, y, 0, row);
        png_write_row(p, row);
    }
    png_write_end(p, info);
    png_destroy_write_struct(&p, &info);
    free(row);
    return LR_OK;
}

typedef struct {
    lr_media_write_fn write;
    void *ctx;
} av_sink;

static int av_write_cb(void *opaque, uint8_t *buf, int len)
{
    av_sink *k = opaque;
    return k->write(k->ctx, buf, (size_t)len) == 0 ? len : AVERROR(EIO);
}

static int encode_and_mux(AVCodecContext *enc, AVFormatContext *fmt, AVStream *st, AVFrame *fr,
                          AVPacket *pkt)
{
    int rc = avcodec_send_frame(enc, fr);
    while (rc >= 0) {
        rc = avcodec_receive_packet(enc, pkt);
        if (rc == AVERROR(EAGAIN) || rc == AVERROR_EOF)
            return 0;
        if (rc < 0)
            return rc;
        av_packet_rescale_ts(pkt, enc->time_base, st->time_base);
        pkt->stream_index = st->index;
        rc = av_interleaved_write_frame(fmt, pkt);
    }
    return rc;
}

/* Frame t of the picture into fr (YUV 4:2:0, BT.601), a row at a time
 * through rgb (width x 3 bytes). */
static void paint_frame(AVFrame *fr, const unsigned char *seed, int t, unsigned char *rgb)
{
    for (int y = 0; y < fr->height; y++) {
        shade_row(seed, fr->width, fr->height, y, t, rgb);
        for (int x = 0; x < fr->width; x++) {
            const unsigned char *c = rgb + 3 * x;
            fr->data[0][y * fr->linesize[0] + x] =
                (uint8_t)((66 * c[0] + 129 * c[1] + 25 * c[2] + 128) / 256 + 16);
            if (!(x & 1) && !(y & 1)) {
                fr->data[1][(y / 2) * fr->linesize[1] + x / 2] =
                    (uint8_t)((-38 * c[0] - 74 * c[1] + 112 * c[2] + 128) / 256 + 128);
                fr->data[2][(y / 2) * fr->linesize[2] + x / 2] =
                    (uint8_t)((112 * c[0] - 94 * c[1] - 18 * c[2] + 128) / 256 + 128);
            }
        }
    }
}

lr_err lr_media_mp4(const char *prompt, int variant, int width, int height, lr_media_write_fn write,
                    void *ctx)
{
    enum { FPS = 12, FRAMES = 24, IOBUF = 16384 };
    unsigned char seed[SHA256_DIGEST_LENGTH];
    seed_of(prompt, variant, seed);
    width &= ~1;
    height &= ~1;
    lr_err e = LR_ERR_PROVIDER;
    av_sink sink = {write, ctx};
    AVFormatContext *fmt = NULL;
    AVCodecContext *enc = NULL;
    AVFrame *fr = av_frame_alloc();
    AVPacket *pkt = av_packet_alloc();
    unsigned char *iobuf = av_malloc(IOBUF);
    AVIOContext *io = NULL;
    AVDictionary *opts = NULL;
    unsigned char *rgb = NULL;
    const AVCodec *codec = avcodec_find_encoder_by_name("libx264");
    if (!codec)
        codec = avcodec_find_encoder(AV_CODEC_ID_MPEG4);
    if (!fr || !pkt || !iobuf || !codec)
        goto done;
    io = avio_alloc_context(iobuf, IOBUF, 1, &sink, NULL, av_write_cb, NULL);
    if (!io)
        goto done;
    iobuf = NULL; /* owned by io now */
    if (avformat_alloc_output_context2(&fmt, NULL, "mp4", NULL) < 0)
        goto done;
    fmt->pb = io;
    fmt->flags |= AVFMT_FLAG_CUSTOM_IO;
    AVStream *st = avformat_new_stream(fmt, NULL);
    enc = avcodec_alloc_context3(codec);
    if (!st || !enc)
        goto done;
    enc->width = width;
    enc->height = height;
    enc->pix_fmt = AV_PIX_FMT_YUV420P;
    enc->time_base = (AVRational){1, FPS};
    enc->framerate = (AVRational){FPS, 1};
    enc->gop_size = FPS;
    enc->thread_count = 1;
    if (fmt->oformat->flags & AVFMT_GLOBALHEADER)
        enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    if (!strcmp(codec->name, "libx264")) {
        av_opt_set(enc->priv_data, "preset", "ultrafast", 0);
        av_opt_set(enc->priv_data, "tune", "zerolatency", 0);
    }
    if (avcodec_open2(enc, codec, NULL) < 0 || avcodec_parameters_from_context(st->codecpar, enc) < 0)
        goto done;
    st->time_base = enc->time_base;
    /* Fragmented MP4 needs no seek back to write the index: it streams. */
    av_dict_set(&opts, "movflags", "frag_keyframe+empty_moov+default_base_moof", 0);
    if (avformat_write_header(fmt, &opts) < 0)
        goto done;
    fr->format = enc->pix_fmt;
    fr->width = width;
    fr->height = height;
    if (av_frame_get_buffer(fr, 0) < 0)
        goto done;
    rgb = malloc((size_t)width * 3);
    if (!rgb)
        goto done;
    for (int i = 0; i < FRAMES; i++) {
        if (av_frame_make_writable(fr) < 0)
            goto done;
        paint_frame(fr, seed, i * 2, rgb);
        fr->pts = i;
        if (encode_and_mux(enc, fmt, st, fr, pkt) < 0)
            goto done;
    }
    if (encode_and_mux(enc, fmt, st, NULL, pkt) < 0 || av_write_trailer(fmt) < 0)
        goto done;
    avio_flush(io);
    e = io->error ? LR_ERR_IO : LR_OK;
done:
    av_dict_free(&opts);
    avcodec_free_context(&enc);
    if (fmt)
        avformat_free_context(fmt);
    if (io) {
        av_freep(&io->buffer);
        avio_context_free(&io);
    }
    av_free(iobuf);
    av_frame_free(&fr);
    av_packet_free(&pkt);
    free(rgb);
    return e;
}
