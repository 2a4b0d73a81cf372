/* The mock provider. It behaves like a remote one as far as the pipeline
 * can tell: the answer arrives later on the loop thread, failures happen
 * at the configured rate (and always for a prompt holding "[mock_fail]",
 * so a test can fail one chosen generation), and success hands over real
 * bytes (produced on a worker, streamed into storage). Only the network
 * is missing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "providers/media.h"
#include "providers/provider.h"

typedef struct {
    lr_provider base;
    lr_loop *loop;
    int latency_ms;
    double fail_rate;
    lr_media_cache *cache;
} mock_provider;

/* Rendered files kept for repeated prompts: at about 4 KB a PNG and 20-60
 * KB a clip, hundreds of distinct prompts stay in memory. */
#define MOCK_CACHE_BYTES (4u << 20)
#define MOCK_CACHE_ENTRIES 256

static int sink_write(void *ctx, const void *buf, size_t len)
{
    return lr_blob_write(ctx, buf, len) == LR_OK ? 0 : -1;
}

static void dimensions(const lr_provider_task *t, int *w, int *h)
{
    const char *size = json_string_value(json_object_get(t->params, "image_size"));
    const char *ratio = json_string_value(json_object_get(t->params, "aspectRatio"));
    *w = *h = 256;
    if ((size && !strncmp(size, "portrait", 8)) || (ratio && !strcmp(ratio, "9:16")))
        *w = 144;
    else if ((size && !strncmp(size, "landscape", 9)) || (ratio && !strcmp(ratio, "16:9")))
        *h = 144;
}

static lr_err produce(lr_provider_task *t, lr_blob_sink *sink)
{
    lr_media_cache *cache = ((mock_provider *)t->provider_data)->cache;
    int w, h;
    dimensions(t, &w, &h);
    if (!strcmp(t->model->capability, "video"))
        return lr_media_render(cache, LR_MEDIA_MP4, t->prompt, t->variant, w * 3 / 4, h * 3 / 4,
                               sink_write, sink);
    return lr_media_render(cache, LR_MEDIA_PNG, t->prompt, t->variant, w, h, sink_write, sink);
}

static void fire(void *arg)
{
    lr_provider_task *t = arg;
    double rate = ((mock_provider *)t->provider_data)->fail_rate;
    char task_id[64];
    snprintf(task_id, sizeof task_id, "mock-%.8s-%d", t->generation_id, t->variant);
    lr_provider_result r = {.task_id = task_id};
    if ((rate > 0 && lr_random_unit() < rate) || strstr(t->prompt, "[mock_fail]")) {
        r.error = LR_CODE_PROVIDER_FAILED;
        r.error_message = "The mock provider failed this output (LENSROOM_MOCK_FAIL_RATE)";
    } else if (!strcmp(t->model->capability, "text")) {
        char text[512];
        snprintf(text, sizeof text, "Mock answer to: %.400s", t->prompt);
        r.ok = true;
        r.text = text;
        t->done(t, &r);
        return;
    } else {
        r.ok = true;
        r.produce = produce;
    }
    t->done(t, &r);
}

static lr_err mock_submit(lr_provider *base, lr_provider_task *t)
{
    mock_provider *p = (mock_provider *)base;
    t->provider_data = p; /* no allocation: nothing to leak if the loop stops first */
    lr_loop_timer(p->loop, p->latency_ms, fire, t);
    return LR_OK;
}

static void mock_close(lr_provider *base)
{
    lr_media_cache_free(((mock_provider *)base)->cache);
    free(base);
}

static const lr_provider_ops mock_ops = {.submit = mock_submit, .close = mock_close};

lr_provider *lr_provider_mock_new(lr_loop *loop, int latency_ms, double fail_rate)
{
    mock_provider *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->base.ops = &mock_ops;
    p->base.name = "mock";
    p->loop = loop;
    p->latency_ms = latency_ms;
    p->fail_rate = fail_rate;
    p->cache = lr_media_cache_new(MOCK_CACHE_BYTES, MOCK_CACHE_ENTRIES);
    return &p->base;
}
