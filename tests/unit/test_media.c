/* The mock's media are real files: the PNG decodes with libpng and the MP4
 * demuxes and decodes with libavformat/libavcodec. */
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_png_decodes_and_depends_on_prompt),
        cmocka_unit_test(test_png_stops_when_sink_refuses),
        cmocka_unit_test(test_mp4_demuxes_and_decodes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
