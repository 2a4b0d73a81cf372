/* Outgoing webhooks over HTTP: the operator's endpoints and their
 * delivery log under /api/admin/webhooks (secret or service role key),
 * a user's signing secret, and the webhook one /api/infer request names
 * for its generation. billing/hooks.h delivers. */
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "auth/auth.h"
#include "core/log.h"

static bool admin_ok(lr_app *app, lr_req *req)
{
    return lr_api_service_key(app, req);
}

static json_t *endpoint_json(const lr_endpoint *e)
{
    char created[32];
    lr_time_iso(e->created_at, created);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "id", e->id, "url", e->url, "events", e->events,
                          "createdAt", created);
    if (e->secret)
        json_object_set_new(o, "secret", json_string(e->secret));
    return o;
}

/* The URL a webhook may be sent to, or a 422 reply. */
static bool url_ok(lr_app *app, lr_req *req, json_t *jurl, const char *field)
{
    const char *why = "must be an https URL of at most 2048 characters";
    if (json_is_string(jurl) && json_string_length(jurl) <= 2048 &&
        strlen(json_string_value(jurl)) == json_string_length(jurl) &&
        lr_net_url_allowed(app->net, json_string_value(jurl), &why))
        return true;
    char msg[200];
    snprintf(msg, sizeof msg, "%s is not usable: %s", field, why);
    lr_api_error(req, LR_CODE_INVALID_WEBHOOK_URL, msg, json_pack("{s:s}", "field", field));
    return false;
}

void lr_api_admin_webhooks_list(lr_app *app, lr_req *req)
{
    if (!admin_ok(app, req))
        return;
    lr_endpoint_list l;
    lr_err e = lr_billing_endpoint_list(app->billing_db, &l);
    if (e != LR_OK) {
        lr_api_db_error(req, e);
        return;
    }
    json_t *a = json_array();
    for (size_t i = 0; i < l.n; i++)
        json_array_append_new(a, endpoint_json(&l.v[i]));
    lr_endpoint_list_clear(&l);
    lr_req_reply_json(req, 200, json_pack("{s:b, s:o}", "success", 1, "endpoints", a));
}

/* POST /api/admin/webhooks {url, events: [..] | "a,b"}: 201 with the
 * endpoint and its secret, shown this once. */
void lr_api_admin_webhooks_add(lr_app *app, lr_req *req)
{
    if (!admin_ok(app, req))
        return;
    json_t *body = lr_api_json_body(req);
    if (!body)
        return;
    json_t *jevents = json_object_get(body, "events");
    char events[512] = "";
    if (json_is_string(jevents)) {
        snprintf(events, sizeof events, "%s", json_string_value(jevents));
    } else if (json_is_array(jevents)) {
        size_t i;
        json_t *v;
        json_array_foreach(jevents, i, v)
        {
            size_t used = strlen(events);
            snprintf(events + used, sizeof events - used, "%s%s", i ? "," : "",
                     json_is_string(v) ? json_string_value(v) : "?");
        }
    }
    if (!url_ok(app, req, json_object_get(body, "url"), "url")) {
        json_decref(body);
        return;
    }
    if (!lr_hooks_events_valid(events)) {
        lr_api_error(req, LR_CODE_INVALID_EVENTS,
                     "events must list generation.succeeded, generation.failed, "
                     "generation.canceled, generation.started, credits.low or "
                     "credits.purchased",
                     json_pack("{s:s}", "field", "events"));
        json_decref(body);
        return;
    }
    lr_endpoint ep;
    lr_err e = lr_billing_endpoint_add(
        app->billing_db, json_string_value(json_object_get(body, "url")), events, &ep);
    json_decref(body);
    if (e != LR_OK) {
        lr_api_db_error(req, e);
        return;
    }
    lr_log(LR_LOG_INFO, lr_req_id(req), "webhook endpoint %s added for %s", ep.id, ep.events);
    lr_req_reply_json(req, 201,
                      json_pack("{s:b, s:o}", "success", 1, "endpoint", endpoint_json(&ep)));
    lr_endpoint_clear(&ep);
}

void lr_api_admin_webhook_remove(lr_app *app, lr_req *req, const char *id)
{
    if (!admin_ok(app, req))
        return;
    lr_err e = lr_billing_endpoint_remove(app->billing_db, id);
    if (e == LR_ERR_NOT_FOUND)
        lr_api_error(req, LR_CODE_NOT_FOUND, "No webhook endpoint has this id", NULL);
    else if (e != LR_OK)
        lr_api_db_error(req, e);
    else
        lr_req_reply_json(req, 200, json_pack("{s:b, s:s}", "success", 1, "id", id));
}

void lr_api_admin_webhook_rotate(lr_app *app, lr_req *req, const char *id)
{
    if (!admin_ok(app, req))
        return;
    lr_endpoint ep;
    int grace_s = app->cfg->webhook_rotate_grace_s;
    lr_err e = lr_billing_endpoint_rotate(app->billing_db, id,
                                          grace_s ? lr_now_ms() + (int64_t)grace_s * 1000 : 0, &ep);
    if (e == LR_ERR_NOT_FOUND) {
        lr_api_error(req, LR_CODE_NOT_FOUND, "No webhook endpoint has this id", NULL);
    } else if (e != LR_OK) {
        lr_api_db_error(req, e);
    } else {
        lr_req_reply_json(req, 200,
                          json_pack("{s:b, s:o}", "success", 1, "endpoint", endpoint_json(&ep)));
        lr_endpoint_clear(&ep);
    }
}

/* GET /api/admin/webhooks/{id}/deliveries?limit=: the delivery log. */
void lr_api_admin_webhook_deliveries(lr_app *app, lr_req *req, const char *id)
{
    int limit;
    if (!admin_ok(app, req) || !lr_api_limit(req, 50, 500, &limit))
        return;
    lr_attempt_list l;
    lr_err e = lr_billing_attempts(app->billing_db, id, limit, &l);
    if (e != LR_OK && e != LR_ERR_NOT_FOUND) {
        lr_api_db_error(req, e);
        return;
    }
    json_t *a = json_array();
    for (size_t i = 0; i < l.n; i++) {
        const lr_attempt *t = &l.v[i];
        char at[32];
        lr_time_iso(t->created_at, at);
        json_t *o = json_pack("{s:s, s:s, s:i, s:I, s:s, s:s, s:s*}", "deliveryId", t->delivery_id,
                              "eventType", t->event_type, "attempt", t->attempt, "latencyMs",
                              (json_int_t)t->latency_ms, "at", at, "deliveryStatus",
                              t->delivery_status, "error", t->error);
        json_object_set_new(o, "statusCode",
                            t->status_code ? json_integer(t->status_code) : json_null());
        json_array_append_new(a, o);
    }
    lr_attempt_list_clear(&l);
    lr_req_reply_json(req, 200, json_pack("{s:b, s:o}", "success", 1, "attempts", a));
}

/* POST /api/admin/webhooks/deliveries/{id}/replay: due again now. */
void lr_api_admin_webhook_replay(lr_app *app, lr_req *req, const char *id)
{
    if (!admin_ok(app, req))
        return;
    lr_err e = lr_billing_replay(app->billing_db, id, lr_now_ms());
    if (e == LR_ERR_NOT_FOUND) {
        lr_api_error(req, LR_CODE_NOT_FOUND, "No delivery has this id", NULL);
        return;
    }
    if (e != LR_OK) {
        lr_api_db_error(req, e);
        return;
    }
    lr_hooks_poke(app->hooks);
    lr_req_reply_json(req, 202,
                      json_pack("{s:b, s:s, s:s}", "success", 1, "id", id, "status", "pending"));
}

/* GET /api/webhooks/secret: the signed-in user's whsec_ secret for the
 * webhooks of their own generations. */
void lr_api_webhook_secret(lr_app *app, lr_req *req)
{
    char user[LR_UUID_LEN + 1];
    if (!lr_api_user(app, req, false, user))
        return;
    char *secret = NULL;
    lr_err e = lr_billing_user_secret(app->billing_db, user, &secret);
    if (e != LR_OK) {
        lr_api_db_error(req, e);
        return;
    }
    lr_req_set_header(req, "Cache-Control", "no-store");
    lr_req_reply_json(req, 200, json_pack("{s:b, s:s}", "success", 1, "key", secret));
    free(secret);
}

static const char *const filter_words[] = {"start", "output", "logs", "completed"};

bool lr_api_gen_hook_parse(lr_app *app, lr_req *req, json_t *body, lr_gen_hook *out)
{
    memset(out, 0, sizeof *out);
    json_t *url = json_object_get(body, "webhook"), *ev = json_object_get(body, "webhookEvents");
    if (!url || json_is_null(url)) {
        if (ev && !json_is_null(ev)) {
            lr_api_error(req, LR_CODE_INVALID_PARAMETER, "webhookEvents needs webhook",
                         json_pack("{s:s}", "field", "webhookEvents"));
            return false;
        }
        return true;
    }
    if (!url_ok(app, req, url, "webhook"))
        return false;
    out->url = json_string_value(url);
    snprintf(out->events, sizeof out->events, "start,completed");
    if (ev && !json_is_null(ev)) {
        bool ok = json_is_array(ev) && json_array_size(ev) > 0 && json_array_size(ev) <= 4;
        out->events[0] = '\0';
        size_t i;
        json_t *v;
        json_array_foreach(ev, i, v)
        {
            bool known = false;
            for (size_t k = 0; json_is_string(v) && k < 4; k++)
                known |= !strcmp(json_string_value(v), filter_words[k]);
            ok &= known;
            if (known) {
                size_t used = strlen(out->events);
                snprintf(out->events + used, sizeof out->events - used, "%s%s", used ? "," : "",
                         json_string_value(v));
            }
        }
        if (!ok) {
            lr_api_error(req, LR_CODE_INVALID_PARAMETER,
                         "webhookEvents must be a list of start, output, logs, completed",
                         json_pack("{s:s}", "field", "webhookEvents"));
            return false;
        }
    }
    out->set = true;
    return true;
}

void lr_api_gen_hook_register(lr_app *app, const lr_gen_hook *h, const char *user,
                              const char *generation_id, const char *model_id)
{
    if (!h->set)
        return;
    lr_err e = lr_billing_generation_hook(app->billing_db, generation_id, user, h->url, h->events);
    if (e != LR_OK) {
        lr_warn("generation %s: its webhook was not recorded (%s)", generation_id, lr_strerror(e));
        return;
    }
    if (strstr(h->events, "start"))
        lr_hooks_started(app->hooks, generation_id, user, model_id);
}
