#include "db/rows.h"

#include <stdlib.h>
#include <string.h>

#include "core/util.h"

void *lr_db_grow(void *v, size_t n, size_t size)
{
    if (n == 0 || (n & (n - 1)) == 0) { /* full at 0, 1, 2, 4, 8, ... */
        v = lr_xrealloc(v, (n ? 2 * n : 1) * size);
    }
    memset((char *)v + n * size, 0, size);
    return v;
}

static int to_int(const char *s)
{
    return s ? (int)strtol(s, NULL, 10) : 0;
}

void lr_db_strv_parse(const char *text, lr_strv *a)
{
    memset(a, 0, sizeof *a);
    json_t *j = text ? json_loads(text, 0, NULL) : NULL;
    size_t n = json_is_array(j) ? json_array_size(j) : 0;
    if (n) {
        a->v = lr_xcalloc(n, sizeof *a->v);
        a->n = n;
        for (size_t i = 0; i < n; i++)
            a->v[i] = lr_xstrdup(json_string_value(json_array_get(j, i)));
    }
    json_decref(j);
}

char *lr_db_strv_dump(const lr_strv *a)
{
    json_t *j = lr_strv_json(a);
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!text)
        abort();
    return text;
}

/* A stored JSON value as it is; {} when there is none. */
static json_t *json_of(const char *text)
{
    json_t *j = text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
    return j ? j : json_object();
}

static void generation_row(const char *const *col, lr_generation *g)
{
    *g = (lr_generation){
        .id = lr_xstrdup(col[GC_ID]),
        .user_id = lr_xstrdup(col[GC_USER_ID]),
        .type = lr_xstrdup(col[GC_TYPE]),
        .model = lr_xstrdup(col[GC_MODEL]),
        .prompt = lr_xstrdup(col[GC_PROMPT]),
        .status = lr_xstrdup(col[GC_STATUS]),
        .stage = lr_xstrdup(col[GC_STAGE]),
        .provider = lr_xstrdup(col[GC_PROVIDER]),
        .credits_used = to_int(col[GC_CREDITS_USED]),
        .outputs_count = to_int(col[GC_OUTPUTS_COUNT]),
        .succeeded_count = to_int(col[GC_SUCCEEDED_COUNT]),
        .failed_count = to_int(col[GC_FAILED_COUNT]),
        .params = json_of(col[GC_PARAMS]),
        .error_code = lr_xstrdup(col[GC_ERROR_CODE]),
        .error_message = lr_xstrdup(col[GC_ERROR_MESSAGE]),
        .has_duration = col[GC_DURATION_MS] != NULL,
        .duration_ms = col[GC_DURATION_MS] ? strtoll(col[GC_DURATION_MS], NULL, 10) : 0,
        .created_at = lr_xstrdup(col[GC_CREATED_AT]),
        .updated_at = lr_xstrdup(col[GC_UPDATED_AT]),
        .finished_at = lr_xstrdup(col[GC_FINISHED_AT]),
        .text = lr_xstrdup(col[GC_TEXT]),
        .preview_status = lr_xstrdup(col[GC_PREVIEW_STATUS]),
        .poster_path = lr_xstrdup(col[GC_POSTER_PATH]),
        .preview_path = lr_xstrdup(col[GC_PREVIEW_PATH]),
        .preview = col[GC_PREVIEW] ? json_loads(col[GC_PREVIEW], 0, NULL) : NULL,
    };
    lr_db_strv_parse(col[GC_RESULT_URLS], &g->result_urls);
    lr_db_strv_parse(col[GC_TASK_IDS], &g->task_ids);
}

static void ledger_row(const char *const *col, lr_ledger_row *t)
{
    *t = (lr_ledger_row){
        .id = lr_xstrdup(col[LC_ID]),
        .amount = to_int(col[LC_AMOUNT]),
        .type = lr_xstrdup(col[LC_TYPE]),
        .description = lr_xstrdup(col[LC_DESCRIPTION]),
        .metadata = json_of(col[LC_METADATA]),
        .generation_id = lr_xstrdup(col[LC_GENERATION_ID]),
        .created_at = lr_xstrdup(col[LC_CREATED_AT]),
    };
}

static void purge_row(const char *const *col, lr_purge *p)
{
    p->id = lr_xstrdup(col[PC_ID]);
    lr_db_strv_parse(col[PC_KEYS], &p->keys);
}

static void violation_row(const char *const *col, lr_violation *v)
{
    *v = (lr_violation){.kind = lr_xstrdup(col[VC_KIND]),
                        .subject = lr_xstrdup(col[VC_SUBJECT]),
                        .detail = lr_xstrdup(col[VC_DETAIL])};
}

void lr_db_add_generation(const char *const *col, void *out)
{
    lr_generation_list *l = out;
    l->v = lr_db_grow(l->v, l->n, sizeof *l->v);
    generation_row(col, &l->v[l->n++]);
}

void lr_db_add_ledger_row(const char *const *col, void *out)
{
    lr_ledger_list *l = out;
    l->v = lr_db_grow(l->v, l->n, sizeof *l->v);
    ledger_row(col, &l->v[l->n++]);
}

void lr_db_add_purge(const char *const *col, void *out)
{
    lr_purge_list *l = out;
    l->v = lr_db_grow(l->v, l->n, sizeof *l->v);
    purge_row(col, &l->v[l->n++]);
}

void lr_db_add_violation(const char *const *col, void *out)
{
    lr_violation_list *l = out;
    l->v = lr_db_grow(l->v, l->n, sizeof *l->v);
    violation_row(col, &l->v[l->n++]);
}

void lr_db_add_string(const char *const *col, void *out)
{
    lr_strv *a = out;
    a->v = lr_db_grow(a->v, a->n, sizeof *a->v);
    a->v[a->n++] = lr_xstrdup(col[0]);
}

lr_err lr_db_found_run(lr_err e, lr_run *out)
{
    if (e == LR_OK && !out->id)
        e = LR_ERR_NOT_FOUND;
    if (e != LR_OK)
        lr_run_clear(out);
    return e;
}

lr_err lr_db_first_generation(lr_err e, lr_generation_list *l, lr_generation *out)
{
    if (e == LR_OK && l->n == 0)
        e = LR_ERR_NOT_FOUND;
    if (e == LR_OK) {
        *out = l->v[0];
        l->v[0] = (lr_generation){0};
    } else {
        *out = (lr_generation){0};
    }
    lr_generation_list_clear(l);
    return e;
}

lr_err lr_db_first_run_node(lr_err e, lr_run_node_list *l, lr_run_node *out)
{
    if (e == LR_OK && l->n == 0)
        e = LR_ERR_NOT_FOUND;
    if (e == LR_OK) {
        *out = l->v[0];
        l->v[0] = (lr_run_node){0};
    } else {
        *out = (lr_run_node){0};
    }
    lr_run_node_list_clear(l);
    return e;
}

void lr_db_set_run(const char *const *col, void *out)
{
    lr_run *r = out;
    if (r->id)
        return;
    *r = (lr_run){
        .id = lr_xstrdup(col[RC_ID]),
        .user_id = lr_xstrdup(col[RC_USER_ID]),
        .status = lr_xstrdup(col[RC_STATUS]),
        .graph = json_of(col[RC_GRAPH]),
        .quoted = to_int(col[RC_QUOTED]),
        .error_node = lr_xstrdup(col[RC_ERROR_NODE]),
        .error_code = lr_xstrdup(col[RC_ERROR_CODE]),
        .error_message = lr_xstrdup(col[RC_ERROR_MESSAGE]),
        .created_at = lr_xstrdup(col[RC_CREATED_AT]),
        .updated_at = lr_xstrdup(col[RC_UPDATED_AT]),
        .finished_at = lr_xstrdup(col[RC_FINISHED_AT]),
    };
}

void lr_db_add_run_node(const char *const *col, void *out)
{
    lr_run_node_list *l = out;
    l->v = lr_db_grow(l->v, l->n, sizeof *l->v);
    lr_run_node *n = &l->v[l->n++];
    *n = (lr_run_node){
        .generation_id = lr_xstrdup(col[NC_GENERATION_ID]),
        .node_id = lr_xstrdup(col[NC_NODE_ID]),
        .status = lr_xstrdup(col[NC_STATUS]),
        .stage = lr_xstrdup(col[NC_STAGE]),
        .run_cost = to_int(col[NC_RUN_COST]),
        .credits_used = to_int(col[NC_CREDITS_USED]),
        .refunded = to_int(col[NC_REFUNDED]),
        .outputs_count = to_int(col[NC_OUTPUTS_COUNT]),
        .text = lr_xstrdup(col[NC_TEXT]),
        .prompt = lr_xstrdup(col[NC_PROMPT]),
        .image_url = lr_xstrdup(col[NC_IMAGE_URL]),
        .error_code = lr_xstrdup(col[NC_ERROR_CODE]),
        .error_message = lr_xstrdup(col[NC_ERROR_MESSAGE]),
        .created_at = lr_xstrdup(col[NC_CREATED_AT]),
        .finished_at = lr_xstrdup(col[NC_FINISHED_AT]),
        .cached_from = lr_xstrdup(col[NC_CACHED_FROM]),
    };
    lr_db_strv_parse(col[NC_RESULT_URLS], &n->result_urls);
    lr_db_strv_parse(col[NC_TASK_IDS], &n->task_ids);
}
