#include "cli/admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/args.h"
#include "core/config.h"
#include "core/log.h"
#include "core/util.h"
#include "db/db.h"

const char lr_cli_generations_usage[] =
    "usage: lensroom generations list [--user U] [--status S] [--model M] [--since T]\n"
    "                                 [--limit N] [--json]\n"
    "       lensroom generations show ID [--json]\n"
    "list: any user's generations, newest first (default 50, at most 1000).\n"
    "show: one generation with its ledger rows (charge, refund).\n"
    "T: 7d, 24h, 2026-01-31 or an ISO-8601 time.\n";
const char lr_cli_users_usage[] =
    "usage: lensroom users top [--since T] [--limit N] [--json]\n"
    "Users by credits spent on generations (net of refunds) since T (default 30d).\n";
const char lr_cli_analytics_usage[] =
    "usage: lensroom analytics [--since T] [--until T] [--json]\n"
    "Credits spent, bought, refunded and granted per day; generations per model and\n"
    "day; success rate and p50/p95 duration per model; top users. Default: the last\n"
    "30 days. The same numbers as GET /api/admin/analytics and the dashboard.\n";
const char lr_cli_take_usage[] =
    "usage: lensroom credits take USER_ID AMOUNT --reason TEXT [--key KEY]\n"
    "Removes AMOUNT credits (never below zero) with an adjustment ledger row that\n"
    "carries the reason; written to the admin audit log. With --key, repeating it\n"
    "changes nothing.\n";

const char lr_cli_admin_link_usage[] =
    "usage: lensroom admin-link [--user USER_ID] [--ttl SECONDS]\n"
    "Prints a one-time URL that signs a browser in to the admin dashboard (/admin)\n"
    "as USER_ID (default: the first of LENSROOM_ADMINS, else a new id), with an\n"
    "admin session for 12 hours. The link works once, within --ttl (default 900).\n";

bool lr_cli_parse_time(const char *s, int64_t now_ms, char out[32])
{
    size_t n = s ? strlen(s) : 0;
    long v;
    if (n >= 2 && (s[n - 1] == 'd' || s[n - 1] == 'h')) {
        char num[16];
        if (n - 1 >= sizeof num)
            return false;
        memcpy(num, s, n - 1);
        num[n - 1] = '\0';
        if (lr_parse_long(num, 0, 36500L * 24, &v) != 0)
            return false;
        int64_t unit = s[n - 1] == 'd' ? 86400000 : 3600000;
        lr_time_iso(now_ms - (int64_t)v * unit, out);
        return true;
    }
    char buf[40];
    if (n == 10 && snprintf(buf, sizeof buf, "%sT00:00:00", s) > 0)
        s = buf;
    else if (n < 19 || n > 30)
        return false;
    int64_t ms = lr_time_parse_iso(s);
    if (ms < 0)
        return false;
    lr_time_iso(ms, out);
    return true;
}

/* Config, the database (migrated) and the admin reads. */
typedef struct {
    lr_config cfg;
    lr_db *db;
    lr_admin *admin;
} session;

static int open_session(session *s)
{
    memset(s, 0, sizeof *s);
    char *err = NULL;
    if (lr_config_load(&s->cfg) != 0 || lr_config_prepare_data(&s->cfg) != 0)
        return -1;
    lr_log_set_level((lr_log_level)s->cfg.log_level);
    if (lr_db_open(s->cfg.database_url, 1, &s->db, &err) != LR_OK ||
        s->db->ops->migrate(s->db) != LR_OK ||
        lr_admin_open(s->cfg.database_url, &s->admin, &err) != LR_OK) {
        fprintf(stderr, "database: %s\n", err ? err : "cannot open or migrate");
        free(err);
        return -1;
    }
    return 0;
}

static void close_session(session *s)
{
    lr_admin_close(s->admin);
    lr_db_close(s->db);
    lr_config_free(&s->cfg);
}

static json_t *str(const char *s)
{
    json_t *j = s ? json_string(s) : NULL;
    return j ? j : json_null();
}

/* A generation as an operator reads it: the owner included. */
static json_t *generation_json(const lr_generation *g)
{
    json_t *urls = lr_strv_json(&g->result_urls);
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:i, s:o, s:o, s:o, s:o, s:o, s:o}", "id",
                     str(g->id), "userId", str(g->user_id), "modelId", str(g->model), "status",
                     str(g->status), "prompt", str(g->prompt), "creditsUsed", g->credits_used,
                     "errorCode", str(g->error_code), "errorMessage", str(g->error_message),
                     "durationMs", g->has_duration ? json_integer(g->duration_ms) : json_null(),
                     "createdAt", str(g->created_at), "finishedAt", str(g->finished_at),
                     "resultUrls", urls);
}

static json_t *ledger_json(const lr_ledger_row *t)
{
    return json_pack("{s:o, s:i, s:o, s:o, s:o, s:O}", "id", str(t->id), "amount", t->amount,
                     "type", str(t->type), "description", str(t->description), "createdAt",
                     str(t->created_at), "metadata", t->metadata ? t->metadata : json_null());
}

static void print_json(json_t *j)
{
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (text)
        puts(text);
    free(text);
    json_decref(j);
}

static int generations_list(session *s, int argc, char **argv)
{
    long limit = 50;
    const char *l = lr_cli_opt(argc, argv, "--limit"),
               *since_arg = lr_cli_opt(argc, argv, "--since");
    const char *user = lr_cli_opt(argc, argv, "--user");
    char since[32];
    if (l && lr_parse_long(l, 1, 1000, &limit) != 0) {
        fprintf(stderr, "error: --limit must be from 1 to 1000\n");
        return 2;
    }
    if (since_arg && !lr_cli_parse_time(since_arg, lr_now_ms(), since)) {
        fprintf(stderr, "error: --since must be like 7d, 24h, 2026-01-31 or an ISO time\n");
        return 2;
    }
    if (user && !lr_uuid_valid(user, strlen(user))) {
        fprintf(stderr, "error: --user must be a user id (UUID)\n");
        return 2;
    }
    lr_admin_gen_filter f = {.user_id = user,
                             .status = lr_cli_opt(argc, argv, "--status"),
                             .model = lr_cli_opt(argc, argv, "--model"),
                             .since = since_arg ? since : NULL,
                             .limit = (int)limit};
    lr_generation_list gl;
    if (lr_admin_generations(s->admin, &f, &gl) != LR_OK) {
        fprintf(stderr, "error: the database did not answer\n");
        return 1;
    }
    if (lr_cli_flag(argc, argv, "--json")) {
        json_t *arr = json_array();
        for (size_t i = 0; i < gl.n; i++)
            json_array_append_new(arr, generation_json(&gl.v[i]));
        print_json(arr);
    } else {
        printf("%-36s  %-36s  %-18s  %-8s  %7s  %s\n", "id", "user_id", "model", "status",
               "credits", "created_at");
        for (size_t i = 0; i < gl.n; i++) {
            const lr_generation *g = &gl.v[i];
            printf("%-36s  %-36s  %-18s  %-8s  %7d  %s\n", g->id, g->user_id, g->model, g->status,
                   g->credits_used, g->created_at);
        }
    }
    lr_generation_list_clear(&gl);
    return 0;
}

static int generations_show(session *s, const char *id, bool json)
{
    lr_generation g = {0};
    lr_err e = s->db->ops->get_generation(s->db, NULL, id, &g);
    if (e == LR_ERR_NOT_FOUND) {
        fprintf(stderr, "error: no generation %s\n", id);
        return 1;
    }
    lr_ledger_list rows = {0};
    if (e != LR_OK || lr_admin_generation_ledger(s->admin, id, &rows) != LR_OK) {
        lr_generation_clear(&g);
        fprintf(stderr, "error: the database did not answer\n");
        return 1;
    }
    if (json) {
        json_t *j = generation_json(&g), *ledger = json_array();
        for (size_t i = 0; i < rows.n; i++)
            json_array_append_new(ledger, ledger_json(&rows.v[i]));
        json_object_set_new(j, "ledger", ledger);
        print_json(j);
    } else {
        printf("generation %s\n  user      %s\n  model     %s\n  status    %s\n  credits   %d\n"
               "  created   %s\n  finished  %s\n",
               g.id, g.user_id, g.model, g.status, g.credits_used, g.created_at,
               g.finished_at ? g.finished_at : "-");
        if (g.error_code)
            printf("  error     %s: %s\n", g.error_code, g.error_message ? g.error_message : "");
        for (size_t i = 0; i < g.result_urls.n; i++)
            printf("  url       %s\n", g.result_urls.v[i] ? g.result_urls.v[i] : "-");
        printf("ledger\n");
        for (size_t i = 0; i < rows.n; i++)
            printf("  %-24s  %8d  %-10s  %s\n", rows.v[i].created_at, rows.v[i].amount,
                   rows.v[i].type, rows.v[i].description ? rows.v[i].description : "");
    }
    lr_ledger_list_clear(&rows);
    lr_generation_clear(&g);
    return 0;
}

int lr_cli_generations(int argc, char **argv)
{
    bool list = argc >= 2 && !strcmp(argv[1], "list");
    bool show = argc >= 3 && !strcmp(argv[1], "show");
    if (!list && !show) {
        fputs(lr_cli_generations_usage, stderr);
        return 2;
    }
    if (show && !lr_uuid_valid(argv[2], strlen(argv[2]))) {
        fprintf(stderr, "error: ID must be a generation id (UUID)\n");
        return 2;
    }
    session s;
    int rc = 1;
    if (open_session(&s) == 0)
        rc = list ? generations_list(&s, argc - 2, argv + 2)
                  : generations_show(&s, argv[2], lr_cli_flag(argc, argv, "--json"));
    close_session(&s);
    return rc;
}

/* [since, until) from --since/--until, defaults: the last 30 days. */
static bool range(int argc, char **argv, char since[32], char until[32])
{
    int64_t now = lr_now_ms();
    const char *a = lr_cli_opt(argc, argv, "--since"), *b = lr_cli_opt(argc, argv, "--until");
    if (!lr_cli_parse_time(a ? a : "30d", now, since) ||
        !lr_cli_parse_time(b ? b : "0h", now + 1, until)) {
        fprintf(stderr, "error: --since/--until must be like 7d, 24h, 2026-01-31 or an ISO "
                        "time\n");
        return false;
    }
    return true;
}

int lr_cli_users(int argc, char **argv)
{
    char since[32], until[32];
    long limit = 20;
    const char *l = lr_cli_opt(argc, argv, "--limit");
    if (argc < 2 || strcmp(argv[1], "top") != 0) {
        fputs(lr_cli_users_usage, stderr);
        return 2;
    }
    if ((l && lr_parse_long(l, 1, 1000, &limit) != 0) || !range(argc, argv, since, until)) {
        fputs(lr_cli_users_usage, stderr);
        return 2;
    }
    session s;
    lr_analytics x = {0};
    int rc = 1;
    if (open_session(&s) == 0 &&
        lr_admin_analytics(s.admin, since, until, (int)limit, &x) == LR_OK) {
        if (lr_cli_flag(argc, argv, "--json")) {
            json_t *j = lr_cli_analytics_json(&x, since, until);
            print_json(json_incref(json_object_get(j, "topUsers")));
            json_decref(j);
        } else {
            printf("%-36s  %10s  %11s\n", "user_id", "spent", "generations");
            for (size_t i = 0; i < x.ntop; i++)
                printf("%-36s  %10lld  %11lld\n", x.top[i].user_id, (long long)x.top[i].spent,
                       (long long)x.top[i].generations);
        }
        rc = 0;
    } else if (s.admin) {
        fprintf(stderr, "error: the database did not answer\n");
    }
    lr_analytics_clear(&x);
    close_session(&s);
    return rc;
}

static void print_analytics(const lr_analytics *x, const char *since, const char *until)
{
    printf("analytics from %s to %s (UTC)\n\ncredits per day\n", since, until);
    printf("  %-10s  %9s  %9s  %9s  %9s\n", "day", "spent", "bought", "refunded", "granted");
    for (size_t i = 0; i < x->ndays; i++)
        printf("  %-10s  %9lld  %9lld  %9lld  %9lld\n", x->days[i].day, (long long)x->days[i].spent,
               (long long)x->days[i].bought, (long long)x->days[i].refunded,
               (long long)x->days[i].granted);
    printf("\ngenerations per model\n  %-20s  %7s  %8s  %7s  %7s  %8s  %8s\n", "model", "total",
           "success%", "failed", "cancel", "p50 ms", "p95 ms");
    for (size_t i = 0; i < x->nmodels; i++) {
        const lr_analytics_model *m = &x->models[i];
        printf("  %-20s  %7lld  %8.1f  %7lld  %7lld  %8lld  %8lld\n", m->model, (long long)m->total,
               m->total ? 100.0 * (double)m->succeeded / (double)m->total : 0, (long long)m->failed,
               (long long)m->canceled, (long long)m->p50_ms, (long long)m->p95_ms);
    }
    printf("\ngenerations per model and day\n");
    for (size_t i = 0; i < x->nmodel_days; i++)
        printf("  %-10s  %-20s  %7lld\n", x->model_days[i].day, x->model_days[i].model,
               (long long)x->model_days[i].n);
    printf("\ntop users by credits spent\n");
    for (size_t i = 0; i < x->ntop; i++)
        printf("  %-36s  %9lld  %6lld generations\n", x->top[i].user_id, (long long)x->top[i].spent,
               (long long)x->top[i].generations);
}

int lr_cli_analytics(int argc, char **argv)
{
    char since[32], until[32];
    if (!range(argc, argv, since, until))
        return 2;
    session s;
    lr_analytics x = {0};
    int rc = 1;
    if (open_session(&s) == 0 && lr_admin_analytics(s.admin, since, until, 10, &x) == LR_OK) {
        if (lr_cli_flag(argc, argv, "--json"))
            print_json(lr_cli_analytics_json(&x, since, until));
        else
            print_analytics(&x, since, until);
        rc = 0;
    } else if (s.admin) {
        fprintf(stderr, "error: the database did not answer\n");
    }
    lr_analytics_clear(&x);
    close_session(&s);
    return rc;
}

json_t *lr_cli_analytics_json(const lr_analytics *x, const char *since, const char *until)
{
    json_t *days = json_array(), *model_days = json_array(), *models = json_array();
    json_t *top = json_array();
    int64_t refunded = 0;
    for (size_t i = 0; i < x->ndays; i++) {
        const lr_analytics_day *d = &x->days[i];
        refunded += d->refunded;
        json_array_append_new(days, json_pack("{s:s, s:I, s:I, s:I, s:I}", "day", d->day, "spent",
                                              (json_int_t)d->spent, "bought", (json_int_t)d->bought,
                                              "refunded", (json_int_t)d->refunded, "granted",
                                              (json_int_t)d->granted));
    }
    for (size_t i = 0; i < x->nmodel_days; i++)
        json_array_append_new(model_days, json_pack("{s:s, s:s, s:I}", "day", x->model_days[i].day,
                                                    "model", x->model_days[i].model, "count",
                                                    (json_int_t)x->model_days[i].n));
    for (size_t i = 0; i < x->nmodels; i++) {
        const lr_analytics_model *m = &x->models[i];
        json_array_append_new(
            models,
            json_pack("{s:s, s:I, s:I, s:I, s:I, s:f, s:o, s:o}", "model", m->model, "total",
                      (json_int_t)m->total, "succeeded", (json_int_t)m->succeeded, "failed",
                      (json_int_t)m->failed, "canceled", (json_int_t)m->canceled, "successRate",
                      m->total ? (double)m->succeeded / (double)m->total : 0.0, "p50Ms",
                      m->p50_ms >= 0 ? json_integer(m->p50_ms) : json_null(), "p95Ms",
                      m->p95_ms >= 0 ? json_integer(m->p95_ms) : json_null()));
    }
    for (size_t i = 0; i < x->ntop; i++)
        json_array_append_new(top, json_pack("{s:s, s:I, s:I}", "userId", x->top[i].user_id,
                                             "spent", (json_int_t)x->top[i].spent, "generations",
                                             (json_int_t)x->top[i].generations));
    return json_pack("{s:b, s:s, s:s, s:o, s:o, s:o, s:{s:I}, s:o}", "success", 1, "since", since,
                     "until", until, "creditsPerDay", days, "generationsPerModelPerDay", model_days,
                     "models", models, "refunds", "credits", (json_int_t)refunded, "topUsers", top);
}

int lr_cli_credits_take(int argc, char **argv)
{
    long amount;
    const char *reason = lr_cli_opt(argc, argv, "--reason");
    if (argc < 3 || !lr_uuid_valid(argv[1], strlen(argv[1])) ||
        lr_parse_long(argv[2], 1, 1000000000, &amount) != 0 || !reason || !*reason) {
        fputs(lr_cli_take_usage, stderr);
        return 2;
    }
    char user[LR_UUID_LEN + 1];
    for (int i = 0; i <= LR_UUID_LEN; i++)
        user[i] = (argv[1][i] >= 'A' && argv[1][i] <= 'Z') ? (char)(argv[1][i] + 32) : argv[1][i];
    session s;
    int rc = 1;
    if (open_session(&s) != 0) {
        close_session(&s);
        return 1;
    }
    json_t *meta = json_pack("{s:s, s:s}", "admin", "cli", "reason", reason);
    lr_adjust_req r = {.user_id = user,
                       .amount = -(int)amount,
                       .type = "adjustment",
                       .description = reason,
                       .idempotency_key = lr_cli_opt(argc, argv, "--key"),
                       .metadata = meta};
    lr_adjust_result res;
    lr_err e = s.db->ops->adjust(s.db, &r, &res);
    if (e == LR_OK) {
        json_t *detail =
            json_pack("{s:I, s:s, s:s, s:b}", "amount", (json_int_t)-amount, "reason", reason,
                      "transactionId", res.transaction_id, "replayed", res.replayed);
        lr_admin_audit(s.admin, &(lr_admin_action){.actor = "cli",
                                                   .action = "credits.take",
                                                   .subject = user,
                                                   .detail = detail});
        json_decref(detail);
        printf("%s %ld credits from %s: balance %d (transaction %s)\n",
               res.replayed ? "already taken" : "took", amount, user, res.new_balance,
               res.transaction_id);
        rc = 0;
    } else if (e == LR_ERR_INSUFFICIENT) {
        fprintf(stderr, "error: balance is %d; cannot take %ld\n", res.new_balance, amount);
    } else if (e == LR_ERR_CONFLICT) {
        fprintf(stderr, "error: this --key was used for a different change\n");
    } else {
        fprintf(stderr, "error: %s\n", lr_strerror(e));
    }
    json_decref(meta);
    close_session(&s);
    return rc;
}

int lr_cli_admin_link(int argc, char **argv)
{
    const char *u = lr_cli_opt(argc, argv, "--user"), *t = lr_cli_opt(argc, argv, "--ttl");
    long ttl = 900;
    if ((u && !lr_uuid_valid(u, strlen(u))) || (t && lr_parse_long(t, 10, 86400, &ttl) != 0)) {
        fputs(lr_cli_admin_link_usage, stderr);
        return 2;
    }
    session s;
    if (open_session(&s) != 0) {
        close_session(&s);
        return 1;
    }
    char user[LR_UUID_LEN + 1], token[65];
    if (u)
        snprintf(user, sizeof user, "%s", u);
    else if (s.cfg.admins && lr_uuid_valid(s.cfg.admins + strspn(s.cfg.admins, " ,"), LR_UUID_LEN))
        snprintf(user, sizeof user, "%s", s.cfg.admins + strspn(s.cfg.admins, " ,"));
    else
        lr_uuid_v4(user);
    for (int i = 0; user[i]; i++)
        user[i] = (user[i] >= 'A' && user[i] <= 'Z') ? (char)(user[i] + 32) : user[i];
    lr_err e = lr_admin_link_create(s.admin, user, (int)ttl, token);
    if (e == LR_OK) {
        lr_admin_audit(
            s.admin,
            &(lr_admin_action){.actor = "cli", .action = "admin.link_created", .subject = user});
        printf("%s/admin/login?token=%s\n", s.cfg.public_url, token);
        fprintf(stderr, "one-time sign-in link for admin %s, valid %ld s\n", user, ttl);
    } else {
        fprintf(stderr, "error: %s\n", lr_strerror(e));
    }
    close_session(&s);
    return e == LR_OK ? 0 : 1;
}
