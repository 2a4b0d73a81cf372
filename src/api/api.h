/* HTTP handlers, one file per resource. Each handler parses, authenticates,
 * calls the domain (db, pipeline, catalog) and renders; none of them knows
 * SQL or a provider's wire format. lr_api_route (routes.c, the route
 * table) dispatches by method and path. The helpers below reply on
 * failure and return false, so a handler reads as a straight line.
 */
#ifndef LR_API_H
#define LR_API_H

#include <jansson.h>
#include <stdbool.h>

#include "app.h"
#include "auth/auth.h"
#include "core/vocab.h"
#include "http/server.h"

void lr_api_route(lr_req *req, void *app);

/* Replies 401 for a session that did not verify (reason: why, or NULL). */
void lr_api_unauthorized(lr_req *req, lr_auth_status st, const char *reason);
/* Resolves the signed-in user or replies 401. */
bool lr_api_user(lr_app *app, lr_req *req, bool anon_allowed, char user[LR_UUID_LEN + 1]);
/* Parses a JSON object body or replies 413/415/400. A string holding
 * U+0000 is refused (400 invalid_json, its dotted path in `field`). New
 * reference. */
json_t *lr_api_json_body(lr_req *req);
/* As lr_api_json_body, but U+0000 is let through in the string at the
 * dotted path nul_field ("inputs.prompt"), which the caller must then
 * refuse itself with its own error (json_string_length vs strlen). */
json_t *lr_api_json_body_nul(lr_req *req, const char *nul_field);
/* Keyset cursor: base64url("createdAt|id"). */
char *lr_api_cursor_encode(const char *created_at, const char *id);
bool lr_api_cursor_decode(const char *cursor, char created_at[32], char id[LR_UUID_LEN + 1]);
/* The cursor after a full page of rows (createdAt, id), or JSON null. */
json_t *lr_api_next_cursor(json_t *rows, int limit);
/* ?limit= within [1,max], default def; replies 400 when malformed. */
bool lr_api_limit(lr_req *req, int def, int max, int *out);
void lr_api_db_error(lr_req *req, lr_err e);
/* Replies 403/401 unless the request carries the secret (service role)
 * key, in apikey or as Bearer. */
bool lr_api_service_key(lr_app *app, lr_req *req);
/* One keyset page (?limit, ?cursor) of user's ledger, newest first. */
void lr_api_ledger_page(lr_app *app, lr_req *req, const char *user);
/* A malformed query parameter: 400 invalid_parameter with its name in
 * `field` (400 like any malformed request line; the same code for a body
 * field is LR_ERROR_MAP's 422). */
void lr_api_bad_query(lr_req *req, const char *field, const char *msg);
/* Replies with code's HTTP status (from LR_ERROR_MAP) and the uniform
 * error body; msg NULL: the code's default message. extra is stolen. */
void lr_api_error(lr_req *req, lr_code code, const char *msg, json_t *extra);
/* Idempotency-Key: 1-200 visible ASCII characters, optionally as a quoted
 * sf-string, into out (*present: whether the header came); false (and a
 * 400 reply) when malformed. */
bool lr_api_idempotency_key(lr_req *req, char out[204], bool *present);
/* SHA-256 hex of the request body: what a retry with the same key must match. */
void lr_api_body_sha256(lr_req *req, char hex[65]);

void lr_api_infer(lr_app *app, lr_req *req);
void lr_api_quote(lr_app *app, lr_req *req);
void lr_api_runs_create(lr_app *app, lr_req *req);
void lr_api_run_get(lr_app *app, lr_req *req, const char *id);
void lr_api_run_cancel(lr_app *app, lr_req *req, const char *id);
void lr_api_run_events(lr_app *app, lr_req *req, const char *id);
void lr_api_models(lr_app *app, lr_req *req);
void lr_api_generations_list(lr_app *app, lr_req *req);
void lr_api_generation_get(lr_app *app, lr_req *req, const char *id);
void lr_api_generation_delete(lr_app *app, lr_req *req, const char *id);
void lr_api_generation_cancel(lr_app *app, lr_req *req, const char *id);
void lr_api_generation_events(lr_app *app, lr_req *req, const char *id);
void lr_api_webhook_kie(lr_app *app, lr_req *req);
void lr_api_credits_balance(lr_app *app, lr_req *req);
void lr_api_credits_transactions(lr_app *app, lr_req *req);
void lr_api_admin_credits(lr_app *app, lr_req *req);
void lr_api_health(lr_app *app, lr_req *req);
void lr_api_public_file(lr_app *app, lr_req *req, const char *bucket_and_key);
/* Supabase's image transformation URL: a resized variant of a stored image
 * (local storage; redirected to Supabase's own with Supabase storage). */
void lr_api_render_image(lr_app *app, lr_req *req, const char *bucket_and_key);

/* Operations (ops.c) and the admin API (admin.c). */
void lr_api_ready(lr_app *app, lr_req *req);
void lr_api_metrics(lr_app *app, lr_req *req);
/* The route function of LENSROOM_METRICS_PORT: /metrics, /readyz, /healthz. */
void lr_api_metrics_route(lr_req *req, void *app);
/* The pipeline observer: counts settled generations, then tells the SSE hub. */
void lr_api_observe(void *app, const char *generation_id, lr_gen_status status, lr_gen_stage stage);
/* The caller is an admin (service key, LENSROOM_ADMINS, or a token with
 * app_metadata.lensroom_admin) or the reply is 401/403; *actor names who
 * for the audit log. */
bool lr_api_admin(lr_app *app, lr_req *req, char actor[LR_UUID_LEN + 16]);
void lr_api_admin_analytics(lr_app *app, lr_req *req);
/* ?since=&until= of the analytics (default the last 30 days) or a 422. */
bool lr_api_admin_range(lr_req *req, char since[32], char until[32]);
/* The dashboard's API (admin.c): the session and its CSRF token, users,
 * one user's ledger and credit changes, generations. */
void lr_api_admin_session(lr_app *app, lr_req *req);
void lr_api_admin_users(lr_app *app, lr_req *req);
void lr_api_admin_user(lr_app *app, lr_req *req, const char *id);
void lr_api_admin_user_ledger(lr_app *app, lr_req *req, const char *id);
void lr_api_admin_user_credits(lr_app *app, lr_req *req, const char *id);
void lr_api_admin_generations(lr_app *app, lr_req *req);
void lr_api_admin_generation(lr_app *app, lr_req *req, const char *id);
/* The dashboard itself (dashboard.c): its files, the one-time sign-in
 * link, the analytics charts as SVG. */
void lr_api_dashboard(lr_app *app, lr_req *req);
void lr_api_dashboard_login(lr_app *app, lr_req *req);
void lr_api_admin_chart(lr_app *app, lr_req *req);
/* Buying credits (billing.c) and outgoing webhooks (webhooks_out.c). */
void lr_api_billing_packs(lr_app *app, lr_req *req);
void lr_api_billing_checkout(lr_app *app, lr_req *req);
void lr_api_webhook_stripe(lr_app *app, lr_req *req);
void lr_api_webhook_secret(lr_app *app, lr_req *req);
void lr_api_admin_webhooks_list(lr_app *app, lr_req *req);
void lr_api_admin_webhooks_add(lr_app *app, lr_req *req);
void lr_api_admin_webhook_remove(lr_app *app, lr_req *req, const char *id);
void lr_api_admin_webhook_rotate(lr_app *app, lr_req *req, const char *id);
void lr_api_admin_webhook_deliveries(lr_app *app, lr_req *req, const char *id);
void lr_api_admin_webhook_replay(lr_app *app, lr_req *req, const char *id);

/* The webhook one /api/infer request names for its generation: webhook
 * (URL, the download address policy applies) and webhookEvents (start,
 * output, logs, completed; default start and completed). url borrows
 * from the body. */
typedef struct {
    bool set;
    const char *url;
    char events[64];
} lr_gen_hook;
/* false: replied 422. */
bool lr_api_gen_hook_parse(lr_app *app, lr_req *req, json_t *body, lr_gen_hook *out);
/* After the reservation: records it, and sends "start" when asked. */
void lr_api_gen_hook_register(lr_app *app, const lr_gen_hook *h, const char *user,
                              const char *generation_id, const char *model_id);

#endif
