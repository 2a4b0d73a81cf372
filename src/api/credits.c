/* The caller's balance and ledger, and the service-role grant endpoint. */
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "api/render.h"
#include "auth/auth.h"
#include "core/log.h"

void lr_api_credits_balance(lr_app *app, lr_req *req)
{
    char user[LR_UUID_LEN + 1];
    if (!lr_api_user(app, req, false, user))
        return;
    int balance;
    lr_err e = app->db->ops->balance(app->db, user, &balance);
    if (e != LR_OK) {
        lr_api_db_error(req, e);
        return;
    }
    lr_req_reply_json(
        req, 200, json_pack("{s:b, s:s, s:i}", "success", 1, "userId", user, "balance", balance));
}

void lr_api_credits_transactions(lr_app *app, lr_req *req)
{
    char user[LR_UUID_LEN + 1];
    if (lr_api_user(app, req, false, user))
        lr_api_ledger_page(app, req, user);
}

void lr_api_ledger_page(lr_app *app, lr_req *req, const char *user)
{
    int limit;
    if (!lr_api_limit(req, 50, 200, &limit))
        return;
    char created[32], id[LR_UUID_LEN + 1];
    const char *cursor = lr_req_query(req, "cursor");
    if (cursor && !lr_api_cursor_decode(cursor, created, id)) {
        lr_api_bad_query(req, "cursor", "cursor is not valid");
        return;
    }
    lr_ledger_list list;
    lr_err e = app->db->ops->list_transactions(app->db, user, cursor ? created : NULL,
                                               cursor ? id : NULL, limit, &list);
    if (e != LR_OK) {
        lr_api_db_error(req, e);
        return;
    }
    json_t *rows = lr_render_ledger(&list);
    lr_ledger_list_clear(&list);
    json_t *next = lr_api_next_cursor(rows, limit);
    lr_req_reply_json(
        req, 200,
        json_pack("{s:b, s:o, s:o}", "success", 1, "transactions", rows, "nextCursor", next));
}

static const char *const grant_types[] = {"purchase", "bonus", "refund", "adjustment"};

/* POST /api/admin/credits {userId, amount, type?, description?, idempotencyKey?}
 * with the secret or service role key (apikey, else Bearer). Idempotent by key (body or
 * Idempotency-Key). */
void lr_api_admin_credits(lr_app *app, lr_req *req)
{
    if (!lr_api_service_key(app, req))
        return;
    json_t *body = lr_api_json_body(req);
    if (!body)
        return;
    json_t *juser = json_object_get(body, "userId"), *jamount = json_object_get(body, "amount");
    json_t *jtype = json_object_get(body, "type"), *jdesc = json_object_get(body, "description");
    json_t *jkey = json_object_get(body, "idempotencyKey");
    const char *key =
        json_is_string(jkey) ? json_string_value(jkey) : lr_req_header(req, "Idempotency-Key");
    const char *type = json_is_string(jtype) ? json_string_value(jtype) : "bonus";
    bool type_ok = false;
    for (size_t i = 0; i < 4; i++)
        type_ok |= !strcmp(type, grant_types[i]);
    if (!json_is_string(juser) ||
        !lr_uuid_valid(json_string_value(juser), json_string_length(juser))) {
        lr_api_error(req, LR_CODE_INVALID_PARAMETER, "userId must be a UUID",
                     json_pack("{s:s}", "field", "userId"));
    } else if (!json_is_integer(jamount) || json_integer_value(jamount) == 0 ||
               json_integer_value(jamount) > 1000000000 ||
               json_integer_value(jamount) < -1000000000) {
        lr_api_error(req, LR_CODE_INVALID_PARAMETER,
                     "amount must be a non-zero whole number (at most 1e9 in size)",
                     json_pack("{s:s}", "field", "amount"));
    } else if (!type_ok || (jtype && !json_is_string(jtype))) {
        lr_api_error(req, LR_CODE_INVALID_PARAMETER,
                     "type must be purchase, bonus, refund or adjustment",
                     json_pack("{s:s}", "field", "type"));
    } else if ((jdesc && !json_is_string(jdesc) && !json_is_null(jdesc)) ||
               (jkey && !json_is_string(jkey)) ||
               (key && (strlen(key) == 0 || strlen(key) > 200))) {
        lr_api_error(req, LR_CODE_INVALID_PARAMETER,
                     "description and idempotencyKey must be strings (key 1-200 chars)", NULL);
    } else {
        char user[LR_UUID_LEN + 1];
        for (size_t i = 0; i <= LR_UUID_LEN; i++) {
            char c = json_string_value(juser)[i];
            user[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
        }
        lr_adjust_req ar = {.user_id = user,
                            .amount = (int)json_integer_value(jamount),
                            .type = type,
                            .description = json_string_value(jdesc),
                            .idempotency_key = key};
        lr_adjust_result res;
        lr_err e = app->db->ops->adjust(app->db, &ar, &res);
        if (e == LR_OK) {
            lr_log_fields(LR_LOG_INFO, lr_req_id(req), "credits adjusted by admin",
                          json_pack("{s:s, s:i, s:s, s:b}", "user_id", user, "amount", ar.amount,
                                    "type", type, "replayed", res.replayed));
            lr_req_reply_json(req, 200,
                              json_pack("{s:b, s:i, s:i, s:s, s:b}", "success", 1, "new_balance",
                                        res.new_balance, "balance", res.new_balance,
                                        "transaction_id", res.transaction_id, "replayed",
                                        res.replayed));
        } else if (e == LR_ERR_INSUFFICIENT) {
            char msg[128];
            snprintf(msg, sizeof msg, "Insufficient credits. You have %d, need %d.",
                     res.new_balance, -ar.amount);
            lr_api_error(
                req, LR_CODE_INSUFFICIENT_CREDITS, msg,
                json_pack("{s:i, s:i}", "required", -ar.amount, "balance", res.new_balance));
        } else if (e == LR_ERR_CONFLICT) {
            lr_api_error(req, LR_CODE_IDEMPOTENCY_CONFLICT,
                         "This idempotency key was used with a different amount or type", NULL);
        } else {
            lr_api_db_error(req, e);
        }
    }
    json_decref(body);
}
