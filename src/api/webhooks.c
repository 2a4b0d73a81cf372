/* POST /api/webhooks/kie: Kie.ai's callback when a task ends. Kie signs
 * nothing, so the callback URL carries a token (HMAC of generation and
 * variant under the server's secret) that only this server can make; a
 * valid callback is only a hint: the pipeline asks Kie for the task's
 * record, which decides. Repeats are harmless. */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "core/util.h"

void lr_api_webhook_kie(lr_app *app, lr_req *req)
{
    const char *gen = lr_req_query(req, "generation");
    const char *variant = lr_req_query(req, "variant");
    const char *token = lr_req_query(req, "token");
    long v = -1;
    if (!gen || !lr_uuid_valid(gen, strlen(gen)) || !variant ||
        lr_parse_long(variant, 0, 3, &v) != 0 || !token) {
        lr_api_error(req, LR_CODE_INVALID_CALLBACK, "Malformed callback URL", NULL);
        return;
    }
    char expect[65];
    lr_provider_callback_token(app->cfg->jwt_secret, app->cfg->jwt_secret_len, gen, (int)v, expect);
    if (!lr_ct_equal(expect, 64, token, strlen(token))) {
        lr_api_error(req, LR_CODE_INVALID_CALLBACK_TOKEN, "Callback token does not match", NULL);
        return;
    }
    lr_pipeline_poke(app->pipeline, gen, (int)v);
    lr_req_reply_json(req, 200, json_pack("{s:b, s:b}", "success", 1, "received", 1));
}
