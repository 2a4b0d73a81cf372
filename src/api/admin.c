/* The admin API: who is an admin, the CSRF token of admin sessions, and
 * the JSON behind the dashboard (users, a user's ledger and credits,
 * generations, analytics).
 *
 * An admin is a caller with the service key (SUPABASE_SECRET_KEY or
 * SUPABASE_SERVICE_ROLE_KEY), or a signed-in user whose id is in
 * LENSROOM_ADMINS or whose token carries app_metadata.lensroom_admin:
 * true. A signed-in user who is neither is refused 403; no session at all
 * is 401.
 *
 * Admin POSTs made with a session (a cookie a browser sends on its own)
 * need X-CSRF-Token: HMAC-SHA256 over the session's user and expiry,
 * handed out by GET /api/admin/session. A cross-site form can neither
 * read it nor compute it, so it is refused 403 csrf_failed. The service
 * key is never ambient, so its callers need no token.
 */
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "api/render.h"
#include "auth/auth.h"
#include "cli/admin.h"
#include "core/log.h"
#include "core/util.h"

/* Whether user is in the comma-separated list (lowercase ids). */
static bool listed(const char *list, const char *user)
{
    size_t n = strlen(user);
    for (const char *p = list; p && *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t k = strcspn(p, ", ");
        if (k == n && !memcmp(p, user, n))
            return true;
        p += k;
    }
    return false;
}

typedef struct {
    char actor[LR_UUID_LEN + 16]; /* the user id, or "service-key" */
    bool session;                 /* a signed-in user (else the service key) */
    lr_jwt_claims claims;         /* session only */
} admin_caller;

static bool admin_caller_of(lr_app *app, lr_req *req, admin_caller *who)
{
    const lr_config *cfg = app->cfg;
    *who = (admin_caller){0};
    if (cfg->service_key && lr_auth_service_role(cfg, lr_req_header(req, "Authorization"),
                                                 lr_req_header(req, "apikey"))) {
        snprintf(who->actor, sizeof who->actor, "service-key");
        return true;
    }
    const char *reason = NULL;
    lr_auth_status st =
        lr_auth_claims(cfg, app->jwks, lr_req_header(req, "Cookie"),
                       lr_req_header(req, "Authorization"), false, &who->claims, &reason);
    if (st != LR_AUTH_OK) {
        lr_api_unauthorized(req, st, reason);
        return false;
    }
    if (!who->claims.lensroom_admin && !listed(cfg->admins, who->claims.sub)) {
        lr_api_error(req, LR_CODE_FORBIDDEN, "Forbidden: this account is not an admin", NULL);
        return false;
    }
    who->session = true;
    snprintf(who->actor, sizeof who->actor, "%s", who->claims.sub);
    return true;
}

bool lr_api_admin(lr_app *app, lr_req *req, char actor[LR_UUID_LEN + 16])
{
    admin_caller who;
    if (!admin_caller_of(app, req, &who))
        return false;
    memcpy(actor, who.actor, sizeof who.actor);
    return true;
}

/* The key CSRF tokens are made with: the JWT secret or the service key
 * (so every process of a deployment agrees), else one drawn at start. */
static unsigned char random_key[32];
static pthread_once_t random_key_once = PTHREAD_ONCE_INIT;
static void draw_random_key(void)
{
    lr_random_bytes(random_key, sizeof random_key);
}

static void csrf_token(const lr_config *cfg, const lr_jwt_claims *c, char out[65])
{
    const unsigned char *key = cfg->jwt_secret;
    size_t len = cfg->jwt_secret_len;
    if (!key && cfg->service_key) {
        key = (const unsigned char *)cfg->service_key;
        len = strlen(cfg->service_key);
    }
    if (!key) {
        pthread_once(&random_key_once, draw_random_key);
        key = random_key;
        len = sizeof random_key;
    }
    char msg[96];
    int n = snprintf(msg, sizeof msg, "lensroom-admin-csrf|%s|%lld", c->sub, (long long)c->exp);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    HMAC(EVP_sha256(), key, (int)len, (const unsigned char *)msg, (size_t)n, mac, &maclen);
    lr_hex(mac, 32, out);
}

/* An admin allowed to change something: sessions must show the token. */
static bool admin_writer(lr_app *app, lr_req *req, admin_caller *who)
{
    if (!admin_caller_of(app, req, who))
        return false;
    if (!who->session)
        return true;
    char want[65];
    csrf_token(app->cfg, &who->claims, want);
    const char *got = lr_req_header(req, "X-CSRF-Token");
    if (got && lr_ct_equal(got, strlen(got), want, 64))
        return true;
    lr_api_error(req, LR_CODE_CSRF_FAILED,
                 "Forbidden: this admin action needs the X-CSRF-Token header from "
                 "GET /api/admin/session",
                 NULL);
    return false;
}

void lr_api_admin_session(lr_app *app, lr_req *req)
{
    admin_caller who;
    if (!admin_caller_of(app, req, &who))
        return;
    char csrf[65] = "";
    if (who.session)
        csrf_token(app->cfg, &who.claims, csrf);
    json_t *j = json_pack("{s:b, s:s, s:s}", "success", 1, "actor", who.actor, "via",
                          who.session ? "session" : "service-key");
    json_object_set_new(j, "userId", who.session ? json_string(who.claims.sub) : json_null());
    json_object_set_new(j, "email",
                        who.claims.email[0] ? json_string(who.claims.email) : json_null());
    json_object_set_new(j, "csrfToken", who.session ? json_string(csrf) : json_null());
    lr_req_reply_json(req, 200, j);
}

/* ?since= and ?until= (7d, 24h, YYYY-MM-DD, ISO), default the last 30
 * days; replies when malformed. */
bool lr_api_admin_range(lr_req *req, char since[32], char until[32])
{
    int64_t now = lr_now_ms();
    const char *a = lr_req_query(req, "since"), *b = lr_req_query(req, "until");
    if (!lr_cli_parse_time(a ? a : "30d", now, since) ||
        !lr_cli_parse_time(b ? b : "0h", now + 1, until)) {
        lr_api_error(req, LR_CODE_INVALID_PARAMETER,
                     "since and until must be like 7d, 24h, 2026-01-31 or an ISO-8601 time",
                     json_pack("{s:s}", "field",
                               a && !lr_cli_parse_time(a, now, since) ? "since" : "until"));
        return false;
    }
    return true;
}

void lr_api_admin_analytics(lr_app *app, lr_req *req)
{
    char actor[LR_UUID_LEN + 16], since[32], until[32];
    if (!lr_api_admin(app, req, actor) || !lr_api_admin_range(req, since, until))
        return;
    lr_analytics x;
    lr_err e = lr_admin_analytics(app->admin, since, until, 10, &x);
    if (e != LR_OK) {
        lr_api_db_error(req, e);
        return;
    }
    lr_req_reply_json(req, 200, lr_cli_analytics_json(&x, since, until));
    lr_analytics_clear(&x);
}

/* ---- users ---------------------------------------------------------- */

static json_t *user_json(const lr_admin_user *u)
{
    json_t *j = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I}", "userId", u->user_id, "balance",
                          (json_int_t)u->balance, "bought", (json_int_t)u->bought, "spent",
                          (json_int_t)u->spent, "refunded", (json_int_t)u->refunded, "granted",
                          (json_int_t)u->granted);
    json_object_set_new(j, "lastActivity",
                        u->last_activity ? json_string(u->last_activity) : json_null());
    json_object_set_new(j, "email", u->email ? json_string(u->email) : json_null());
    return j;
}

/* A search for ids starting with q (hex digits, dashes ignored): the
 * range [q000…, qfff…] in the canonical form, so it runs on the unique
 * index on both backends. False when q is not hex. */
static bool id_prefix_range(const char *q, char lo[LR_UUID_LEN + 1], char hi[LR_UUID_LEN + 1])
{
    static const char shape[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";
    size_t k = 0;
    for (size_t i = 0; i < LR_UUID_LEN; i++) {
        if (shape[i] == '-') {
            lo[i] = hi[i] = '-';
            continue;
        }
        while (q[k] == '-')
            k++;
        char c = q[k];
        if (c >= 'A' && c <= 'F')
            c = (char)(c - 'A' + 'a');
        if (c && !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
        lo[i] = c ? c : '0';
        hi[i] = c ? c : 'f';
        k += c ? 1 : 0;
    }
    while (q[k] == '-')
        k++;
    lo[LR_UUID_LEN] = hi[LR_UUID_LEN] = '\0';
    return q[k] == '\0';
}

void lr_api_admin_users(lr_app *app, lr_req *req)
{
    char actor[LR_UUID_LEN + 16], lo[LR_UUID_LEN + 1], hi[LR_UUID_LEN + 1];
    int limit;
    if (!lr_api_admin(app, req, actor) || !lr_api_limit(req, 50, 200, &limit))
        return;
    const char *q = lr_req_query(req, "q"), *after = lr_req_query(req, "cursor");
    if (q && !*q)
        q = NULL;
    /* Hex digits search ids; anything else (an @ above all) emails. */
    const char *email = q && (strchr(q, '@') || !id_prefix_range(q, lo, hi)) ? q : NULL;
    if (email && strlen(email) > 254) {
        lr_api_bad_query(req, "q",
                         "q must be a user id, its first hex digits, or the start "
                         "of an email (254 characters at most)");
        return;
    }
    if (after && !lr_uuid_valid(after, strlen(after))) {
        lr_api_bad_query(req, "cursor", "cursor is not valid");
        return;
    }
    lr_admin_user_list l;
    lr_err e = lr_admin_users(app->admin,
                              &(lr_admin_user_filter){.lo = q && !email ? lo : NULL,
                                                      .hi = q && !email ? hi : NULL,
                                                      .email = email,
                                                      .after = after,
                                                      .limit = limit},
                              &l);
    if (e != LR_OK) {
        lr_api_db_error(req, e);
        return;
    }
    json_t *rows = json_array();
    for (size_t i = 0; i < l.n; i++)
        json_array_append_new(rows, user_json(&l.v[i]));
    json_t *next = l.n == (size_t)limit ? json_string(l.v[l.n - 1].user_id) : json_null();
    lr_admin_user_list_clear(&l);
    lr_req_reply_json(
        req, 200, json_pack("{s:b, s:o, s:o}", "success", 1, "users", rows, "nextCursor", next));
}

/* The id in the path, lowercase; replies 404 when it is not a UUID. */
static bool path_id(lr_req *req, const char *id, char out[LR_UUID_LEN + 1], lr_code missing)
{
    if (!lr_uuid_valid(id, strlen(id))) {
        lr_api_error(req, missing, NULL, NULL);
        return false;
    }
    for (size_t i = 0; i <= LR_UUID_LEN; i++)
        out[i] = (id[i] >= 'A' && id[i] <= 'Z') ? (char)(id[i] - 'A' + 'a') : id[i];
    return true;
}

void lr_api_admin_user(lr_app *app, lr_req *req, const char *id)
{
    char actor[LR_UUID_LEN + 16], user[LR_UUID_LEN + 1];
    if (!lr_api_admin(app, req, actor) || !path_id(req, id, user, LR_CODE_NOT_FOUND))
        return;
    lr_admin_user_list l;
    lr_err e =
        lr_admin_users(app->admin, &(lr_admin_user_filter){.lo = user, .hi = user, .limit = 1}, &l);
    if (e != LR_OK) {
        lr_api_db_error(req, e);
        return;
    }
    if (l.n == 0)
        lr_api_error(req, LR_CODE_NOT_FOUND, "No user with this id has credits or a ledger", NULL);
    else
        lr_req_reply_json(req, 200,
                          json_pack("{s:b, s:o}", "success", 1, "user", user_json(&l.v[0])));
    lr_admin_user_list_clear(&l);
}

void lr_api_admin_user_ledger(lr_app *app, lr_req *req, const char *id)
{
    char actor[LR_UUID_LEN + 16], user[LR_UUID_LEN + 1];
    if (lr_api_admin(app, req, actor) && path_id(req, id, user, LR_CODE_NOT_FOUND))
        lr_api_ledger_page(app, req, user);
}

/* {amount, reason, idempotencyKey}: all three required; 422 naming the
 * field otherwise. */
static bool credits_body(lr_req *req, json_t *body, long *amount, const char **reason,
                         const char **key)
{
    json_t *ja = json_object_get(body, "amount"), *jr = json_object_get(body, "reason");
    json_t *jk = json_object_get(body, "idempotencyKey");
    const char *field = NULL, *msg = NULL;
    if (!json_is_integer(ja) || json_integer_value(ja) == 0 ||
        json_integer_value(ja) > 1000000000 || json_integer_value(ja) < -1000000000) {
        field = "amount";
        msg = "amount must be a non-zero whole number (negative takes credits back)";
    } else if (!json_is_string(jr) || json_string_length(jr) == 0 || json_string_length(jr) > 500) {
        field = "reason";
        msg = "reason is required (1-500 characters)";
    } else if (!json_is_string(jk) || json_string_length(jk) == 0 || json_string_length(jk) > 200) {
        field = "idempotencyKey";
        msg = "idempotencyKey is required (1-200 characters), so a repeated submit grants once";
    }
    if (field) {
        lr_api_error(req, LR_CODE_INVALID_PARAMETER, msg, json_pack("{s:s}", "field", field));
        return false;
    }
    *amount = (long)json_integer_value(ja);
    *reason = json_string_value(jr);
    *key = json_string_value(jk);
    return true;
}

static void reply_adjusted(lr_app *app, lr_req *req, const admin_caller *who, const char *user,
                           long amount, const char *reason, const lr_adjust_result *res)
{
    json_t *detail =
        json_pack("{s:I, s:s, s:s, s:b}", "amount", (json_int_t)amount, "reason", reason,
                  "transactionId", res->transaction_id, "replayed", res->replayed);
    lr_err e = lr_admin_audit(
        app->admin, &(lr_admin_action){.actor = who->actor,
                                       .action = amount > 0 ? "credits.grant" : "credits.take",
                                       .subject = user,
                                       .detail = detail,
                                       .request_id = lr_req_id(req)});
    if (e != LR_OK)
        lr_log(LR_LOG_ERROR, lr_req_id(req), "admin audit row not written: %s", lr_strerror(e));
    json_decref(detail);
    lr_req_reply_json(req, 200,
                      json_pack("{s:b, s:i, s:s, s:b}", "success", 1, "balance", res->new_balance,
                                "transactionId", res->transaction_id, "replayed", res->replayed));
}

void lr_api_admin_user_credits(lr_app *app, lr_req *req, const char *id)
{
    admin_caller who;
    char user[LR_UUID_LEN + 1];
    if (!admin_writer(app, req, &who) || !path_id(req, id, user, LR_CODE_NOT_FOUND))
        return;
    json_t *body = lr_api_json_body(req);
    long amount;
    const char *reason, *key;
    if (!body || !credits_body(req, body, &amount, &reason, &key)) {
        json_decref(body);
        return;
    }
    /* Scoped to the dashboard, so no API client's key can collide. */
    char scoped[256];
    snprintf(scoped, sizeof scoped, "admin:%s", key);
    json_t *meta = json_pack("{s:s, s:s, s:s}", "admin", who.actor, "reason", reason, "requestId",
                             lr_req_id(req));
    lr_adjust_req ar = {.user_id = user,
                        .amount = (int)amount,
                        .type = amount > 0 ? "bonus" : "adjustment",
                        .description = reason,
                        .idempotency_key = scoped,
                        .metadata = meta};
    lr_adjust_result res;
    lr_err e = app->db->ops->adjust(app->db, &ar, &res);
    if (e == LR_OK) {
        reply_adjusted(app, req, &who, user, amount, reason, &res);
    } else if (e == LR_ERR_INSUFFICIENT) {
        char msg[128];
        snprintf(msg, sizeof msg, "The balance is %d: cannot take %ld", res.new_balance, -amount);
        lr_api_error(req, LR_CODE_INSUFFICIENT_CREDITS, msg,
                     json_pack("{s:i, s:i}", "required", (int)-amount, "balance", res.new_balance));
    } else if (e == LR_ERR_CONFLICT) {
        lr_api_error(req, LR_CODE_IDEMPOTENCY_CONFLICT,
                     "This idempotency key was used for a different change", NULL);
    } else {
        lr_api_db_error(req, e);
    }
    json_decref(meta);
    json_decref(body);
}

/* ---- generations ---------------------------------------------------- */

static json_t *admin_generation_json(const lr_generation *g)
{
    json_t *j = lr_render_generation(g);
    json_object_set_new(j, "userId", json_string(g->user_id));
    return j;
}

/* Checks the ?user=, ?status=, ?since= filters; replies 400 when one is
 * malformed. */
static bool gen_filter(lr_req *req, lr_admin_gen_filter *f, char user[LR_UUID_LEN + 1],
                       char since[32])
{
    const char *u = lr_req_query(req, "user"), *st = lr_req_query(req, "status");
    const char *s = lr_req_query(req, "since");
    if (u && *u) {
        if (!lr_uuid_valid(u, strlen(u))) {
            lr_api_bad_query(req, "user", "user must be a user id (UUID)");
            return false;
        }
        for (size_t i = 0; i <= LR_UUID_LEN; i++)
            user[i] = (u[i] >= 'A' && u[i] <= 'Z') ? (char)(u[i] - 'A' + 'a') : u[i];
        f->user_id = user;
    }
    if (st && *st) {
        lr_gen_status parsed;
        if (!lr_gen_status_parse(st, &parsed)) {
            lr_api_bad_query(req, "status",
                             "status must be pending, processing, success, failed or canceled");
            return false;
        }
        f->status = st;
    }
    if (s && *s) {
        if (!lr_cli_parse_time(s, lr_now_ms(), since)) {
            lr_api_bad_query(req, "since", "since must be like 7d, 24h, 2026-01-31 or ISO-8601");
            return false;
        }
        f->since = since;
    }
    const char *m = lr_req_query(req, "model");
    f->model = m && *m ? m : NULL;
    return true;
}

void lr_api_admin_generations(lr_app *app, lr_req *req)
{
    char actor[LR_UUID_LEN + 16], user[LR_UUID_LEN + 1], since[32], created[32],
        gid[LR_UUID_LEN + 1];
    lr_admin_gen_filter f = {0};
    if (!lr_api_admin(app, req, actor) || !lr_api_limit(req, 50, 200, &f.limit) ||
        !gen_filter(req, &f, user, since))
        return;
    const char *cursor = lr_req_query(req, "cursor");
    if (cursor && !lr_api_cursor_decode(cursor, created, gid)) {
        lr_api_bad_query(req, "cursor", "cursor is not valid");
        return;
    }
    if (cursor) {
        f.before_created_at = created;
        f.before_id = gid;
    }
    lr_generation_list l;
    lr_err e = lr_admin_generations(app->admin, &f, &l);
    if (e != LR_OK) {
        lr_api_db_error(req, e);
        return;
    }
    json_t *rows = json_array();
    for (size_t i = 0; i < l.n; i++)
        json_array_append_new(rows, admin_generation_json(&l.v[i]));
    lr_generation_list_clear(&l);
    json_t *next = lr_api_next_cursor(rows, f.limit);
    lr_req_reply_json(
        req, 200,
        json_pack("{s:b, s:o, s:o}", "success", 1, "generations", rows, "nextCursor", next));
}

void lr_api_admin_generation(lr_app *app, lr_req *req, const char *id)
{
    char actor[LR_UUID_LEN + 16], gid[LR_UUID_LEN + 1];
    if (!lr_api_admin(app, req, actor) || !path_id(req, id, gid, LR_CODE_GENERATION_NOT_FOUND))
        return;
    lr_generation g;
    lr_err e = app->db->ops->get_generation(app->db, NULL, gid, &g);
    if (e == LR_ERR_NOT_FOUND) {
        lr_api_error(req, LR_CODE_GENERATION_NOT_FOUND, NULL, NULL);
        return;
    }
    if (e != LR_OK) {
        lr_api_db_error(req, e);
        return;
    }
    lr_ledger_list ledger;
    e = lr_admin_generation_ledger(app->admin, gid, &ledger);
    if (e != LR_OK) {
        lr_generation_clear(&g);
        lr_api_db_error(req, e);
        return;
    }
    json_t *j = admin_generation_json(&g);
    json_object_set_new(j, "ledger", lr_render_ledger(&ledger));
    lr_generation_clear(&g);
    lr_ledger_list_clear(&ledger);
    lr_req_reply_json(req, 200, json_pack("{s:b, s:o}", "success", 1, "generation", j));
}
