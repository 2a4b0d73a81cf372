/* The router in front of the real providers: text models go to Anthropic,
 * everything else to Kie.ai. Each task remembers which half took it. */
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "providers/remote.h"

typedef struct {
    lr_provider base;
    lr_provider *kie;
    lr_provider *anthropic; /* NULL when not configured */
} router;

static bool is_text(const lr_model *m)
{
    return !strcmp(m->capability, "text");
}

static lr_provider *half(router *r, const lr_model *m)
{
    return is_text(m) ? r->anthropic : r->kie;
}

static lr_err router_submit(lr_provider *p, lr_provider_task *t)
{
    lr_provider *h = half((router *)p, t->model);
    if (!h)
        return LR_ERR_UNSUPPORTED;
    return h->ops->submit(h, t);
}

static void router_poke(lr_provider *p, lr_provider_task *t)
{
    lr_provider_poke(half((router *)p, t->model), t);
}

static void router_release(lr_provider *p, lr_provider_task *t)
{
    lr_provider_release(half((router *)p, t->model), t);
}

static bool router_supports(lr_provider *p, const lr_model *m)
{
    return half((router *)p, m) != NULL;
}

static const char *router_name_for(lr_provider *p, const lr_model *m)
{
    return is_text(m) ? "anthropic" : "kie";
}

static void router_close(lr_provider *p)
{
    router *r = (router *)p;
    r->kie->ops->close(r->kie);
    if (r->anthropic)
        r->anthropic->ops->close(r->anthropic);
    free(r);
}

static const lr_provider_ops router_ops = {
    .submit = router_submit,
    .poke = router_poke,
    .release = router_release,
    .supports = router_supports,
    .name_for = router_name_for,
    .close = router_close,
};

lr_provider *lr_provider_remote_new(lr_loop *loop, const lr_remote_options *o)
{
    router *r = lr_xcalloc(1, sizeof *r);
    r->base.ops = &router_ops;
    r->base.name = "kie";
    r->kie = lr_kie_new(loop, o);
    r->anthropic = o->anthropic_key ? lr_anthropic_new(loop, o) : NULL;
    if (!r->kie) {
        free(r);
        return NULL;
    }
    return &r->base;
}
