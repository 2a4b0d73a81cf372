/* Request helpers shared by the handlers. */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api.h"
#include "auth/auth.h"
#include "core/log.h"

bool lr_api_user(lr_app *app, lr_req *req, bool anon_allowed, char user[LR_UUID_LEN + 1])
{
    const char *reason = NULL;
    lr_jwt_claims c;
    lr_auth_status st =
        lr_auth_claims(app->cfg, app->jwks, lr_req_header(req, "Cookie"),
                       lr_req_header(req, "Authorization"), anon_allowed, &c, &reason);
    if (st != LR_AUTH_OK) {
        lr_api_unauthorized(req, st, reason);
        return false;
    }
    memcpy(user, c.sub, LR_UUID_LEN + 1);
    /* For the admin search by email: a cache hit when nothing changed. */
    if (c.email[0] && app->admin)
        lr_admin_note_email(app->admin, c.sub, c.email);
    return true;
}

void lr_api_unauthorized(lr_req *req, lr_auth_status st, const char *reason)
{
    char msg[160];
    snprintf(msg, sizeof msg, "Unauthorized: %s", reason ? reason : "invalid session");
    lr_req_set_header(req, "WWW-Authenticate", "Bearer");
    lr_api_error(req, st == LR_AUTH_MISSING ? LR_CODE_UNAUTHORIZED : LR_CODE_INVALID_TOKEN, msg,
                 NULL);
}

/* Whether a string in j (at dotted path `path`, `len` bytes of `size`
 * used) other than the one at `allowed` holds U+0000; path then names it.
 * jansson refuses U+0000 in keys itself, so only values are searched. */
static bool nul_string(json_t *j, char *path, size_t len, size_t size, const char *allowed)
{
    if (json_is_string(j))
        return strlen(json_string_value(j)) != json_string_length(j) &&
               !(allowed && !strcmp(path, allowed));
    const char *key;
    size_t i;
    json_t *v;
    json_object_foreach(j, key, v)
    {
        snprintf(path + len, size - len, "%s%s", len ? "." : "", key);
        if (nul_string(v, path, strlen(path), size, allowed))
            return true;
    }
    json_array_foreach(j, i, v)
    {
        snprintf(path + len, size - len, "[%zu]", i);
        if (nul_string(v, path, strlen(path), size, allowed))
            return true;
    }
    path[len] = '\0';
    return false;
}

json_t *lr_api_json_body(lr_req *req)
{
    return lr_api_json_body_nul(req, NULL);
}

json_t *lr_api_json_body_nul(lr_req *req, const char *nul_field)
{
    if (lr_req_body_too_large(req)) {
        lr_api_error(req, LR_CODE_BODY_TOO_LARGE, "Request body is too large", NULL);
        return NULL;
    }
    const char *ct = lr_req_header(req, "Content-Type");
    if (!ct || strncasecmp(ct, "application/json", 16) != 0 ||
        (ct[16] != '\0' && ct[16] != ';' && ct[16] != ' ')) {
        lr_api_error(req, LR_CODE_UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json",
                     NULL);
        return NULL;
    }
    size_t len;
    const char *body = lr_req_body(req, &len);
    json_error_t je;
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    char path[128] = "";
    if (json_is_object(j) && nul_string(j, path, 0, sizeof path, nul_field)) {
        char msg[192];
        snprintf(msg, sizeof msg, "%s must not contain NUL characters (\\u0000)", path);
        json_decref(j);
        lr_api_error(req, LR_CODE_INVALID_JSON, msg, json_pack("{s:s}", "field", path));
        return NULL;
    }
    if (!j || !json_is_object(j)) {
        char msg[256];
        if (j)
            snprintf(msg, sizeof msg, "Request body must be a JSON object");
        else
            snprintf(msg, sizeof msg, "Malformed JSON body: %s (line %d, column %d)", je.text,
                     je.line, je.column);
        json_decref(j);
        lr_api_error(req, LR_CODE_INVALID_JSON, msg, NULL);
        return NULL;
    }
    return j;
}

char *lr_api_cursor_encode(const char *created_at, const char *id)
{
    char buf[128];
    int n = snprintf(buf, sizeof buf, "%s|%s", created_at, id);
    return lr_b64url_encode((const unsigned char *)buf, (size_t)n);
}

bool lr_api_cursor_decode(const char *cursor, char created_at[32], char id[LR_UUID_LEN + 1])
{
    size_t n;
    char *raw = (char *)lr_b64_decode(cursor, strlen(cursor), &n);
    if (!raw)
        return false;
    char *bar = strchr(raw, '|');
    bool ok = bar && bar - raw > 0 && bar - raw < 32 && lr_uuid_valid(bar + 1, strlen(bar + 1)) &&
              strlen(raw) == n;
    if (ok) {
        memcpy(created_at, raw, (size_t)(bar - raw));
        created_at[bar - raw] = '\0';
        memcpy(id, bar + 1, LR_UUID_LEN + 1);
    }
    free(raw);
    return ok;
}

json_t *lr_api_next_cursor(json_t *rows, int limit)
{
    size_t n = json_array_size(rows);
    if (n == 0 || n < (size_t)limit)
        return json_null();
    json_t *last = json_array_get(rows, n - 1);
    char *c = lr_api_cursor_encode(json_string_value(json_object_get(last, "createdAt")),
                                   json_string_value(json_object_get(last, "id")));
    json_t *j = c ? json_string(c) : json_null();
    free(c);
    return j;
}

bool lr_api_limit(lr_req *req, int def, int max, int *out)
{
    const char *v = lr_req_query(req, "limit");
    long l = def;
    if (v && lr_parse_long(v, 1, max, &l) != 0) {
        char msg[96];
        snprintf(msg, sizeof msg, "limit must be a whole number from 1 to %d", max);
        lr_api_bad_query(req, "limit", msg);
        return false;
    }
    *out = (int)l;
    return true;
}

void lr_api_error(lr_req *req, lr_code code, const char *msg, json_t *extra)
{
    lr_req_reply_error(req, lr_code_http_status(code), lr_code_name(code),
                       msg ? msg : lr_code_message(code), extra);
}

void lr_api_bad_query(lr_req *req, const char *field, const char *msg)
{
    lr_req_reply_error(req, 400, lr_code_name(LR_CODE_INVALID_PARAMETER), msg,
                       json_pack("{s:s}", "field", field));
}

void lr_api_db_error(lr_req *req, lr_err e)
{
    lr_log(LR_LOG_ERROR, lr_req_id(req), "database error: %s", lr_strerror(e));
    lr_req_set_header(req, "Retry-After", "1");
    lr_api_error(req, LR_CODE_DATABASE_UNAVAILABLE, NULL, NULL);
}

bool lr_api_service_key(lr_app *app, lr_req *req)
{
    if (!app->cfg->service_key) {
        lr_api_error(req, LR_CODE_ADMIN_DISABLED,
                     "Admin API disabled: set SUPABASE_SECRET_KEY or SUPABASE_SERVICE_ROLE_KEY",
                     NULL);
        return false;
    }
    if (!lr_auth_service_role(app->cfg, lr_req_header(req, "Authorization"),
                              lr_req_header(req, "apikey"))) {
        lr_api_error(req, LR_CODE_UNAUTHORIZED,
                     "Unauthorized: the secret (service role) key is required, in apikey or as "
                     "Bearer",
                     NULL);
        return false;
    }
    return true;
}

bool lr_api_idempotency_key(lr_req *req, char out[204], bool *present)
{
    const char *h = lr_req_header(req, "Idempotency-Key");
    *present = h != NULL;
    if (!h)
        return true;
    size_t n = strlen(h);
    if (n >= 2 && h[0] == '"' && h[n - 1] == '"') {
        h++;
        n -= 2;
    }
    bool ok = n >= 1 && n <= 200;
    for (size_t i = 0; ok && i < n; i++)
        ok = h[i] >= 0x21 && h[i] <= 0x7e && h[i] != '"';
    if (!ok) {
        lr_api_error(req, LR_CODE_INVALID_IDEMPOTENCY_KEY,
                     "Idempotency-Key must be 1 to 200 visible ASCII characters", NULL);
        return false;
    }
    memcpy(out, h, n);
    out[n] = '\0';
    return true;
}

void lr_api_body_sha256(lr_req *req, char hex[65])
{
    size_t len;
    const char *body = lr_req_body(req, &len);
    unsigned char d[32];
    EVP_Digest(body, len, d, NULL, EVP_sha256(), NULL);
    lr_hex(d, 32, hex);
}
