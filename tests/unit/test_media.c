/* The mock's media are real files: the PNG decodes with libpng and the MP4
 * demuxes and decodes with libavformat/libavcodec. The cache of rendered
 * files gives back the same bytes, stays within its bounds and drops the
 * least recently used file first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <png.h>

#include "providers/media.h"

typedef struct {
    unsigned char *buf;
    size_t len, cap;
} mem;

static int mem_write(void *ctx, const void *b, size_t n)
{
    mem *m = ctx;
    if (m->len + n > m->cap) {
        m->cap = (m->len + n) * 2;
        m->buf = realloc(m->buf, m->cap);
    }
    memcpy(m->buf + m->len, b, n);
    m->len += n;
    return 0;
}

static void test_png_decodes_and_depends_on_prompt(void **state)
{
    mem a = {0}, b = {0}, c = {0};
    assert_int_equal(lr_media_png("a majestic dragon", 0, 256, 144, mem_write, &a), LR_OK);
    assert_int_equal(lr_media_png("a majestic dragon", 0, 256, 144, mem_write, &b), LR_OK);
    assert_int_equal(lr_media_png("a quiet lake", 0, 256, 144, mem_write, &c), LR_OK);
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.buf, b.buf, a.len);
    assert_true(a.len != c.len || memcmp(a.buf, c.buf, a.len) != 0);

    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    assert_true(png_image_begin_read_from_memory(&img, a.buf, a.len));
    assert_int_equal(img.width, 256);
    assert_int_equal(img.height, 144);
    img.format = PNG_FORMAT_RGB;
    unsigned char *pixels = malloc(PNG_IMAGE_SIZE(img));
    assert_true(png_image_finish_read(&img, NULL, pixels, 0, NULL));
    free(pixels);
    free(a.buf);
    free(b.buf);
    free(c.buf);
}

static int failing_write(void *ctx, const void *b, size_t n)
{
    (void)ctx;
    (void)b;
    (void)n;
    return -1;
}

static void test_png_stops_when_sink_refuses(void **state)
{
    assert_int_not_equal(lr_media_png("x", 0, 64, 64, failing_write, NULL), LR_OK);
}

static void test_mp4_demuxes_and_decodes(void **state)
{
    mem m = {0};
    assert_int_equal(lr_media_mp4("a majestic dragon", 0, 192, 108, mem_write, &m), LR_OK);
    assert_true(m.len > 100);
    assert_memory_equal(m.buf + 4, "ftyp", 4);
    char path[] = "/tmp/lr-media-XXXXXX";
    int fd = mkstemp(path);
    assert_int_equal(write(fd, m.buf, m.len), (ssize_t)m.len);
    close(fd);

    AVFormatContext *fmt = NULL;
    assert_int_equal(avformat_open_input(&fmt, path, NULL, NULL), 0);
    assert_true(avformat_find_stream_info(fmt, NULL) >= 0);
    int vs = av_find_best_stream(fmt, AVMEDIA_TYPE_VIDEO, -1, -1, NULL, 0);
    assert_true(vs >= 0);
    AVCodecParameters *par = fmt->streams[vs]->codecpar;
    assert_int_equal(par->width, 192);
    assert_int_equal(par->height, 108);
    const AVCodec *dec = avcodec_find_decoder(par->codec_id);
    AVCodecContext *ctx = avcodec_alloc_context3(dec);
    avcodec_parameters_to_context(ctx, par);
    assert_int_equal(avcodec_open2(ctx, dec, NULL), 0);
    AVPacket *pkt = av_packet_alloc();
    AVFrame *fr = av_frame_alloc();
    int frames = 0;
    while (av_read_frame(fmt, pkt) >= 0) {
        if (pkt->stream_index == vs && avcodec_send_packet(ctx, pkt) == 0) {
            while (avcodec_receive_frame(ctx, fr) == 0)
                frames++;
        }
        av_packet_unref(pkt);
    }
    avcodec_send_packet(ctx, NULL);
    while (avcodec_receive_frame(ctx, fr) == 0)
        frames++;
    assert_int_equal(frames, 24);
    av_frame_free(&fr);
    av_packet_free(&pkt);
    avcodec_free_context(&ctx);
    avformat_close_input(&fmt);
    unlink(path);
    free(m.buf);
}

static void assert_png_decodes(const mem *m, unsigned w, unsigned h)
{
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    assert_true(png_image_begin_read_from_memory(&img, m->buf, m->len));
    assert_int_equal(img.width, w);
    assert_int_equal(img.height, h);
    img.format = PNG_FORMAT_RGB;
    unsigned char *pixels = malloc(PNG_IMAGE_SIZE(img));
    assert_true(png_image_finish_read(&img, NULL, pixels, 0, NULL));
    free(pixels);
}

static void test_cache_repeats_the_rendered_bytes(void **state)
{
    lr_media_cache *c = lr_media_cache_new(1 << 20, 16);
    mem direct = {0}, first = {0}, again = {0};
    assert_int_equal(lr_media_png("a majestic dragon", 1, 256, 256, mem_write, &direct), LR_OK);
    assert_int_equal(
        lr_media_render(c, LR_MEDIA_PNG, "a majestic dragon", 1, 256, 256, mem_write, &first),
        LR_OK);
    assert_int_equal(
        lr_media_render(c, LR_MEDIA_PNG, "a majestic dragon", 1, 256, 256, mem_write, &again),
        LR_OK);
    lr_media_cache_stats s = lr_media_cache_stat(c);
    assert_int_equal(s.misses, 1);
    assert_int_equal(s.hits, 1);
    assert_int_equal(s.entries, 1);
    assert_int_equal(s.bytes, direct.len);
    assert_int_equal(first.len, direct.len);
    assert_int_equal(again.len, direct.len);
    assert_memory_equal(first.buf, direct.buf, direct.len);
    assert_memory_equal(again.buf, direct.buf, direct.len);
    assert_png_decodes(&again, 256, 256);
    free(direct.buf);
    free(first.buf);
    free(again.buf);
    lr_media_cache_free(c);
}

static void test_cache_keys_on_prompt_variant_kind_and_size(void **state)
{
    lr_media_cache *c = lr_media_cache_new(1 << 20, 16);
    mem m[5] = {{0}};
    assert_int_equal(lr_media_render(c, LR_MEDIA_PNG, "a", 0, 64, 64, mem_write, &m[0]), LR_OK);
    assert_int_equal(lr_media_render(c, LR_MEDIA_PNG, "b", 0, 64, 64, mem_write, &m[1]), LR_OK);
    assert_int_equal(lr_media_render(c, LR_MEDIA_PNG, "a", 1, 64, 64, mem_write, &m[2]), LR_OK);
    assert_int_equal(lr_media_render(c, LR_MEDIA_PNG, "a", 0, 64, 32, mem_write, &m[3]), LR_OK);
    assert_int_equal(lr_media_render(c, LR_MEDIA_MP4, "a", 0, 64, 64, mem_write, &m[4]), LR_OK);
    lr_media_cache_stats s = lr_media_cache_stat(c);
    assert_int_equal(s.misses, 5);
    assert_int_equal(s.hits, 0);
    assert_int_equal(s.entries, 5);
    for (int i = 1; i < 5; i++)
        assert_true(m[i].len != m[0].len || memcmp(m[i].buf, m[0].buf, m[0].len) != 0);
    assert_png_decodes(&m[3], 64, 32);
    assert_memory_equal(m[4].buf + 4, "ftyp", 4);
    for (int i = 0; i < 5; i++)
        free(m[i].buf);
    lr_media_cache_free(c);
}

static void render_prompt(lr_media_cache *c, int i)
{
    char prompt[32];
    snprintf(prompt, sizeof prompt, "prompt %d", i);
    mem m = {0};
    assert_int_equal(lr_media_render(c, LR_MEDIA_PNG, prompt, 0, 128, 128, mem_write, &m), LR_OK);
    assert_png_decodes(&m, 128, 128);
    free(m.buf);
}

static void test_cache_stays_within_its_bounds_and_drops_the_oldest(void **state)
{
    mem one = {0};
    assert_int_equal(lr_media_png("prompt 0", 0, 128, 128, mem_write, &one), LR_OK);
    size_t max = one.len * 8; /* room for about eight files of this size */
    free(one.buf);

    lr_media_cache *c = lr_media_cache_new(max, 100);
    for (int i = 0; i < 40; i++) {
        render_prompt(c, i);
        render_prompt(c, 0); /* the most recently used: never the one dropped */
        lr_media_cache_stats s = lr_media_cache_stat(c);
        assert_true(s.bytes <= max);
        assert_true(s.entries < 12);
    }
    lr_media_cache_stats s = lr_media_cache_stat(c);
    assert_int_equal(s.misses, 40); /* prompt 0 rendered once, every other prompt once */
    assert_int_equal(s.hits, 40);
    render_prompt(c, 39); /* recent: still there */
    render_prompt(c, 1);  /* long gone: rendered again */
    s = lr_media_cache_stat(c);
    assert_int_equal(s.hits, 41);
    assert_int_equal(s.misses, 41);

    lr_media_cache *few = lr_media_cache_new(1 << 20, 4);
    for (int i = 0; i < 10; i++)
        render_prompt(few, i);
    assert_int_equal(lr_media_cache_stat(few).entries, 4);
    lr_media_cache_free(few);

    lr_media_cache *tiny = lr_media_cache_new(one.len, 4); /* a file > a quarter is not kept */
    render_prompt(tiny, 0);
    render_prompt(tiny, 0);
    s = lr_media_cache_stat(tiny);
    assert_int_equal(s.entries, 0);
    assert_int_equal(s.misses, 2);
    lr_media_cache_free(tiny);
    lr_media_cache_free(c);
}

static void test_cache_keeps_the_file_when_the_sink_refuses(void **state)
{
    lr_media_cache *c = lr_media_cache_new(1 << 20, 16);
    assert_int_equal(lr_media_render(c, LR_MEDIA_PNG, "x", 0, 64, 64, failing_write, NULL),
                     LR_ERR_IO);
    assert_int_equal(lr_media_render(c, LR_MEDIA_PNG, "x", 0, 64, 64, failing_write, NULL),
                     LR_ERR_IO);
    mem m = {0};
    assert_int_equal(lr_media_render(c, LR_MEDIA_PNG, "x", 0, 64, 64, mem_write, &m), LR_OK);
    assert_png_decodes(&m, 64, 64);
    lr_media_cache_stats s = lr_media_cache_stat(c);
    assert_int_equal(s.misses, 1);
    assert_int_equal(s.hits, 2);
    free(m.buf);
    lr_media_cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_png_decodes_and_depends_on_prompt),
        cmocka_unit_test(test_png_stops_when_sink_refuses),
        cmocka_unit_test(test_mp4_demuxes_and_decodes),
        cmocka_unit_test(test_cache_repeats_the_rendered_bytes),
        cmocka_unit_test(test_cache_keys_on_prompt_variant_kind_and_size),
        cmocka_unit_test(test_cache_stays_within_its_bounds_and_drops_the_oldest),
        cmocka_unit_test(test_cache_keeps_the_file_when_the_sink_refuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
