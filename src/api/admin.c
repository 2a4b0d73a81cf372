/* The admin API: who is an admin, and GET /api/admin/analytics.
 *
 * An admin is a caller with the service key (SUPABASE_SECRET_KEY or
 * SUPABASE_SERVICE_ROLE_KEY), or a signed-in user whose id is in
 * LENSROOM_ADMINS. A signed-in user who is not is refused 403; no session
 * at all is 401.
 */
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "auth/auth.h"
#include "cli/admin.h"
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

bool lr_api_admin(lr_app *app, lr_req *req, char actor[LR_UUID_LEN + 16])
{
    const lr_config *cfg = app->cfg;
    if (cfg->service_key && lr_auth_service_role(cfg, lr_req_header(req, "Authorization"),
                                                 lr_req_header(req, "apikey"))) {
        snprintf(actor, LR_UUID_LEN + 16, "service-key");
        return true;
    }
    char user[LR_UUID_LEN + 1];
    if (!lr_api_user(app, req, false, user))
        return false;
    if (!listed(cfg->admins, user)) {
        lr_req_reply_error(req, 403, lr_code_name(LR_CODE_FORBIDDEN), "Forbidden: this account is not an admin",
                           NULL);
        return false;
    }
    snprintf(actor, LR_UUID_LEN + 16, "%s", user);
    return true;
}

/* ?since= and ?until= (7d, 24h, YYYY-MM-DD, ISO), default the last 30
 * days; replies 422 when malformed. */
static bool range(lr_req *req, char since[32], char until[32])
{
    int64_t now = lr_now_ms();
    const char *a = lr_req_query(req, "since"), *b = lr_req_query(req, "until");
    if (!lr_cli_parse_time(a ? a : "30d", now, since) ||
        !lr_cli_parse_time(b ? b : "0h", now + 1, until)) {
        lr_api_error(req, LR_CODE_INVALID_PARAMETER,
                           "since and until must be like 7d, 24h, 2026-01-31 or an ISO-8601 time",
                           json_pack("{s:s}", "field", a && !lr_cli_parse_time(a, now, since)
                                                           ? "since"
                                                           : "until"));
        return false;
    }
    return true;
}

void lr_api_admin_analytics(lr_app *app, lr_req *req)
{
    char actor[LR_UUID_LEN + 16], since[32], until[32];
    if (!lr_api_admin(app, req, actor) || !range(req, since, until))
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
