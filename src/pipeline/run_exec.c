/* Graph runs executed: the one charge, then the nodes as prepaid
 * generations of the pipeline, started as their inputs become ready.
 *
 * A run in progress is an lr_graph_run in the pipeline's registry. Its
 * scheduler (step) runs on a worker, one at a time per run (kick queues
 * it again when something changed meanwhile): it refunds and fails the
 * nodes below a failure, starts the nodes whose inputs are ready, and
 * ends the run when nothing is left. A node's end comes back through the
 * pipeline's `ended` callback, which records it and kicks the scheduler.
 * The run's mutex guards its nodes' states; it is never held across a
 * database or pipeline call. The database is the truth a restarted
 * process resumes from: the run row keeps the graph, each node's
 * generation row its status, task ids and outputs.
 */
#include "pipeline/run.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "pipeline/generation.h"
#include "pipeline/internal.h"

#define RETRY_MS 250 /* a node waiting for a slot, or the database, is tried again */

/* N_OUT: not part of this run (targets did not need it). */
typedef enum { N_WAITING, N_RUNNING, N_SUCCEEDED, N_FAILED, N_SKIPPED, N_OUT } node_state;

typedef struct {
    lr_graph_run *gr;
    char gen_id[LR_UUID_LEN + 1];
    char *node_id;
    const lr_model *model;
    json_t *params; /* validated */
    int outputs, unit;
    char *prompt, *image_url; /* literals, or NULL for a reference */
    int reads[2], output[2];  /* source node of prompt/image (-1: literal) and its output */
    node_state state;
    lr_strv urls; /* once succeeded */
    char *text;
} gnode;

struct lr_graph_run {
    lr_pipeline *p;
    pthread_mutex_t mu;
    char id[LR_UUID_LEN + 1], user[LR_UUID_LEN + 1];
    gnode *nodes;
    size_t n, *order; /* order: every node after the nodes it reads */
    int max_in_flight;
    int refs;
    bool canceled, ended, step_queued, step_again, retry_armed;
    int failed; /* the first node that failed, or -1 */
    lr_code fail_code;
    char *fail_msg;
    lr_graph_run *next;
};

static void graph_run_free(lr_graph_run *gr)
{
    for (size_t i = 0; i < gr->n; i++) {
        gnode *nd = &gr->nodes[i];
        free(nd->node_id);
        json_decref(nd->params);
        free(nd->prompt);
        free(nd->image_url);
        lr_strv_clear(&nd->urls);
        free(nd->text);
    }
    free(gr->nodes);
    free(gr->order);
    free(gr->fail_msg);
    pthread_mutex_destroy(&gr->mu);
    free(gr);
}

static void unref(lr_graph_run *gr)
{
    pthread_mutex_lock(&gr->mu);
    bool last = --gr->refs == 0;
    pthread_mutex_unlock(&gr->mu);
    if (last)
        graph_run_free(gr);
}

static void notify(lr_pipeline *p, const char *id, lr_gen_status status)
{
    if (p->observer)
        p->observer(p->observer_ctx, id, status, LR_STAGE_NONE);
}

/* Node i served from the cache: its outputs are those of the node reused. */
static void take_cached(gnode *nd, const lr_run_node *from)
{
    nd->state = N_SUCCEEDED;
    size_t n = from->result_urls.n;
    nd->urls.v = n ? lr_xcalloc(n, sizeof *nd->urls.v) : NULL;
    for (size_t k = 0; k < n; k++)
        nd->urls.v[k] = lr_xstrdup(from->result_urls.v[k]);
    nd->urls.n = n;
    nd->text = from->text ? lr_xstrdup(from->text) : NULL;
}

/* A run built from a checked graph: nodes in the graph's order, what each
 * reads, and their price lines (units as charged); plan (NULL: every node,
 * nothing cached) says which nodes run and which are reused. */
static lr_graph_run *graph_run_new(lr_pipeline *p, const char *id, const char *user,
                                   const lr_graph *g, const lr_graph_check_result *c,
                                   const int *units, const lr_run_plan *plan)
{
    lr_graph_run *gr = lr_xcalloc(1, sizeof *gr);
    pthread_mutex_init(&gr->mu, NULL);
    gr->p = p;
    gr->failed = -1;
    gr->refs = 1; /* the registry's */
    snprintf(gr->id, sizeof gr->id, "%s", id);
    snprintf(gr->user, sizeof gr->user, "%s", user);
    gr->n = g->n;
    gr->nodes = lr_xcalloc(g->n, sizeof *gr->nodes);
    gr->order = lr_xcalloc(g->n, sizeof *gr->order);
    for (size_t i = 0; i < g->n; i++) {
        gnode *nd = &gr->nodes[i];
        const lr_graph_node *gn = &g->nodes[i];
        gr->order[i] = c->order[i];
        nd->gr = gr;
        nd->node_id = lr_xstrdup(gn->id);
        nd->model = c->lines[i].model;
        nd->params = json_incref(c->lines[i].params);
        nd->outputs = c->lines[i].outputs;
        nd->unit = units[i];
        nd->prompt = gn->prompt.ref ? NULL : lr_xstrdup(gn->prompt.value);
        nd->image_url = gn->image_url.ref ? NULL : lr_xstrdup(gn->image_url.value);
        memcpy(nd->reads, c->reads[i], sizeof nd->reads);
        memcpy(nd->output, c->output[i], sizeof nd->output);
        if (plan && !plan->included[i])
            nd->state = N_OUT;
        else if (plan && plan->cache[i].generation_id)
            take_cached(nd, &plan->cache[i]);
    }
    return gr;
}

static void registry_add(lr_pipeline *p, lr_graph_run *gr)
{
    pthread_mutex_lock(&p->mu);
    gr->next = p->graph_runs;
    p->graph_runs = gr;
    pthread_mutex_unlock(&p->mu);
}

static void registry_remove(lr_pipeline *p, lr_graph_run *gr)
{
    pthread_mutex_lock(&p->mu);
    for (lr_graph_run **pp = &p->graph_runs; *pp; pp = &(*pp)->next) {
        if (*pp == gr) {
            *pp = gr->next;
            break;
        }
    }
    pthread_mutex_unlock(&p->mu);
}

/* The local run id with a reference taken, or NULL. */
static lr_graph_run *registry_find(lr_pipeline *p, const char *id)
{
    pthread_mutex_lock(&p->mu);
    lr_graph_run *gr = p->graph_runs;
    while (gr && strcmp(gr->id, id) != 0)
        gr = gr->next;
    if (gr) {
        pthread_mutex_lock(&gr->mu);
        gr->refs++;
        pthread_mutex_unlock(&gr->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return gr;
}

static void step_job(void *arg);

/* Something changed: the scheduler runs (again). Any thread. */
static void kick(lr_graph_run *gr)
{
    pthread_mutex_lock(&gr->mu);
    bool submit = !gr->step_queued && !gr->ended;
    if (submit) {
        gr->step_queued = true;
        gr->refs++;
    } else {
        gr->step_again = true;
    }
    pthread_mutex_unlock(&gr->mu);
    if (submit)
        lr_workers_submit(gr->p->workers, step_job, gr);
}

static void retry_fired(void *arg)
{
    lr_graph_run *gr = arg;
    pthread_mutex_lock(&gr->mu);
    gr->retry_armed = false;
    pthread_mutex_unlock(&gr->mu);
    kick(gr);
    unref(gr);
}

/* The scheduler tries again shortly (no slot, or the database away). */
static void retry_later(lr_graph_run *gr)
{
    pthread_mutex_lock(&gr->mu);
    bool arm = !gr->retry_armed;
    if (arm) {
        gr->retry_armed = true;
        gr->refs++;
    }
    pthread_mutex_unlock(&gr->mu);
    if (arm)
        lr_loop_timer(gr->p->loop, RETRY_MS, retry_fired, gr);
}

/* Settles node i's generation without running it: every output failed,
 * all its share refunded (settle's one refund row). */
static lr_err settle_unrun(lr_graph_run *gr, size_t i, lr_gen_status status, lr_code code,
                           const char *msg)
{
    gnode *nd = &gr->nodes[i];
    lr_settle_req q = {.generation_id = nd->gen_id,
                       .user_id = gr->user,
                       .status = lr_gen_status_name(status),
                       .failed_count = nd->outputs,
                       .refund = lr_generation_refund(nd->unit, nd->outputs),
                       .error_code = lr_code_name(code),
                       .error_message = msg};
    int balance;
    lr_err e = gr->p->db->ops->settle(gr->p->db, &q, &balance);
    if (e == LR_OK)
        notify(gr->p, nd->gen_id, status);
    return e;
}

/* Records node i's failure as the run's when it is the first. */
static void note_failure(lr_graph_run *gr, size_t i, lr_code code, const char *msg)
{
    pthread_mutex_lock(&gr->mu);
    if (gr->failed < 0 && !gr->canceled) {
        gr->failed = (int)i;
        gr->fail_code = code == LR_CODE_NONE ? LR_CODE_PROVIDER_FAILED : code;
        gr->fail_msg = lr_xstrdup(msg ? msg : lr_code_message(gr->fail_code));
    }
    pthread_mutex_unlock(&gr->mu);
}

/* Node i reads a node that failed or was never run: refunded, failed. */
static void skip_node(lr_graph_run *gr, size_t i, size_t src)
{
    char msg[200];
    snprintf(msg, sizeof msg, "Not run: node %s, which it reads, failed; the credits were refunded",
             gr->nodes[src].node_id);
    lr_err e = settle_unrun(gr, i, LR_GEN_FAILED, LR_CODE_UPSTREAM_FAILED, msg);
    if (e != LR_OK && e != LR_ERR_CONFLICT) {
        retry_later(gr);
        return;
    }
    pthread_mutex_lock(&gr->mu);
    gr->nodes[i].state = N_SKIPPED;
    pthread_mutex_unlock(&gr->mu);
}

/* nd is handed to the pipeline: it runs, and holds the run until its
 * generation ends (node_ended lets go). */
static void mark_running(lr_graph_run *gr, gnode *nd)
{
    pthread_mutex_lock(&gr->mu);
    nd->state = N_RUNNING;
    gr->refs++;
    pthread_mutex_unlock(&gr->mu);
}

/* The pipeline's answer for a node: its outputs kept for the nodes that
 * read them, or its failure noted; the scheduler goes on. */
static void node_ended(void *ctx, const lr_outcome *o)
{
    gnode *nd = ctx;
    lr_graph_run *gr = nd->gr;
    bool ok = o->status == LR_GEN_SUCCESS;
    pthread_mutex_lock(&gr->mu);
    nd->state = ok ? N_SUCCEEDED : N_FAILED;
    if (ok) {
        nd->urls.v = o->urls.n ? lr_xcalloc(o->urls.n, sizeof *nd->urls.v) : NULL;
        for (size_t k = 0; k < o->urls.n; k++)
            nd->urls.v[k] = lr_xstrdup(o->urls.v[k]);
        nd->urls.n = o->urls.n;
        nd->text = o->text ? lr_xstrdup(o->text) : NULL;
    }
    pthread_mutex_unlock(&gr->mu);
    if (!ok)
        note_failure(gr, (size_t)(nd - gr->nodes), o->error, o->error_message);
    kick(gr);
    unref(gr); /* the running node's */
}

/* What node i reads, from the nodes it reads (all succeeded): its prompt
 * and image URL, each a new string or NULL; false when a source lacks the
 * output referred to (a partly failed node). Under gr->mu. */
static bool resolve(lr_graph_run *gr, size_t i, char **prompt, char **image)
{
    gnode *nd = &gr->nodes[i];
    *prompt = *image = NULL;
    if (nd->reads[0] >= 0) {
        gnode *src = &gr->nodes[nd->reads[0]];
        const char *text = src->text;
        if (!text && (size_t)nd->output[0] < src->urls.n)
            text = src->urls.v[nd->output[0]];
        *prompt = text ? lr_xstrdup(text) : NULL;
    } else {
        *prompt = lr_xstrdup(nd->prompt);
    }
    if (nd->reads[1] >= 0) {
        gnode *src = &gr->nodes[nd->reads[1]];
        if ((size_t)nd->output[1] < src->urls.n)
            *image = lr_xstrdup(src->urls.v[nd->output[1]]);
    } else if (nd->image_url) {
        *image = lr_xstrdup(nd->image_url);
    }
    return *prompt && (nd->reads[1] < 0 || *image);
}

/* Hands node i, its inputs resolved, to the pipeline as a generation that
 * is already paid for. */
static void launch(lr_graph_run *gr, size_t i, const char *prompt, const char *image)
{
    lr_pipeline *p = gr->p;
    gnode *nd = &gr->nodes[i];
    char created[32];
    lr_time_iso(lr_now_ms(), created);
    json_t *inputs = image ? json_pack("[s]", image) : NULL;
    lr_run_req rq = {.generation_id = nd->gen_id,
                     .user_id = gr->user,
                     .model = nd->model,
                     .prompt = prompt,
                     .params = nd->params,
                     .outputs_count = nd->outputs,
                     .unit_price = nd->unit,
                     .created_at = created,
                     .input_urls = inputs,
                     .ended = node_ended,
                     .ended_ctx = nd};
    mark_running(gr, nd);
    lr_err e = lr_pipeline_start(p, &rq, 0, NULL, NULL);
    json_decref(inputs);
    if (e == LR_OK)
        return;
    lr_pipeline_unadmit(p, gr->user);
    settle_unrun(gr, i, LR_GEN_FAILED, LR_CODE_INTERNAL_ERROR, "The node could not be started");
    lr_outcome o = {.status = LR_GEN_FAILED, .error = LR_CODE_INTERNAL_ERROR};
    node_ended(nd, &o);
}

static bool draining(lr_pipeline *p)
{
    pthread_mutex_lock(&p->mu);
    bool d = p->draining;
    pthread_mutex_unlock(&p->mu);
    return d;
}

/* Starts node i when a slot is free: false when the scheduler must stop
 * and try again later. A process shutting down starts nothing: the node
 * waits for the next process. */
static bool start_node(lr_graph_run *gr, size_t i)
{
    lr_pipeline *p = gr->p;
    gnode *nd = &gr->nodes[i];
    if (draining(p))
        return false;
    if (!lr_pipeline_admit(p, gr->user, gr->max_in_flight)) {
        retry_later(gr);
        return false;
    }
    char *prompt, *image;
    pthread_mutex_lock(&gr->mu);
    bool ready = resolve(gr, i, &prompt, &image);
    pthread_mutex_unlock(&gr->mu);
    lr_err e = ready ? p->db->ops->start_node(p->db, nd->gen_id, prompt, image) : LR_OK;
    if (!ready || e != LR_OK)
        lr_pipeline_unadmit(p, gr->user);
    if (!ready) {
        static const char msg[] = "An output this node reads was not produced; the credits were "
                                  "refunded";
        if (settle_unrun(gr, i, LR_GEN_FAILED, LR_CODE_UPSTREAM_FAILED, msg) == LR_OK) {
            pthread_mutex_lock(&gr->mu);
            nd->state = N_FAILED;
            pthread_mutex_unlock(&gr->mu);
            note_failure(gr, i, LR_CODE_UPSTREAM_FAILED, msg);
        }
    } else if (e == LR_ERR_CONFLICT) { /* canceled meanwhile */
        pthread_mutex_lock(&gr->mu);
        nd->state = N_SKIPPED;
        pthread_mutex_unlock(&gr->mu);
    } else if (e != LR_OK) {
        retry_later(gr);
    } else {
        launch(gr, i, prompt, image);
    }
    free(prompt);
    free(image);
    return e == LR_OK || e == LR_ERR_CONFLICT;
}

/* Ends the run once no node waits or runs: success, failed naming the
 * first node that failed, or canceled. */
static void maybe_end(lr_graph_run *gr)
{
    pthread_mutex_lock(&gr->mu);
    bool busy = false, any_failed = false;
    for (size_t i = 0; i < gr->n; i++) {
        node_state st = gr->nodes[i].state;
        busy |= st == N_RUNNING || (st == N_WAITING && !gr->canceled);
        any_failed |= st == N_FAILED || st == N_SKIPPED;
    }
    if (busy || gr->ended) {
        pthread_mutex_unlock(&gr->mu);
        return;
    }
    gr->ended = true;
    lr_gen_status status = gr->canceled ? LR_GEN_CANCELED
                           : any_failed ? LR_GEN_FAILED
                                        : LR_GEN_SUCCESS;
    const char *node = gr->failed >= 0 ? gr->nodes[gr->failed].node_id : NULL;
    pthread_mutex_unlock(&gr->mu);
    lr_pipeline *p = gr->p;
    /* The failed node's error as its row has it: a node canceled on its
     * own (POST /api/generations/{id}/cancel) reads canceled there. */
    lr_generation row = {0};
    if (node)
        p->db->ops->get_generation(p->db, NULL, gr->nodes[gr->failed].gen_id, &row);
    const char *code = row.error_code ? row.error_code : lr_code_name(gr->fail_code);
    lr_err e = p->db->ops->finish_run(
        p->db, gr->id, lr_gen_status_name(status), status == LR_GEN_FAILED ? node : NULL,
        status == LR_GEN_FAILED ? (node ? code : lr_code_name(LR_CODE_UPSTREAM_FAILED)) : NULL,
        status == LR_GEN_FAILED ? (row.error_message ? row.error_message : gr->fail_msg) : NULL);
    lr_generation_clear(&row);
    if (e != LR_OK && e != LR_ERR_CONFLICT)
        lr_error("run %s: its end was not recorded (%s); recovery finishes it", gr->id,
                 lr_strerror(e));
    lr_log_fields(LR_LOG_INFO, NULL, "run finished",
                  json_pack("{s:s, s:s, s:s?}", "run_id", gr->id, "status",
                            lr_gen_status_name(status), "failed_node", node));
    registry_remove(p, gr);
    unref(gr); /* the registry's */
}

/* One pass in run order: nodes below a failure are refunded, nodes whose
 * inputs are ready start. */
static void step(lr_graph_run *gr)
{
    for (size_t k = 0; k < gr->n; k++) {
        size_t i = gr->order[k];
        pthread_mutex_lock(&gr->mu);
        gnode *nd = &gr->nodes[i];
        bool waiting = nd->state == N_WAITING && !gr->canceled;
        int blocked = -1, pending = 0;
        for (int s = 0; waiting && s < 2; s++) {
            int src = nd->reads[s];
            if (src < 0)
                continue;
            node_state st = gr->nodes[src].state;
            if (st == N_FAILED || st == N_SKIPPED)
                blocked = src;
            else if (st != N_SUCCEEDED)
                pending++;
        }
        pthread_mutex_unlock(&gr->mu);
        if (!waiting)
            continue;
        if (blocked >= 0)
            skip_node(gr, i, (size_t)blocked);
        else if (pending == 0 && !start_node(gr, i))
            break;
    }
    maybe_end(gr);
}

static void step_job(void *arg)
{
    lr_graph_run *gr = arg;
    for (;;) {
        pthread_mutex_lock(&gr->mu);
        gr->step_again = false;
        bool ended = gr->ended;
        pthread_mutex_unlock(&gr->mu);
        if (!ended)
            step(gr);
        pthread_mutex_lock(&gr->mu);
        bool again = gr->step_again && !gr->ended;
        if (!again)
            gr->step_queued = false;
        pthread_mutex_unlock(&gr->mu);
        if (!again)
            break;
    }
    unref(gr);
}

/* ---- beginning a run ---- */

__attribute__((format(printf, 3, 4))) static lr_err refuse(lr_run_begin_result *o, lr_code code,
                                                           const char *fmt, ...)
{
    o->kind = LR_RUN_REFUSED;
    o->code = code;
    va_list ap;
    va_start(ap, fmt);
    lr_code_vformat(o->message, sizeof o->message, code, fmt, ap);
    va_end(ap);
    return LR_OK;
}

/* What a run checks beyond the graph's shape, as /api/infer checks an
 * infer: literal prompts and image URLs, the model's provider. */
static void check_inputs(lr_pipeline *p, const lr_graph *g, lr_graph_check_result *c)
{
    for (size_t i = 0; i < g->n; i++) {
        const lr_graph_node *node = &g->nodes[i];
        const char *prompt = node->prompt.value, *image = node->image_url.value, *why = NULL;
        if (!c->lines[i].model)
            continue;
        if (prompt && (!*prompt || strlen(prompt) > LR_MAX_PROMPT_BYTES))
            lr_graph_add_error(c, node, "inputs.prompt", LR_CODE_INVALID_PROMPT,
                               "inputs.prompt must be 1 to 10000 bytes of text");
        if (image &&
            (strlen(image) > LR_MAX_IMAGE_URL_BYTES || !lr_net_url_allowed(p->net, image, &why)))
            lr_graph_add_error(c, node, "inputs.imageUrl", LR_CODE_INVALID_IMAGE_URL,
                               "inputs.imageUrl is not usable: %s", why ? why : "too long");
        if (!lr_provider_supports(p->provider, c->lines[i].model))
            lr_graph_add_error(c, node, "modelId", LR_CODE_PROVIDER_NOT_CONFIGURED, "%s",
                               lr_code_message(LR_CODE_PROVIDER_NOT_CONFIGURED));
    }
}

/* The charge row's metadata: a line per node. */
static json_t *charge_meta(const char *run_id, const lr_run_node_req *nodes, size_t n)
{
    json_t *lines = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(
            lines, json_pack("{s:s, s:s, s:s, s:i, s:i}", "node", nodes[i].node_id, "generation_id",
                             nodes[i].generation_id, "model", nodes[i].model, "outputs",
                             nodes[i].outputs_count, "credits", nodes[i].cost));
    return json_pack("{s:s, s:o}", "run_id", run_id, "lines", lines);
}

/* The reservation: one charge, the run and its nodes' rows. */
static lr_err reserve(lr_pipeline *p, const lr_run_begin_req *q, lr_run_begin_result *o,
                      const int *units, char (*gen_ids)[LR_UUID_LEN + 1], char lease[32])
{
    const lr_graph_check_result *c = &o->check;
    const lr_run_plan *plan = &o->plan;
    lr_run_node_req *nodes = lr_xcalloc(c->n, sizeof *nodes);
    json_t **urls = lr_xcalloc(c->n, sizeof *urls);
    size_t n = 0;
    for (size_t i = 0; i < c->n; i++) {
        const lr_price_line *l = &c->lines[i];
        const lr_graph_node *gn = &q->graph->nodes[i];
        const lr_run_node *from = &plan->cache[i];
        lr_uuid_v7(gen_ids[i]);
        if (!plan->included[i])
            continue;
        urls[i] = from->generation_id ? lr_strv_json(&from->result_urls) : NULL;
        nodes[n++] = (lr_run_node_req){
            .generation_id = gen_ids[i],
            .node_id = gn->id,
            .type = lr_model_generation_type(l->model),
            .model = l->model->id,
            .provider = lr_provider_name_for(p->provider, l->model),
            .prompt = gn->prompt.ref ? NULL : gn->prompt.value,
            .params = l->params,
            .outputs_count = l->outputs,
            .cost = from->generation_id ? 0 : units[i] * l->outputs,
            .cache_key = plan->keys[i],
            .cached_from = from->generation_id
                               ? (from->cached_from ? from->cached_from : from->generation_id)
                               : NULL,
            .result_urls = urls[i],
            .text = from->text};
    }
    char created[32];
    lr_time_iso(lr_now_ms(), created);
    lr_time_iso(lr_now_ms() + (int64_t)p->lease_s * 1000, lease);
    json_t *meta = charge_meta(o->run_id, nodes, n);
    lr_run_reserve_req r = {.run_id = o->run_id,
                            .user_id = q->user_id,
                            .graph = q->graph_json,
                            .charge_meta = meta,
                            .nodes = nodes,
                            .n = n,
                            .total = o->total,
                            .created_at = created,
                            .owner = p->owner,
                            .lease_until = lease,
                            .idempotency_key = q->idempotency_key,
                            .request_hash = q->idempotency_key ? q->request_hash : NULL};
    lr_key_holder holder = {0};
    lr_err e = p->db->ops->reserve_run(p->db, &r, &o->balance, &holder);
    json_decref(meta);
    free(nodes);
    for (size_t i = 0; i < c->n; i++)
        json_decref(urls[i]);
    free(urls);
    if (e == LR_ERR_CONFLICT) {
        snprintf(o->run_id, sizeof o->run_id, "%s", holder.generation_id);
        if (holder.same_request)
            o->kind = LR_RUN_REPLAYED;
        else
            refuse(o, LR_CODE_IDEMPOTENCY_KEY_REUSED, NULL);
    } else if (e == LR_ERR_INSUFFICIENT) {
        o->required = o->total;
        refuse(o, LR_CODE_INSUFFICIENT_CREDITS, "Insufficient credits. You have %d, need %d.",
               o->balance, o->total);
    } else if (e != LR_OK) {
        lr_log(LR_LOG_ERROR, q->request_id, "run not reserved: %s", lr_strerror(e));
        o->retry_after_s = 1;
        refuse(o, LR_CODE_DATABASE_UNAVAILABLE, NULL);
    }
    return e;
}

/* The units each node is charged (in graph order): the catalog's, or the
 * quote's; false with the refusal when the quote does not apply. */
static bool price(lr_pipeline *p, const lr_run_begin_req *q, lr_run_begin_result *o, int *units)
{
    const lr_graph_check_result *c = &o->check;
    const lr_run_plan *plan = &o->plan;
    size_t *index = lr_xcalloc(c->n, sizeof *index);
    o->lines = lr_xcalloc(c->n, sizeof *o->lines);
    o->cached = lr_xcalloc(c->n, sizeof *o->cached);
    o->n_lines = 0;
    for (size_t k = 0; k < c->n; k++) {
        size_t i = c->order[k];
        if (!plan->included[i])
            continue;
        index[o->n_lines] = i;
        o->cached[o->n_lines] = plan->cache[i].generation_id != NULL;
        o->lines[o->n_lines] = c->lines[i];
        if (o->cached[o->n_lines])
            o->lines[o->n_lines].unit = 0;
        o->n_lines++;
    }
    lr_code code = q->quote_id ? lr_quote_honour(p, q->user_id, q->quote_id, o->lines, o->n_lines)
                               : LR_CODE_NONE;
    o->total = 0;
    for (size_t k = 0; code == LR_CODE_NONE && k < o->n_lines; k++) {
        /* a node quoted from the cache that the cache no longer has */
        if (o->lines[k].unit == 0 && !o->cached[k] && c->lines[index[k]].unit > 0)
            code = LR_CODE_QUOTE_MISMATCH;
        units[index[k]] = o->lines[k].unit;
        o->total += o->lines[k].unit * o->lines[k].outputs;
    }
    free(index);
    if (code == LR_CODE_DATABASE_UNAVAILABLE)
        o->retry_after_s = 1;
    if (code != LR_CODE_NONE)
        refuse(o, code, NULL);
    return code == LR_CODE_NONE;
}

/* The checks and the plan, before pricing: false with the refusal. */
static bool prepare(lr_pipeline *p, const lr_run_begin_req *q, lr_run_begin_result *o)
{
    if (lr_graph_check(p, q->graph, &o->check) == LR_ERR_TOO_LARGE) {
        refuse(o, LR_CODE_GRAPH_TOO_LARGE, "A graph has 1 to %d nodes", LR_GRAPH_MAX_NODES);
        return false;
    }
    check_inputs(p, q->graph, &o->check);
    if (o->check.n_errors) {
        refuse(o, LR_CODE_INVALID_GRAPH, NULL);
        return false;
    }
    const char *bad = NULL;
    lr_run_plan_req pq = {.user_id = q->user_id,
                          .targets = q->targets,
                          .n_targets = q->n_targets,
                          .from_run = q->from_run};
    lr_err e = lr_run_plan_make(p, &pq, q->graph, &o->check, &o->plan, &bad);
    if (e == LR_ERR_NOT_FOUND) {
        snprintf(o->field, sizeof o->field, "fromRunId");
        refuse(o, LR_CODE_RUN_NOT_FOUND, "fromRunId names no run of yours");
    } else if (e == LR_ERR_INVALID) {
        snprintf(o->field, sizeof o->field, "targets");
        refuse(o, LR_CODE_INVALID_PARAMETER,
               "targets names %.64s, which is not a node of the graph", bad);
    } else if (e != LR_OK) {
        lr_log(LR_LOG_ERROR, q->request_id, "run not planned: %s", lr_strerror(e));
        o->retry_after_s = 1;
        refuse(o, LR_CODE_DATABASE_UNAVAILABLE, NULL);
    }
    return e == LR_OK;
}

lr_err lr_run_price(lr_pipeline *p, const lr_run_begin_req *q, lr_run_begin_result *o)
{
    *o = (lr_run_begin_result){.kind = LR_RUN_STARTED};
    if (!q->user_id)
        return LR_ERR_INVALID;
    if (!prepare(p, q, o))
        return LR_OK;
    int *units = lr_xcalloc(o->check.n, sizeof *units);
    lr_run_begin_req unquoted = *q;
    unquoted.quote_id = NULL;
    if (price(p, &unquoted, o, units) && q->max_credits >= 0 && o->total > q->max_credits) {
        o->required = o->total;
        o->max_credits = q->max_credits;
        refuse(o, LR_CODE_MAX_CREDITS_EXCEEDED, "The run costs %d credits, over maxCredits %ld",
               o->total, q->max_credits);
    }
    free(units);
    return LR_OK;
}

lr_err lr_run_begin(lr_pipeline *p, const lr_run_begin_req *q, lr_run_begin_result *o)
{
    *o = (lr_run_begin_result){.kind = LR_RUN_STARTED};
    if (!q->user_id)
        return LR_ERR_INVALID;
    int retry_after;
    if (q->limiter && !lr_ratelimit_take(q->limiter, q->user_id, &retry_after)) {
        o->retry_after_s = retry_after;
        return refuse(o, LR_CODE_RATE_LIMITED,
                      "Too many requests: slow down and retry after the given seconds");
    }
    if (!prepare(p, q, o))
        return LR_OK;
    int *units = lr_xcalloc(o->check.n, sizeof *units);
    char(*gen_ids)[LR_UUID_LEN + 1] = lr_xcalloc(o->check.n, sizeof *gen_ids);
    char lease[32];
    lr_uuid_v4(o->run_id);
    if (!price(p, q, o, units)) {
    } else if (q->max_credits >= 0 && o->total > q->max_credits) {
        o->required = o->total;
        o->max_credits = q->max_credits;
        refuse(o, LR_CODE_MAX_CREDITS_EXCEEDED, "The run costs %d credits, over maxCredits %ld",
               o->total, q->max_credits);
    } else if (reserve(p, q, o, units, gen_ids, lease) == LR_OK) {
        lr_graph_run *gr =
            graph_run_new(p, o->run_id, q->user_id, q->graph, &o->check, units, &o->plan);
        gr->max_in_flight = q->max_in_flight;
        for (size_t i = 0; i < gr->n; i++)
            memcpy(gr->nodes[i].gen_id, gen_ids[i], sizeof gen_ids[i]);
        lr_log_fields(LR_LOG_INFO, q->request_id, "run reserved",
                      json_pack("{s:s, s:s, s:i, s:i}", "run_id", o->run_id, "user_id", q->user_id,
                                "nodes", (int)gr->n, "cost", o->total));
        registry_add(p, gr);
        kick(gr);
    }
    free(units);
    free(gen_ids);
    return LR_OK;
}

void lr_run_begin_result_clear(lr_run_begin_result *r)
{
    lr_graph_check_clear(&r->check);
    lr_run_plan_clear(&r->plan);
    free(r->lines);
    free(r->cached);
}

/* ---- cancel ---- */

lr_err lr_run_cancel(lr_pipeline *p, const char *user, const char *id)
{
    lr_run rr;
    lr_err e = p->db->ops->get_run(p->db, user, id, &rr);
    if (e != LR_OK)
        return e;
    bool running = !strcmp(rr.status, "running");
    lr_run_clear(&rr);
    if (!running)
        return LR_ERR_CONFLICT;
    lr_graph_run *gr = registry_find(p, id);
    if (gr) {
        pthread_mutex_lock(&gr->mu);
        gr->canceled = true;
        pthread_mutex_unlock(&gr->mu);
    }
    lr_run_node_list nodes;
    e = p->db->ops->list_run_nodes(p->db, id, &nodes);
    for (size_t i = 0; e == LR_OK && i < nodes.n; i++) {
        const char *st = nodes.v[i].status;
        if (!strcmp(st, "pending") || !strcmp(st, "processing")) {
            lr_err ce = lr_pipeline_cancel(p, user, nodes.v[i].generation_id, NULL, NULL);
            if (ce != LR_OK && ce != LR_ERR_CONFLICT)
                e = ce;
        }
    }
    lr_run_node_list_clear(&nodes);
    if (gr) {
        kick(gr); /* ends the run once its running nodes are back */
        unref(gr);
    } else if (e == LR_OK) {
        e = p->db->ops->finish_run(p->db, id, lr_gen_status_name(LR_GEN_CANCELED), NULL, NULL,
                                   NULL);
    }
    return e == LR_ERR_CONFLICT ? LR_OK : e;
}

/* ---- recovery ---- */

/* Node i as its row left it: outputs of a finished one, a resumed
 * provider task, or (processing without a task id: whether the provider
 * took it is unknown, so it is not sent again) failed and refunded. */
static void adopt_node(lr_graph_run *gr, size_t i, const lr_run_node *row)
{
    gnode *nd = &gr->nodes[i];
    snprintf(nd->gen_id, sizeof nd->gen_id, "%s", row->generation_id);
    if (row->outputs_count > 0 && row->run_cost >= 0)
        nd->unit = row->run_cost / row->outputs_count;
    bool tasks = false;
    for (size_t k = 0; k < row->task_ids.n; k++)
        tasks |= row->task_ids.v[k] != NULL;
    if (!strcmp(row->status, "success")) {
        take_cached(nd, row);
    } else if (!strcmp(row->status, "pending")) {
        nd->state = N_WAITING;
    } else if (!strcmp(row->status, "processing") && tasks) {
        char created[32];
        lr_time_iso(lr_now_ms(), created);
        lr_run_req rq = {.generation_id = nd->gen_id,
                         .user_id = gr->user,
                         .model = nd->model,
                         .prompt = row->prompt ? row->prompt : "",
                         .params = nd->params,
                         .outputs_count = nd->outputs,
                         .unit_price = nd->unit,
                         .created_at = row->created_at ? row->created_at : created,
                         .ended = node_ended,
                         .ended_ctx = nd};
        mark_running(gr, nd);
        lr_log_fields(LR_LOG_WARN, NULL, "resuming a run's node left by a stopped process",
                      json_pack("{s:s, s:s}", "run_id", gr->id, "node", nd->node_id));
        if (lr_pipeline_resume(gr->p, &rq, &row->task_ids) != LR_OK) {
            lr_outcome o = {.status = LR_GEN_FAILED, .error = LR_CODE_INTERRUPTED};
            node_ended(nd, &o);
        }
    } else {
        if (!strcmp(row->status, "processing"))
            settle_unrun(gr, i, LR_GEN_FAILED, LR_CODE_INTERRUPTED,
                         "The server stopped before the provider accepted this node; the "
                         "credits were refunded");
        lr_code code = LR_CODE_INTERRUPTED;
        if (row->error_code)
            lr_code_parse(row->error_code, &code);
        bool upstream = code == LR_CODE_UPSTREAM_FAILED;
        nd->state = upstream ? N_SKIPPED : N_FAILED;
        if (!upstream)
            note_failure(gr, i, code, row->error_message);
    }
}

/* A run row and its nodes back into an executing run; false when its
 * graph no longer checks (a model left the catalog). */
static bool adopt_run(lr_pipeline *p, const lr_run *rr, const lr_run_node_list *rows)
{
    lr_graph g;
    lr_graph_read(json_object_get(rr->graph, "nodes"), &g);
    lr_graph_check_result c;
    lr_graph_check(p, &g, &c);
    bool ok = c.n > 0 && c.n_errors == 0 && rows->n <= c.n;
    lr_graph_run *gr = NULL;
    if (ok) {
        int *units = lr_xcalloc(c.n, sizeof *units);
        gr = graph_run_new(p, rr->id, rr->user_id, &g, &c, units, NULL);
        free(units);
        for (size_t i = 0; i < gr->n; i++)
            gr->nodes[i].state = N_OUT; /* until its row says otherwise */
        gr->refs++;                     /* held while its nodes are adopted */
        registry_add(p, gr);
    }
    for (size_t r = 0; ok && r < rows->n; r++) {
        for (size_t i = 0; i < gr->n; i++) {
            if (rows->v[r].node_id && !strcmp(rows->v[r].node_id, gr->nodes[i].node_id))
                adopt_node(gr, i, &rows->v[r]);
        }
    }
    lr_graph_check_clear(&c);
    lr_graph_release(&g);
    if (gr) {
        kick(gr);
        unref(gr);
    }
    return ok;
}

/* A run whose graph no longer checks: what is unfinished is refunded. */
static void abandon_run(lr_pipeline *p, const lr_run *rr, const lr_run_node_list *rows)
{
    for (size_t i = 0; i < rows->n; i++) {
        const lr_run_node *n = &rows->v[i];
        if (strcmp(n->status, "pending") != 0 && strcmp(n->status, "processing") != 0)
            continue;
        lr_settle_req q = {.generation_id = n->generation_id,
                           .user_id = rr->user_id,
                           .status = lr_gen_status_name(LR_GEN_FAILED),
                           .failed_count = n->outputs_count,
                           .refund = n->credits_used,
                           .error_code = lr_code_name(LR_CODE_INTERRUPTED),
                           .error_message = "The run could not be resumed; the credits were "
                                            "refunded"};
        int balance;
        p->db->ops->settle(p->db, &q, &balance);
    }
    p->db->ops->finish_run(p->db, rr->id, lr_gen_status_name(LR_GEN_FAILED), NULL,
                           lr_code_name(LR_CODE_INTERRUPTED), "The run could not be resumed");
}

/* Graph runs left by a dead process, taken over. */
static int graph_runs_recover(lr_pipeline *p)
{
    char lease[32];
    lr_time_iso(lr_now_ms() + (int64_t)p->lease_s * 1000, lease);
    lr_strv ids;
    if (p->db->ops->claim_runs(p->db, p->owner, lease, 50, lr_pipeline_takes_dead(p), &ids) !=
        LR_OK)
        return -1;
    for (size_t i = 0; i < ids.n; i++) {
        lr_run rr;
        lr_run_node_list rows = {0};
        if (p->db->ops->get_run(p->db, NULL, ids.v[i], &rr) != LR_OK)
            continue;
        if (p->db->ops->list_run_nodes(p->db, rr.id, &rows) == LR_OK) {
            lr_warn("taking over run %s left unfinished by a stopped process", rr.id);
            if (!adopt_run(p, &rr, &rows))
                abandon_run(p, &rr, &rows);
        }
        lr_run_node_list_clear(&rows);
        lr_run_clear(&rr);
    }
    int n = (int)ids.n;
    lr_strv_clear(&ids);
    return n;
}

/* Frees the graph runs still registered (shutdown, workers stopped). */
static void graph_runs_release(lr_pipeline *p)
{
    for (lr_graph_run *gr = p->graph_runs, *next; gr; gr = next) {
        next = gr->next;
        graph_run_free(gr);
    }
    p->graph_runs = NULL;
}

void lr_graph_runs_attach(lr_pipeline *p)
{
    static const lr_pipeline_part part = {graph_runs_recover, graph_runs_release};
    lr_pipeline_attach(p, &part);
}
