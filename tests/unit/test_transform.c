/* Derived media (media/transform.h): thumbnails decode as WebP of the
 * asked size, a video gives a poster and a faststart H.264 preview, and
 * hostile inputs (a PNG claiming 20000x20000, a truncated file, noise, a
 * deadline already past) end as an error with a reason, not a crash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <webp/decode.h>

#include "core/util.h"
#include "media/transform.h"
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

static lr_media_limits limits(void)
{
    lr_media_limits lim = lr_media_default_limits();
    lim.deadline_ms = lr_monotonic_ms() + 60000;
    return lim;
}

static void assert_webp(const lr_media_blob *b, int w, int h)
{
    int dw = 0, dh = 0;
    assert_true(WebPGetInfo(b->data, b->len, &dw, &dh));
    assert_int_equal(dw, w);
    assert_int_equal(dh, h);
    assert_int_equal(b->width, w);
    assert_int_equal(b->height, h);
}

static void test_image_thumbnails_are_webp_of_the_long_side(void **state)
{
    mem png = {0};
    assert_int_equal(lr_media_png("a lighthouse", 0, 1024, 512, mem_write, &png), LR_OK);
    lr_media_size sizes[] = {
        {.width = 256, .height = 256, .fit = LR_FIT_CONTAIN, .quality = 80, .no_upscale = true},
        {.width = 100, .height = 100, .fit = LR_FIT_COVER, .quality = 80},
        {.width = 60, .height = 90, .fit = LR_FIT_FILL, .quality = 80},
        {.width = 2048, .height = 2048, .fit = LR_FIT_CONTAIN, .no_upscale = true},
    };
    lr_media_blob out[4] = {0};
    lr_media_reason why = {{0}};
    lr_media_limits lim = limits();
    assert_int_equal(lr_media_image(png.buf, png.len, &lim, sizes, 4, out, &why), LR_OK);
    assert_webp(&out[0], 256, 128);
    assert_webp(&out[1], 100, 100);
    assert_webp(&out[2], 60, 90);
    assert_webp(&out[3], 1024, 512);
    for (int i = 0; i < 4; i++)
        lr_media_blob_clear(&out[i]);
    free(png.buf);
}

static void test_png_output_when_webp_is_not_wanted(void **state)
{
    mem png = {0};
    assert_int_equal(lr_media_png("a field", 0, 300, 200, mem_write, &png), LR_OK);
    lr_media_size s = {.width = 150, .fit = LR_FIT_CONTAIN, .format = LR_OUT_PNG};
    lr_media_blob out = {0};
    lr_media_reason why = {{0}};
    lr_media_limits lim = limits();
    assert_int_equal(lr_media_image(png.buf, png.len, &lim, &s, 1, &out, &why), LR_OK);
    assert_memory_equal(out.data, "\x89PNG", 4);
    assert_int_equal(out.width, 150);
    assert_int_equal(out.height, 100);
    lr_media_blob_clear(&out);
    free(png.buf);
}

static uint32_t crc32_of(const unsigned char *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return ~c;
}

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* A PNG whose header claims 20000x20000 (a decompression bomb's shape):
 * refused from the header, with a reason, and nothing large allocated
 * (ASan would report 1.6 GB). */
static void test_png_bomb_is_refused_from_its_header(void **state)
{
    unsigned char f[8 + 25 + 12 + 12] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    unsigned char *ihdr = f + 8;
    put32(ihdr, 13);
    memcpy(ihdr + 4, "IHDR", 4);
    put32(ihdr + 8, 20000);
    put32(ihdr + 12, 20000);
    ihdr[16] = 8; /* depth */
    ihdr[17] = 6; /* RGBA */
    put32(ihdr + 21, crc32_of(ihdr + 4, 17));
    unsigned char *idat = ihdr + 25;
    put32(idat, 0);
    memcpy(idat + 4, "IDAT", 4);
    put32(idat + 8, crc32_of(idat + 4, 4));
    unsigned char *iend = idat + 12;
    memcpy(iend + 4, "IEND", 4);
    put32(iend + 8, crc32_of(iend + 4, 4));
    lr_media_size s = {.width = 256, .height = 256};
    lr_media_blob out = {0};
    lr_media_reason why = {{0}};
    lr_media_limits lim = limits();
    assert_int_equal(lr_media_image(f, sizeof f, &lim, &s, 1, &out, &why), LR_ERR_INVALID);
    assert_null(out.data);
    if (!strstr(why.text, "20000x20000"))
        fail_msg("reason: %s", why.text);
}

static void test_noise_and_truncation_fail_with_a_reason(void **state)
{
    unsigned char noise[4096];
    for (size_t i = 0; i < sizeof noise; i++)
        noise[i] = (unsigned char)(i * 2654435761u >> 13);
    lr_media_size s = {.width = 256, .height = 256};
    lr_media_blob out = {0};
    lr_media_reason why = {{0}};
    lr_media_limits lim = limits();
    assert_int_equal(lr_media_image(noise, sizeof noise, &lim, &s, 1, &out, &why), LR_ERR_INVALID);
    assert_true(why.text[0] != 0);

    mem mp4 = {0};
    assert_int_equal(lr_media_mp4("a river", 0, 320, 240, mem_write, &mp4), LR_OK);
    lr_media_video_opts o = {.poster_side = 1280, .preview_side = 480, .preview_s = 3};
    lr_media_blob poster = {0}, preview = {0};
    why = (lr_media_reason){{0}};
    size_t cut = 700 < mp4.len ? 700 : mp4.len / 2;
    lr_err e = lr_media_video(mp4.buf, cut, &lim, &o, &poster, &preview, &why);
    assert_int_not_equal(e, LR_OK);
    assert_true(why.text[0] != 0);
    assert_null(poster.data);
    assert_null(preview.data);
    free(mp4.buf);
}

static void test_video_poster_and_faststart_preview(void **state)
{
    mem mp4 = {0};
    assert_int_equal(lr_media_mp4("a storm at sea", 0, 640, 360, mem_write, &mp4), LR_OK);
    lr_media_video_opts o = {.poster_side = 1280, .preview_side = 480, .preview_s = 3};
    lr_media_blob poster = {0}, preview = {0};
    lr_media_reason why = {{0}};
    lr_media_limits lim = limits();
    lr_err e = lr_media_video(mp4.buf, mp4.len, &lim, &o, &poster, &preview, &why);
    if (e != LR_OK)
        fail_msg("video: %s", why.text);
    assert_webp(&poster, 640, 360);
    assert_int_equal(preview.width, 480);
    assert_int_equal(preview.height, 270);
    /* faststart: the index (moov) comes before the media data (mdat) */
    const unsigned char *moov = memmem(preview.data, preview.len, "moov", 4);
    const unsigned char *mdat = memmem(preview.data, preview.len, "mdat", 4);
    assert_non_null(moov);
    assert_non_null(mdat);
    assert_true(moov < mdat);
    lr_media_blob_clear(&poster);
    lr_media_blob_clear(&preview);
    free(mp4.buf);
}

static void test_a_past_deadline_stops_the_work(void **state)
{
    mem mp4 = {0};
    assert_int_equal(lr_media_mp4("a slow clip", 0, 320, 240, mem_write, &mp4), LR_OK);
    lr_media_video_opts o = {.poster_side = 1280, .preview_side = 480, .preview_s = 3};
    lr_media_blob poster = {0}, preview = {0};
    lr_media_reason why = {{0}};
    lr_media_limits lim = lr_media_default_limits();
    lim.deadline_ms = lr_monotonic_ms() - 1;
    lr_err e = lr_media_video(mp4.buf, mp4.len, &lim, &o, &poster, &preview, &why);
    assert_int_not_equal(e, LR_OK);
    assert_non_null(strstr(why.text, "time limit"));
    free(mp4.buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_image_thumbnails_are_webp_of_the_long_side),
        cmocka_unit_test(test_png_output_when_webp_is_not_wanted),
        cmocka_unit_test(test_png_bomb_is_refused_from_its_header),
        cmocka_unit_test(test_noise_and_truncation_fail_with_a_reason),
        cmocka_unit_test(test_video_poster_and_faststart_preview),
        cmocka_unit_test(test_a_past_deadline_stops_the_work),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
