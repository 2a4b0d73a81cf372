/* The records' helpers (db.h): clearing what a read filled. */
#include "db/db.h"

#include "core/vocab.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void lr_generation_clear(lr_generation *g)
{
    char *strings[] = {g->id,          g->user_id,       g->type,           g->model,
                       g->prompt,      g->status,        g->stage,          g->provider,
                       g->error_code,  g->error_message, g->created_at,     g->updated_at,
                       g->finished_at, g->text,          g->preview_status, g->poster_path,
                       g->preview_path};
    for (size_t i = 0; i < sizeof strings / sizeof *strings; i++)
        free(strings[i]);
    lr_strv_clear(&g->result_urls);
    lr_strv_clear(&g->task_ids);
    json_decref(g->params);
    json_decref(g->preview);
    *g = (lr_generation){0};
}

void lr_db_reserve_async(lr_db *db, const lr_reserve_req *r, int *balance, lr_key_holder *holder,
                         lr_db_done_fn done, void *ctx)
{
    if (db->ops->reserve_async)
        db->ops->reserve_async(db, r, balance, holder, done, ctx);
    else
        done(ctx, db->ops->reserve(db, r, balance, holder));
}

void lr_db_settle_async(lr_db *db, const lr_settle_req *s, int *balance, lr_db_done_fn done,
                        void *ctx)
{
    if (db->ops->settle_async)
        db->ops->settle_async(db, s, balance, done, ctx);
    else
        done(ctx, db->ops->settle(db, s, balance));
}

bool lr_generation_unfinished(const lr_generation *g)
{
    lr_gen_status s;
    return lr_gen_status_parse(g->status, &s) && lr_gen_status_unfinished(s);
}

void lr_generation_event_type(const char *status, char out[LR_EVENT_TYPE_LEN])
{
    snprintf(out, LR_EVENT_TYPE_LEN, "generation.%s",
             !strcmp(status, lr_gen_status_name(LR_GEN_SUCCESS)) ? "succeeded" : status);
}

void lr_generation_list_clear(lr_generation_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        lr_generation_clear(&l->v[i]);
    free(l->v);
    *l = (lr_generation_list){0};
}

void lr_ledger_list_clear(lr_ledger_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        lr_ledger_row *t = &l->v[i];
        free(t->id);
        free(t->type);
        free(t->description);
        json_decref(t->metadata);
        free(t->generation_id);
        free(t->created_at);
    }
    free(l->v);
    *l = (lr_ledger_list){0};
}

void lr_reaped_list_clear(lr_reaped_list *l)
{
    free(l->v);
    *l = (lr_reaped_list){0};
}

void lr_purge_list_clear(lr_purge_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].id);
        lr_strv_clear(&l->v[i].keys);
    }
    free(l->v);
    *l = (lr_purge_list){0};
}

void lr_violation_list_clear(lr_violation_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].kind);
        free(l->v[i].subject);
        free(l->v[i].detail);
    }
    free(l->v);
    *l = (lr_violation_list){0};
}

void lr_quote_clear(lr_quote *q)
{
    json_decref(q->lines);
    *q = (lr_quote){0};
}

void lr_run_clear(lr_run *r)
{
    char *strings[] = {r->id,         r->user_id,    r->status,
                       r->error_node, r->error_code, r->error_message,
                       r->created_at, r->updated_at, r->finished_at};
    for (size_t i = 0; i < sizeof strings / sizeof *strings; i++)
        free(strings[i]);
    json_decref(r->graph);
    *r = (lr_run){0};
}

void lr_run_node_clear(lr_run_node *n)
{
    char *strings[] = {n->generation_id, n->node_id,    n->status,      n->stage,
                       n->text,          n->prompt,     n->image_url,   n->error_code,
                       n->error_message, n->created_at, n->finished_at, n->cached_from};
    for (size_t j = 0; j < sizeof strings / sizeof *strings; j++)
        free(strings[j]);
    lr_strv_clear(&n->result_urls);
    lr_strv_clear(&n->task_ids);
    *n = (lr_run_node){0};
}

void lr_run_node_list_clear(lr_run_node_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        lr_run_node_clear(&l->v[i]);
    free(l->v);
    *l = (lr_run_node_list){0};
}
