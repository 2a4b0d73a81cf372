/* A run's plan: cache keys in run order (a node's key folds in the keys
 * of the nodes it reads), the earlier nodes that can be reused, and the
 * nodes targets need. */
#include "pipeline/run.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "pipeline/internal.h"

static void feed(EVP_MD_CTX *md, const char *tag, const char *s)
{
    EVP_DigestUpdate(md, tag, strlen(tag) + 1);
    if (s)
        EVP_DigestUpdate(md, s, strlen(s) + 1);
}

/* One input: a literal value, or the key and output index of its source. */
static void feed_input(EVP_MD_CTX *md, const lr_run_plan *plan, const lr_node_input *in, int src,
                       int output)
{
    char ref[96];
    if (src < 0) {
        feed(md, in->present ? "value" : "none", in->present ? in->value : NULL);
        return;
    }
    snprintf(ref, sizeof ref, "%s:%d", plan->keys[src], output);
    feed(md, "ref", ref);
}

static void node_key(const lr_run_plan *plan, const lr_graph *g, const lr_graph_check_result *c,
                     size_t i, char out[65])
{
    const lr_price_line *l = &c->lines[i];
    char *params = json_dumps(l->params, JSON_COMPACT | JSON_SORT_KEYS), outputs[16];
    snprintf(outputs, sizeof outputs, "%d", l->outputs);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md)
        abort();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    feed(md, "lensroom-node-1", l->model->id);
    feed(md, "params", params ? params : "{}");
    feed(md, "outputs", outputs);
    feed_input(md, plan, &g->nodes[i].prompt, c->reads[i][0], c->output[i][0]);
    feed_input(md, plan, &g->nodes[i].image_url, c->reads[i][1], c->output[i][1]);
    unsigned char d[32];
    unsigned int n = 0;
    EVP_DigestFinal_ex(md, d, &n);
    EVP_MD_CTX_free(md);
    free(params);
    lr_hex(d, 32, out);
}

static int find_node(const lr_graph *g, const char *id)
{
    for (size_t i = 0; i < g->n; i++) {
        if (g->nodes[i].id && !strcmp(g->nodes[i].id, id))
            return (int)i;
    }
    return -1;
}

/* Takes node i and, unless it comes from the cache, the nodes it reads. */
static void need(lr_run_plan *plan, const lr_graph_check_result *c, int i)
{
    if (i < 0 || plan->included[i])
        return;
    plan->included[i] = true;
    if (plan->cache[i].generation_id)
        return;
    need(plan, c, c->reads[i][0]);
    need(plan, c, c->reads[i][1]);
}

lr_err lr_run_plan_make(lr_pipeline *p, const lr_run_plan_req *q, const lr_graph *g,
                        const lr_graph_check_result *c, lr_run_plan *out, const char **bad)
{
    size_t n = c->n;
    *out = (lr_run_plan){.n = n,
                         .included = lr_xcalloc(n, sizeof *out->included),
                         .keys = lr_xcalloc(n, sizeof *out->keys),
                         .cache = lr_xcalloc(n, sizeof *out->cache)};
    if (q->from_run) {
        lr_run r;
        lr_err e = lr_uuid_valid(q->from_run, strlen(q->from_run))
                       ? p->db->ops->get_run(p->db, q->user_id, q->from_run, &r)
                       : LR_ERR_NOT_FOUND;
        lr_run_clear(&r);
        if (e != LR_OK)
            return e;
    }
    for (size_t k = 0; k < n; k++) {
        size_t i = c->order[k];
        node_key(out, g, c, i, out->keys[i]);
        if (q->no_cache)
            continue;
        lr_err e =
            p->db->ops->find_cached(p->db, q->user_id, out->keys[i], q->from_run, &out->cache[i]);
        if (e != LR_OK && e != LR_ERR_NOT_FOUND)
            return e;
    }
    for (size_t t = 0; q->targets && t < q->n_targets; t++) {
        int i = find_node(g, q->targets[t]);
        if (i < 0) {
            *bad = q->targets[t];
            return LR_ERR_INVALID;
        }
        need(out, c, i);
    }
    for (size_t i = 0; !q->targets && i < n; i++)
        out->included[i] = true;
    return LR_OK;
}

void lr_run_plan_clear(lr_run_plan *plan)
{
    for (size_t i = 0; plan->cache && i < plan->n; i++)
        lr_run_node_clear(&plan->cache[i]);
    free(plan->included);
    free(plan->keys);
    free(plan->cache);
    *plan = (lr_run_plan){0};
}
