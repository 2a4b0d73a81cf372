#include "auth/auth.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "auth/jwt.h"
#include "auth/session.h"

lr_auth_status lr_auth_user(const lr_config *cfg, lr_jwks *jwks, const char *cookie,
                            const char *authorization, bool anon_allowed,
                            char user[LR_UUID_LEN + 1], const char **reason)
{
    lr_jwt_claims c;
    lr_auth_status st = lr_auth_claims(cfg, jwks, cookie, authorization, anon_allowed, &c, reason);
    if (st == LR_AUTH_OK)
        memcpy(user, c.sub, LR_UUID_LEN + 1);
    return st;
}

lr_auth_status lr_auth_claims(const lr_config *cfg, lr_jwks *jwks, const char *cookie,
                              const char *authorization, bool anon_allowed, lr_jwt_claims *out,
                              const char **reason)
{
    if (cfg->test_mode) {
        *out = (lr_jwt_claims){0};
        snprintf(out->sub, sizeof out->sub, "%s", cfg->test_user_id);
        return LR_AUTH_OK;
    }
    lr_credential *cands;
    int n = lr_session_candidates(cookie, authorization, &cands);
    if (n == 0) {
        if (anon_allowed && cfg->allow_anon_infer) {
            *out = (lr_jwt_claims){0};
            snprintf(out->sub, sizeof out->sub, "%s", cfg->test_user_id);
            return LR_AUTH_OK;
        }
        *reason =
            (cookie || authorization) ? "No usable session token in the request" : "Not signed in";
        return LR_AUTH_MISSING;
    }
    lr_jwt_verifier v = {.key = cfg->jwt_secret,
                         .key_len = cfg->jwt_secret_len,
                         .audience = cfg->jwt_audience,
                         .leeway_s = cfg->jwt_leeway_s,
                         .issuer = cfg->jwt_issuer,
                         .lookup = jwks ? lr_jwks_lookup : NULL,
                         .lookup_ctx = jwks};
    lr_auth_status st = LR_AUTH_INVALID;
    *reason = NULL;
    for (int i = 0; i < n; i++) {
        lr_jwt_status js =
            lr_jwt_verify(&v, cands[i].token, strlen(cands[i].token), (int64_t)time(NULL), out);
        if (js == LR_JWT_OK) {
            st = LR_AUTH_OK;
            break;
        }
        if (!*reason)
            *reason = lr_jwt_strerror(js);
    }
    lr_session_free(cands, n);
    return st;
}

/* Constant time over both configured keys, so the answer's timing tells
 * neither which key matched nor how much of one. */
static bool is_server_key(const lr_config *cfg, const char *given, size_t len)
{
    bool ok = false;
    const char *keys[] = {cfg->secret_key, cfg->service_role_key};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        ok |= keys[i] && lr_ct_equal(given, len, keys[i], strlen(keys[i]));
    return ok;
}

bool lr_auth_service_role(const lr_config *cfg, const char *authorization, const char *apikey)
{
    if (!cfg->service_key)
        return false;
    /* apikey wins: a client made with the secret key sends it there and
     * may carry a signed-in user's token in Authorization beside it. */
    if (apikey)
        return is_server_key(cfg, apikey, strlen(apikey));
    size_t len;
    const char *t = lr_session_bearer(authorization, &len);
    return t && is_server_key(cfg, t, len);
}
