/* GET /api/generations (the caller's, newest first, keyset pages),
 * GET /api/generations/{id} and DELETE /api/generations/{id}. Someone
 * else's id answers exactly like a missing one: a user never learns whether
 * another's generation exists. */
#include <string.h>

#include "api/api.h"
#include "api/events.h"
#include "api/render.h"

static const char *const types[] = {"photo", "video", "edit", "text"};

static bool one_of(const char *v, const char *const *set, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(v, set[i]))
            return true;
    }
    return false;
}

void lr_api_generations_list(lr_app *app, lr_req *req)
{
    char user[LR_UUID_LEN + 1];
    if (!lr_api_user(app, req, false, user))
        return;
    lr_gen_filter f = {0};
    if (!lr_api_limit(req, 20, 100, &f.limit))
        return;
    f.status = lr_req_query(req, "status");
    f.type = lr_req_query(req, "type");
    lr_gen_status status;
    if (f.status && !lr_gen_status_parse(f.status, &status)) {
        lr_api_bad_query(req, "status",
                         "status must be pending, processing, success, failed or canceled");
        return;
    }
    if (f.type && !one_of(f.type, types, 4)) {
        lr_api_bad_query(req, "type", "type must be photo, video, edit or text");
        return;
    }
    char created[32], id[LR_UUID_LEN + 1];
    const char *cursor = lr_req_query(req, "cursor");
    if (cursor) {
        if (!lr_api_cursor_decode(cursor, created, id)) {
            lr_api_bad_query(req, "cursor", "cursor is not valid");
            return;
        }
        f.before_created_at = created;
        f.before_id = id;
    }
    lr_generation_list list;
    lr_err e = app->db->ops->list_generations(app->db, user, &f, &list);
    if (e != LR_OK) {
        lr_api_db_error(req, e);
        return;
    }
    json_t *rows = lr_render_generations(&list);
    lr_generation_list_clear(&list);
    json_t *next = lr_api_next_cursor(rows, f.limit);
    lr_req_reply_json(
        req, 200,
        json_pack("{s:b, s:o, s:o}", "success", 1, "generations", rows, "nextCursor", next));
}

/* Replies 404 (missing, malformed id or someone else's) or 503 for e;
 * true when e is LR_OK. */
static bool found(lr_req *req, lr_err e)
{
    if (e == LR_ERR_NOT_FOUND)
        lr_api_error(req, LR_CODE_GENERATION_NOT_FOUND, "Generation not found", NULL);
    else if (e != LR_OK)
        lr_api_db_error(req, e);
    return e == LR_OK;
}

/* The signed-in caller's generation id into g, or false after a
 * 401/404/503 reply. */
static bool own_generation(lr_app *app, lr_req *req, const char *id, char user[LR_UUID_LEN + 1],
                           lr_generation *g)
{
    if (!lr_api_user(app, req, false, user))
        return false;
    lr_err e = lr_uuid_valid(id, strlen(id)) ? app->db->ops->get_generation(app->db, user, id, g)
                                             : LR_ERR_NOT_FOUND;
    return found(req, e);
}

void lr_api_generation_get(lr_app *app, lr_req *req, const char *id)
{
    char user[LR_UUID_LEN + 1];
    lr_generation g = {0};
    if (own_generation(app, req, id, user, &g))
        lr_req_reply_json(
            req, 200,
            json_pack("{s:b, s:o}", "success", 1, "generation", lr_render_generation(&g)));
    lr_generation_clear(&g);
}

/* Hides the generation from its owner and removes its stored files; a
 * removal that fails is retried by the maintenance job. Credits are not
 * touched: what was spent stays spent. */
void lr_api_generation_delete(lr_app *app, lr_req *req, const char *id)
{
    char user[LR_UUID_LEN + 1];
    if (!lr_api_user(app, req, false, user))
        return;
    lr_strv keys = {0};
    lr_err e = lr_uuid_valid(id, strlen(id)) ? app->db->ops->mark_deleted(app->db, user, id, &keys)
                                             : LR_ERR_NOT_FOUND;
    if (e == LR_ERR_CONFLICT) {
        lr_api_error(req, LR_CODE_GENERATION_RUNNING,
                     "The generation is still running; delete it once it has finished", NULL);
        return;
    }
    if (!found(req, e))
        return;
    bool removed = lr_pipeline_purge_objects(app->pipeline, id, &keys);
    lr_req_reply_json(req, 200,
                      json_pack("{s:b, s:s, s:b, s:i, s:b}", "success", 1, "generationId", id,
                                "deleted", 1, "objects", (int)keys.n, "objectsRemoved", removed));
    lr_strv_clear(&keys);
}

/* Cancels a running generation: settled as canceled with every credit of
 * it refunded, once; a finished one answers 409 with its final state. */
void lr_api_generation_cancel(lr_app *app, lr_req *req, const char *id)
{
    char user[LR_UUID_LEN + 1];
    if (!lr_api_user(app, req, false, user))
        return;
    lr_generation g = {0};
    int balance = 0;
    lr_err e = lr_uuid_valid(id, strlen(id))
                   ? lr_pipeline_cancel(app->pipeline, user, id, &g, &balance)
                   : LR_ERR_NOT_FOUND;
    json_t *gj = g.id ? lr_render_generation(&g) : NULL;
    lr_generation_clear(&g);
    if (e == LR_ERR_CONFLICT) {
        lr_api_error(req, LR_CODE_GENERATION_FINISHED,
                     "The generation has already finished; nothing was canceled",
                     json_pack("{s:o*}", "generation", gj));
    } else if (found(req, e)) {
        lr_req_reply_json(req, 200,
                          json_pack("{s:b, s:s, s:s, s:o*, s:i}", "success", 1, "generationId", id,
                                    "status", lr_gen_status_name(LR_GEN_CANCELED), "generation", gj,
                                    "balance", balance));
    } else {
        json_decref(gj);
    }
}

/* Server-Sent Events for one of the caller's generations. */
void lr_api_generation_events(lr_app *app, lr_req *req, const char *id)
{
    char user[LR_UUID_LEN + 1];
    lr_generation g = {0};
    if (!own_generation(app, req, id, user, &g))
        return;
    const char *last = lr_req_header(req, "Last-Event-ID");
    if (!last)
        last = lr_req_query(req, "lastEventId");
    long last_id = 0;
    int end = lr_events_preview_follows(app->events, &g) ? 6 : 5; /* the stream's last event */
    if (last && lr_parse_long(last, 0, 6, &last_id) != 0)
        lr_api_error(req, LR_CODE_INVALID_LAST_EVENT_ID,
                     "Last-Event-ID must be an event id from this stream (0 to 6)", NULL);
    else if (last_id >= end && !lr_generation_unfinished(&g))
        lr_req_reply_empty(req, 204); /* the client has seen the end: EventSource stops */
    else
        lr_events_open(app->events, req, user, &g, (int)last_id);
    lr_generation_clear(&g);
}
