#include "providers/media.h"

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/opt.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <png.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

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

/* The picture: a diagonal gradient between two seeded colours in LEVELS
 * steps, with three seeded discs over it, drawn as palette indexes
 * (gradient 0..LEVELS-1, disc d at LEVELS + d). Every row is a window on
 * one precomputed diagonal plus the discs' spans, so a pixel costs a copy;
 * and a PNG of indexes is a third of the bytes zlib sees for RGB. */
#define LEVELS 253

typedef struct {
    int w, h;
    unsigned char palette[256][3];
    int cx[3], cy[3], r[3];
    unsigned char *diag; /* w + h - 1 indexes: diag[x + y] */
} scene;

static void scene_init(scene *sc, const unsigned char *s, int w, int h)
{
    sc->w = w;
    sc->h = h;
    for (int i = 0; i < LEVELS; i++)
        for (int c = 0; c < 3; c++)
            sc->palette[i][c] =
                (unsigned char)((s[c] * (LEVELS - 1 - i) + s[3 + c] * i) / (LEVELS - 1));
    for (int d = 0; d < 3; d++) {
        sc->cx[d] = s[6 + d] * w / 256;
        sc->cy[d] = s[9 + d] * h / 256;
        sc->r[d] = 8 + s[12 + d] * (w < h ? w : h) / 1024;
        memcpy(sc->palette[LEVELS + d], s + 15 + 3 * d, 3);
    }
    int n = w + h - 1, last = n > 1 ? n - 1 : 1;
    sc->diag = lr_xmalloc((size_t)n);
    for (int k = 0; k < n; k++)
        sc->diag[k] = (unsigned char)(k * (LEVELS - 1) / last);
}

/* One row of indexes at time t: the discs move right by (d + 1) per t. */
static void scene_row(const scene *sc, int y, int t, unsigned char *row)
{
    int w = sc->w;
    memcpy(row, sc->diag + y, (size_t)w);
    for (int d = 0; d < 3; d++) {
        int r = sc->r[d], dy = y - sc->cy[d];
        if (dy * dy > r * r)
            continue;
        int half = 0;
        while ((half + 1) * (half + 1) + dy * dy <= r * r)
            half++;
        int cx = (sc->cx[d] + t * (d + 1)) % w;
        int x0 = cx - half < 0 ? 0 : cx - half, x1 = cx + half >= w ? w - 1 : cx + half;
        memset(row + x0, LEVELS + d, (size_t)(x1 - x0 + 1));
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
    scene sc;
    scene_init(&sc, seed, width, height);
    png_sink sink = {write, ctx, 0};
    png_structp p = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = p ? png_create_info_struct(p) : NULL;
    unsigned char *volatile row = lr_xmalloc((size_t)width);
    if (!p || !info)
        abort(); /* libpng allocates only; out of memory is fatal (lr_xmalloc) */
    if (setjmp(png_jmpbuf(p))) {
        png_destroy_write_struct(&p, &info);
        free(row);
        free(sc.diag);
        return sink.failed ? LR_ERR_IO : LR_ERR_INVALID;
    }
    png_set_write_fn(p, &sink, png_write_cb, png_flush_cb);
    /* Fastest zlib level, no filter: each row is the previous one shifted
     * by a pixel, which deflate finds as one long match. */
    png_set_compression_level(p, 1);
    png_set_filter(p, PNG_FILTER_TYPE_BASE, PNG_FILTER_NONE);
    png_set_IHDR(p, info, (png_uint_32)width, (png_uint_32)height, 8, PNG_COLOR_TYPE_PALETTE,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_color plte[LEVELS + 3];
    for (int i = 0; i < LEVELS + 3; i++)
        plte[i] = (png_color){sc.palette[i][0], sc.palette[i][1], sc.palette[i][2]};
    png_set_PLTE(p, info, plte, LEVELS + 3);
    png_text note = {.compression = PNG_TEXT_COMPRESSION_NONE,
                     .key = "Software",
                     .text = "LensRoom mock provider"};
    png_set_text(p, info, &note, 1);
    png_write_info(p, info);
    for (int y = 0; y < height; y++) {
        scene_row(&sc, y, 0, row);
        png_write_row(p, row);
    }
    png_write_end(p, info);
    png_destroy_write_struct(&p, &info);
    free(row);
    free(sc.diag);
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

enum { FPS = 12, FRAMES = 24, IOBUF = 16384 };

/* The encoder of the mock's clips (x264 when built in, else MPEG-4 part
 * 2), opened for w x h at FPS; NULL when it cannot be. */
static AVCodecContext *open_encoder(const AVCodec *codec, const AVFormatContext *fmt, AVStream *st,
                                    int width, int height)
{
    AVCodecContext *enc = avcodec_alloc_context3(codec);
    if (!enc)
        return NULL;
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
    if (avcodec_open2(enc, codec, NULL) < 0 ||
        avcodec_parameters_from_context(st->codecpar, enc) < 0)
        avcodec_free_context(&enc);
    return enc;
}

/* Frame t of the scene into fr (YUV 4:2:0); idx: a row of width bytes. */
static void paint_frame(const scene *sc, const unsigned char (*yuv)[3], unsigned char *idx,
                        AVFrame *fr, int t)
{
    for (int y = 0; y < sc->h; y++) {
        scene_row(sc, y, t, idx);
        uint8_t *luma = fr->data[0] + y * fr->linesize[0];
        for (int x = 0; x < sc->w; x++)
            luma[x] = yuv[idx[x]][0];
        if (y & 1)
            continue;
        uint8_t *u = fr->data[1] + (y / 2) * fr->linesize[1];
        uint8_t *v = fr->data[2] + (y / 2) * fr->linesize[2];
        for (int x = 0; x < sc->w; x += 2) {
            u[x / 2] = yuv[idx[x]][1];
            v[x / 2] = yuv[idx[x]][2];
        }
    }
}

lr_err lr_media_mp4(const char *prompt, int variant, int width, int height, lr_media_write_fn write,
                    void *ctx)
{
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
    unsigned char *idx = NULL;
    scene sc = {0};
    const AVCodec *codec = avcodec_find_encoder_by_name("libx264");
    if (!codec)
        codec = avcodec_find_encoder(AV_CODEC_ID_MPEG4);
    if (!fr || !pkt || !iobuf || !codec)
        goto done;
    scene_init(&sc, seed, width, height);
    io = avio_alloc_context(iobuf, IOBUF, 1, &sink, NULL, av_write_cb, NULL);
    if (!io)
        goto done;
    iobuf = NULL; /* owned by io now */
    if (avformat_alloc_output_context2(&fmt, NULL, "mp4", NULL) < 0)
        goto done;
    fmt->pb = io;
    fmt->flags |= AVFMT_FLAG_CUSTOM_IO;
    AVStream *st = avformat_new_stream(fmt, NULL);
    if (!st || !(enc = open_encoder(codec, fmt, st, width, height)))
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
    idx = lr_xmalloc((size_t)width);
    /* BT.601 limited range, once per palette entry rather than per pixel. */
    unsigned char yuv[256][3];
    for (int k = 0; k < LEVELS + 3; k++) {
        const unsigned char *c = sc.palette[k];
        yuv[k][0] = (unsigned char)((66 * c[0] + 129 * c[1] + 25 * c[2] + 128) / 256 + 16);
        yuv[k][1] = (unsigned char)((-38 * c[0] - 74 * c[1] + 112 * c[2] + 128) / 256 + 128);
        yuv[k][2] = (unsigned char)((112 * c[0] - 94 * c[1] - 18 * c[2] + 128) / 256 + 128);
    }
    for (int i = 0; i < FRAMES; i++) {
        if (av_frame_make_writable(fr) < 0)
            goto done;
        paint_frame(&sc, (const unsigned char(*)[3])yuv, idx, fr, i * 2);
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
    free(idx);
    free(sc.diag);
    return e;
}

/* ---- the cache of rendered files ---------------------------------------- */

/* A file's identity: the seed (prompt and variant), kind and size. */
typedef struct {
    unsigned char seed[SHA256_DIGEST_LENGTH];
    int kind, width, height;
} media_key;

typedef struct entry {
    media_key key;
    unsigned char *bytes;
    size_t len;
    struct entry *prev, *next; /* most recently used first */
} entry;

struct lr_media_cache {
    pthread_mutex_t mu;
    size_t max_bytes, max_entries;
    entry *head, *tail;
    lr_media_cache_stats stat;
};

lr_media_cache *lr_media_cache_new(size_t max_bytes, size_t max_entries)
{
    lr_media_cache *c = lr_xcalloc(1, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    c->max_bytes = max_bytes;
    c->max_entries = max_entries;
    return c;
}

static void unlink_entry(lr_media_cache *c, entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void push_front(lr_media_cache *c, entry *e)
{
    e->prev = NULL;
    e->next = c->head;
    if (c->head)
        c->head->prev = e;
    c->head = e;
    if (!c->tail)
        c->tail = e;
}

static void drop_entry(lr_media_cache *c, entry *e)
{
    unlink_entry(c, e);
    c->stat.bytes -= e->len;
    c->stat.entries--;
    free(e->bytes);
    free(e);
}

void lr_media_cache_free(lr_media_cache *c)
{
    if (!c)
        return;
    while (c->head)
        drop_entry(c, c->head);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

lr_media_cache_stats lr_media_cache_stat(lr_media_cache *c)
{
    pthread_mutex_lock(&c->mu);
    lr_media_cache_stats s = c->stat;
    pthread_mutex_unlock(&c->mu);
    return s;
}

/* A linear walk from the most recently used end: the entries are few (the
 * caller's bound) and a repeated prompt is found at the front. */
static entry *find(lr_media_cache *c, const media_key *k)
{
    for (entry *e = c->head; e; e = e->next)
        if (!memcmp(&e->key, k, sizeof *k))
            return e;
    return NULL;
}

/* A copy of the cached bytes (written out after the lock is released, so
 * a slow sink never holds up other threads), or NULL. */
static unsigned char *lookup(lr_media_cache *c, const media_key *k, size_t *len)
{
    unsigned char *copy = NULL;
    pthread_mutex_lock(&c->mu);
    entry *e = find(c, k);
    if (e) {
        unlink_entry(c, e);
        push_front(c, e);
        copy = lr_xmalloc(e->len);
        memcpy(copy, e->bytes, e->len);
        *len = e->len;
        c->stat.hits++;
    } else {
        c->stat.misses++;
    }
    pthread_mutex_unlock(&c->mu);
    return copy;
}

/* Keeps bytes (taking them) unless too large or already there (another
 * thread rendered the same file meanwhile); else frees them. */
static void keep(lr_media_cache *c, const media_key *k, unsigned char *bytes, size_t len)
{
    pthread_mutex_lock(&c->mu);
    if (len > c->max_bytes / 4 || c->max_entries == 0 || find(c, k)) {
        pthread_mutex_unlock(&c->mu);
        free(bytes);
        return;
    }
    while (c->tail && (c->stat.bytes + len > c->max_bytes || c->stat.entries >= c->max_entries))
        drop_entry(c, c->tail);
    entry *e = lr_xcalloc(1, sizeof *e);
    *e = (entry){.key = *k, .bytes = bytes, .len = len};
    push_front(c, e);
    c->stat.bytes += len;
    c->stat.entries++;
    pthread_mutex_unlock(&c->mu);
}

typedef struct {
    unsigned char *buf;
    size_t len, cap;
} mem_sink;

static int mem_write(void *ctx, const void *buf, size_t len)
{
    mem_sink *m = ctx;
    if (m->len + len > m->cap) {
        m->cap = m->cap * 2 > m->len + len ? m->cap * 2 : m->len + len + 16384;
        unsigned char *nb = realloc(m->buf, m->cap);
        if (!nb)
            return -1;
        m->buf = nb;
    }
    memcpy(m->buf + m->len, buf, len);
    m->len += len;
    return 0;
}

lr_err lr_media_render(lr_media_cache *c, lr_media_kind kind, const char *prompt, int variant,
                       int width, int height, lr_media_write_fn write, void *ctx)
{
    lr_err (*render)(const char *, int, int, int, lr_media_write_fn, void *) =
        kind == LR_MEDIA_MP4 ? lr_media_mp4 : lr_media_png;
    if (!c)
        return render(prompt, variant, width, height, write, ctx);
    media_key k;
    memset(&k, 0, sizeof k); /* compared with memcmp, padding included */
    seed_of(prompt, variant, k.seed);
    k.kind = (int)kind;
    k.width = width;
    k.height = height;
    size_t len = 0;
    unsigned char *bytes = lookup(c, &k, &len);
    if (bytes) {
        lr_err e = write(ctx, bytes, len) == 0 ? LR_OK : LR_ERR_IO;
        free(bytes);
        return e;
    }
    mem_sink m = {0};
    lr_err e = render(prompt, variant, width, height, mem_write, &m);
    if (e != LR_OK) {
        free(m.buf);
        return e;
    }
    e = write(ctx, m.buf, m.len) == 0 ? LR_OK : LR_ERR_IO;
    keep(c, &k, m.buf, m.len); /* whole, even if this sink refused it */
    return e;
}
