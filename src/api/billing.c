/* Buying credits: the packs, a Stripe Checkout Session for one, and
 * Stripe's webhook (billing/billing.h does the work). */
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "core/log.h"

void lr_api_billing_packs(lr_app *app, lr_req *req)
{
    json_t *packs = json_array();
    for (size_t i = 0; app->billing->packs && i < app->billing->packs->n; i++) {
        const lr_pack *p = &app->billing->packs->v[i];
        json_array_append_new(packs, json_pack("{s:s, s:s, s:i, s:I, s:s}", "id", p->id, "name",
                                               p->name, "credits", p->credits, "price",
                                               (json_int_t)p->price, "currency", p->currency));
    }
    lr_req_reply_json(req, 200,
                      json_pack("{s:b, s:o, s:b}", "success", 1, "packs", packs, "enabled",
                                app->cfg->stripe_secret_key != NULL));
}

static void on_checkout(void *ctx, lr_err e, const char *url, const char *session_id,
                        const char *message)
{
    lr_req *req = ctx;
    if (e == LR_OK) {
        lr_req_resume_json(
            req, 200,
            json_pack("{s:b, s:s, s:s}", "success", 1, "url", url, "sessionId", session_id));
        return;
    }
    char text[300];
    snprintf(text, sizeof text, "Payment provider error: %s", message);
    lr_req_resume_json(req, e == LR_ERR_UNAVAILABLE ? 503 : 502,
                       lr_error_body(lr_code_name(LR_CODE_PAYMENT_PROVIDER_ERROR), text, NULL));
}

/* POST /api/billing/checkout {packId}: the URL of a Stripe Checkout page
 * for the signed-in user. Idempotency-Key, when sent, is passed on to
 * Stripe (scoped to the user), so a retry gets the same session. */
void lr_api_billing_checkout(lr_app *app, lr_req *req)
{
    char user[LR_UUID_LEN + 1];
    if (!lr_api_user(app, req, false, user))
        return;
    json_t *body = lr_api_json_body(req);
    if (!body)
        return;
    json_t *jpack = json_object_get(body, "packId");
    const lr_pack *pack =
        json_is_string(jpack) ? lr_packs_find(app->billing->packs, json_string_value(jpack)) : NULL;
    const char *key = lr_req_header(req, "Idempotency-Key");
    if (!json_is_string(jpack)) {
        lr_api_error(req, LR_CODE_MISSING_FIELDS, "Missing required field: packId", NULL);
    } else if (!pack) {
        lr_api_error(req, LR_CODE_PACK_NOT_FOUND, "No credit pack has this id",
                     json_pack("{s:s}", "field", "packId"));
    } else if (!app->cfg->stripe_secret_key) {
        lr_req_set_header(req, "Retry-After", "3600");
        lr_api_error(req, LR_CODE_BILLING_NOT_CONFIGURED,
                     "Buying credits is not configured on this server (STRIPE_SECRET_KEY)", NULL);
    } else if (key && (strlen(key) == 0 || strlen(key) > 200)) {
        lr_api_error(req, LR_CODE_INVALID_IDEMPOTENCY_KEY,
                     "Idempotency-Key must be 1 to 200 characters", NULL);
    } else {
        char idem[300];
        if (key) {
            snprintf(idem, sizeof idem, "lensroom-%s-%s", user, key);
        } else {
            lr_uuid_v4(idem);
        }
        lr_req_suspend(req);
        lr_billing_checkout(app->billing, user, pack, idem, on_checkout, req);
    }
    json_decref(body);
}

/* POST /api/webhooks/stripe: verified on the raw bytes, then handled.
 * Refusals are 400 with a log line for the operator; a database failure
 * is 5xx, so Stripe delivers again later. */
void lr_api_webhook_stripe(lr_app *app, lr_req *req)
{
    size_t len;
    const char *body = lr_req_body(req, &len);
    const char *why = NULL;
    if (!app->cfg->stripe_webhook_secret) {
        lr_log(LR_LOG_WARN, lr_req_id(req), "stripe webhook refused: STRIPE_WEBHOOK_SECRET unset");
        lr_api_error(req, LR_CODE_BILLING_NOT_CONFIGURED,
                     "Stripe webhooks are not configured on this server", NULL);
        return;
    }
    if (!lr_stripe_signature_ok(lr_req_header(req, "Stripe-Signature"), body, len,
                                app->cfg->stripe_webhook_secret, app->cfg->stripe_tolerance_s,
                                lr_now_ms() / 1000, &why)) {
        lr_log(LR_LOG_WARN, lr_req_id(req), "stripe webhook refused: %s", why);
        lr_api_error(req, LR_CODE_INVALID_SIGNATURE, "Stripe-Signature does not verify this body",
                     NULL);
        return;
    }
    json_t *event = json_loadb(body, len, 0, NULL);
    lr_billing_outcome out;
    lr_err e =
        json_is_object(event) ? lr_billing_handle_event(app->billing, event, &out) : LR_ERR_INVALID;
    if (e == LR_ERR_INVALID) {
        lr_log(LR_LOG_WARN, lr_req_id(req), "stripe webhook refused: not an event object");
        lr_api_error(req, LR_CODE_INVALID_EVENT, "The body is not a Stripe event", NULL);
    } else if (e != LR_OK) {
        lr_api_db_error(req, e);
    } else {
        lr_log_fields(LR_LOG_INFO, lr_req_id(req), "stripe event",
                      json_pack("{s:s, s:s, s:s, s:s, s:i, s:i}", "event_id",
                                json_string_value(json_object_get(event, "id")), "type",
                                json_string_value(json_object_get(event, "type")), "action",
                                out.action, "user_id", out.user_id, "credits", out.credits,
                                "uncollected", out.uncollected));
        lr_req_reply_json(
            req, 200,
            json_pack("{s:b, s:b, s:s}", "success", 1, "received", 1, "action", out.action));
    }
    json_decref(event);
}
