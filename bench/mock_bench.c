/* The mock provider's own cost, apart from the server: renders per second
 * of lr_media_png (256x256, the image models' size) and lr_media_mp4
 * (192x192, 24 frames, the video models'), one thread, each output written
 * into a reused memory buffer as the storage writer would receive it.
 * Prompts rotate over BENCH_PROMPTS distinct ones (default 1000). The
 * "cached" lines go through lr_media_render with the mock provider's cache
 * bounds (4 MiB, 256 files): once with one prompt (what bench/infer.lua
 * sends: every render after the first is a hit), once with the 1000.
 * Built with -DLENSROOM_BENCH=ON; run by bench/run.sh mock.
 *   mock_bench [SECONDS_PER_PATH [png|mp4]]
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libavutil/log.h>

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
        if (!m->buf)
            return -1;
    }
    memcpy(m->buf + m->len, b, n);
    m->len += n;
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef lr_err (*render_fn)(const char *, int, int, int, lr_media_write_fn, void *);

static lr_media_cache *cache;

static lr_err png_cached(const char *prompt, int variant, int w, int h, lr_media_write_fn write,
                         void *ctx)
{
    return lr_media_render(cache, LR_MEDIA_PNG, prompt, variant, w, h, write, ctx);
}

static lr_err mp4_cached(const char *prompt, int variant, int w, int h, lr_media_write_fn write,
                         void *ctx)
{
    return lr_media_render(cache, LR_MEDIA_MP4, prompt, variant, w, h, write, ctx);
}

static int run(const char *name, render_fn f, int w, int h, double secs, int prompts)
{
    mem m = {0};
    char prompt[64];
    long n = 0;
    size_t bytes = 0;
    double t0 = now_s(), c0 = cpu_s();
    while (now_s() - t0 < secs) {
        snprintf(prompt, sizeof prompt, "a majestic dragon %ld", n % prompts);
        m.len = 0;
        if (f(prompt, 0, w, h, mem_write, &m) != LR_OK) {
            fprintf(stderr, "mock_bench: %s render failed\n", name);
            free(m.buf);
            return 1;
        }
        bytes += m.len;
        n++;
    }
    double wall = now_s() - t0, cpu = cpu_s() - c0;
    printf("mock %s %dx%d renders=%ld renders/s=%.0f cpu_us_per_render=%.1f avg_bytes=%zu "
           "prompts=%d\n",
           name, w, h, n, (double)n / wall, cpu * 1e6 / (double)n, bytes / (size_t)n, prompts);
    free(m.buf);
    return 0;
}

/* One path three times: rendered each time, then through a cache with
 * one prompt and with the whole mix. */
static int run_kind(int k, double secs, int prompts)
{
    const char *kind = k ? "mp4" : "png";
    render_fn plain = k ? lr_media_mp4 : lr_media_png, cached = k ? mp4_cached : png_cached;
    int side = k ? 192 : 256, mixes[2] = {1, prompts};
    char name[32];
    snprintf(name, sizeof name, "%s-cached", kind);
    if (run(kind, plain, side, side, secs, prompts))
        return 1;
    for (int m = 0; m < 2; m++) {
        cache = lr_media_cache_new(4u << 20, 256);
        int rc = run(name, cached, side, side, secs, mixes[m]);
        lr_media_cache_stats st = lr_media_cache_stat(cache);
        printf("  cache hits=%llu misses=%llu files=%zu bytes=%zu\n", (unsigned long long)st.hits,
               (unsigned long long)st.misses, st.entries, st.bytes);
        lr_media_cache_free(cache);
        if (rc)
            return rc;
    }
    return 0;
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 3.0;
    const char *p = getenv("BENCH_PROMPTS");
    int prompts = p && atoi(p) > 0 ? atoi(p) : 1000;
    const char *only = argc > 2 ? argv[2] : "";
    if (secs <= 0)
        secs = 3.0;
    av_log_set_level(AV_LOG_ERROR);     /* libx264 prints a summary per clip */
    mallopt(M_TRIM_THRESHOLD, 1 << 20); /* as lensroom serve does (main.c) */
    if (strcmp(only, "mp4") && run_kind(0, secs, prompts))
        return 1;
    if (strcmp(only, "png") && run_kind(1, secs, prompts))
        return 1;
    return 0;
}
