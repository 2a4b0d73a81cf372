/* lensroom: command-line dispatch. Each command loads the configuration,
 * opens what it needs, does its one job and exits non-zero on failure.
 *   serve | migrate | token | credits grant|balance|history | audit | smoke
 *   | backup create|verify|restore | generations list|show | users top | analytics
 *   | webhooks add|list|remove|rotate-secret
 */
#include <curl/curl.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api/api.h"
#include "api/events.h"
#include "app.h"
#include "auth/jwt.h"
#include "cli/admin.h"
#include "cli/backup.h"
#include "cli/smoke.h"
#include "cli/store.h"
#include "cli/webhooks.h"
#include "core/config.h"
#include "core/log.h"
#include "core/util.h"
#include "http/server.h"
#include "pipeline/run.h"

#define VERSION "0.1.0"

static const char usage_main[] =
    "usage: lensroom <command> [options]\n"
    "\n"
    "commands:\n"
    "  serve                         run the HTTP server (PORT, default 3001)\n"
    "  migrate                       apply the database schema (idempotent)\n"
    "  token USER_ID [--ttl SECONDS] print a signed access token for a user\n"
    "  credits grant USER_ID AMOUNT [--reason TEXT] [--key IDEMPOTENCY_KEY]\n"
    "  credits balance USER_ID\n"
    "  credits history USER_ID [--limit N]\n"
    "  audit                         check the ledger invariants (exit 1 on any violation)\n"
    "  smoke                         check the configured database and storage end to end\n"
    "  backup create [--to DIR|s3://bucket/prefix] [--with-objects]\n"
    "  backup verify ARCHIVE\n"
    "  backup restore ARCHIVE (--data-dir DIR | --database-url URL) [--force]\n"
    "  credits take USER_ID AMOUNT --reason TEXT [--key KEY]\n"
    "  generations list [--user U] [--status S] [--model M] [--since T] [--json]\n"
    "  generations show ID [--json]\n"
    "  users top [--since T] [--limit N] [--json]\n"
    "  analytics [--since T] [--until T] [--json]\n"
    "  admin-link [--user USER_ID] [--ttl SECONDS]  one-time sign-in URL for /admin\n"
    "  webhooks add URL --events TYPE,... | list | remove ID | rotate-secret ID\n"
    "\n"
    "Every command reads its configuration from the environment; see README.md.\n"
    "Run 'lensroom <command> --help' for one command.\n";

static const char usage_serve[] =
    "usage: lensroom serve\n"
    "Runs the HTTP API on PORT (default 3001) with data in LENSROOM_DATA_DIR\n"
    "(default ./lensroom-data). Applies migrations, then serves until SIGINT/SIGTERM.\n"
    "Generations left unfinished by a stopped process are resumed, or failed and\n"
    "refunded, within one lease of its death (LENSROOM_LEASE_S, default 30).\n";
static const char usage_migrate[] =
    "usage: lensroom migrate\n"
    "Applies the database schema; running it again changes nothing.\n";
static const char usage_token[] =
    "usage: lensroom token USER_ID [--ttl SECONDS]\n"
    "Prints an HS256 access token (Supabase claims: sub, role and aud\n"
    "\"authenticated\", iat, exp; iss {SUPABASE_URL}/auth/v1 when SUPABASE_URL\n"
    "is set) signed with the server's JWT secret.\n"
    "Default ttl 3600 seconds.\n";
static const char usage_credits[] =
    "usage: lensroom credits grant USER_ID AMOUNT [--reason TEXT] [--key KEY]\n"
    "       lensroom credits balance USER_ID\n"
    "       lensroom credits history USER_ID [--limit N]\n"
    "       lensroom credits take USER_ID AMOUNT --reason TEXT [--key KEY]\n"
    "grant adds AMOUNT (negative removes, never below zero) with a ledger row;\n"
    "with --key, repeating the same grant changes nothing.\n";

static const char usage_audit[] =
    "usage: lensroom audit\n"
    "Checks, on the configured database: every balance equals the sum of its\n"
    "ledger rows; no balance is negative; every generation has exactly one charge;\n"
    "every failed or canceled one exactly one refund (and none has two); credits_used\n"
    "equals charges minus refunds. Prints each violation; exits 1 if there is any.\n";

static const char usage_smoke[] =
    "usage: lensroom smoke\n"
    "Checks the configured backends like the original db:smoke: environment;\n"
    "database reachable with its tables and functions; credits grant/balance on\n"
    "a throwaway user (TEST_USER_ID if set), ledger left balanced; generation\n"
    "create/update/get/list; bucket reachable; upload, download (bytes equal),\n"
    "delete. One line per check, \u2713 or \u2717 with the reason (colour on a terminal\n"
    "unless NO_COLOR is set). Exits 1 if any check fails.\n";

static bool wants_help(int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return true;
    }
    return false;
}

/* Loads config and the data folder. */
static int load_config(lr_config *cfg)
{
    if (lr_config_load(cfg) != 0 || lr_config_prepare_data(cfg) != 0)
        return -1;
    lr_log_set_level((lr_log_level)cfg->log_level);
    return 0;
}

/* Opens and migrates the configured database. */
static int open_db(const lr_config *cfg, lr_db **db, int pool)
{
    char *err = NULL;
    if (lr_db_open(cfg->database_url, pool, db, &err) != LR_OK) {
        fprintf(stderr, "database: %s\n", err ? err : "cannot open");
        free(err);
        return -1;
    }
    if ((*db)->ops->migrate(*db) != LR_OK) {
        fprintf(stderr, "database: migration failed\n");
        lr_db_close(*db);
        *db = NULL;
        return -1;
    }
    return 0;
}

/* The billing tables' own connection and the credit packs, if any. */
static int open_billing(const lr_config *cfg, lr_db *db, lr_billing_db **bdb, lr_packs *packs)
{
    char *err = NULL;
    if (lr_billing_db_open(db, cfg->database_url, bdb, &err) != LR_OK) {
        fprintf(stderr, "database: %s\n", err ? err : "cannot open");
        free(err);
        return -1;
    }
    if (cfg->credit_packs_file && lr_packs_load(cfg->credit_packs_file, packs, &err) != LR_OK) {
        fprintf(stderr, "config: LENSROOM_CREDIT_PACKS: %s\n", err ? err : "cannot load");
        free(err);
        return -1;
    }
    return 0;
}

/* Every pipeline event goes to the metrics, the SSE hub and the webhooks. */
static void observe_all(void *ctx, const char *id, lr_gen_status status, lr_gen_stage stage)
{
    lr_app *app = ctx;
    lr_api_observe(app, id, status, stage); /* metrics, then the SSE hub */
    lr_hooks_observe(app->hooks, id, status, stage);
}

/* The configured object storage: the local folder or an S3 bucket. */
static int open_store(const lr_config *cfg, lr_store **store)
{
    return lr_cli_open_store(cfg, NULL, store);
}

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void announce(const lr_config *cfg, const lr_app *app)
{
    lr_log_fields(LR_LOG_INFO, NULL, "lensroom listening",
                  json_pack("{s:i, s:s, s:s, s:s, s:s, s:s}", "port", cfg->port, "database",
                            app->db->backend, "storage", app->store->backend, "provider",
                            app->provider->name, "data_dir", cfg->data_dir, "public_url",
                            cfg->public_url));
    if (strcmp(app->provider->name, "mock") != 0)
        lr_info("provider: Kie.ai at %s%s; anthropic_text %s", cfg->kie_api_base,
                cfg->webhook_base_url ? " (callbacks on)" : " (polling only)",
                cfg->anthropic_api_key ? "via the Anthropic API" : "not configured");
    if (!strcmp(app->provider->name, "mock"))
        lr_warn("MOCK PROVIDER ACTIVE%s: generations are synthetic (latency %d ms, failure rate "
                "%.2f); set KIE_API_KEY for real generations",
                cfg->mock_by_default ? " (no provider key set)" : " (USE_MOCK_INFERENCE=true)",
                cfg->mock_latency_ms, cfg->mock_fail_rate);
    if (cfg->test_mode)
        lr_warn("TEST_MODE=true: EVERY REQUEST IS USER %s, NO AUTHENTICATION. Never use in "
                "production.",
                cfg->test_user_id);
    if (cfg->allow_anon_infer)
        lr_warn("ALLOW_ANON_INFER=true: anonymous /api/infer requests spend the credits of "
                "user %s. Never use in production.",
                cfg->test_user_id);
    if (cfg->jwks_url)
        lr_info("user tokens: HS256 with the JWT secret, ES256/RS256 with the keys at %s%s%s",
                cfg->jwks_url, cfg->jwt_issuer ? "; iss must be " : "",
                cfg->jwt_issuer ? cfg->jwt_issuer : "");
    if (cfg->jwt_secret_from_file)
        lr_info("JWT secret kept in %s/jwt-secret (set SUPABASE_JWT_SECRET to use your "
                "project's); mint a token with: lensroom token <user-uuid>",
                cfg->data_dir);
}

/* The mock, or the real providers (Kie.ai, Anthropic) behind the router. */
static lr_provider *open_provider(const lr_config *cfg, lr_loop *loop)
{
    if (cfg->use_mock)
        return lr_provider_mock_new(loop, cfg->mock_latency_ms, cfg->mock_fail_rate);
    lr_remote_options ro = {
        .kie_base = cfg->kie_api_base,
        .kie_key = cfg->kie_api_key,
        .anthropic_base = cfg->anthropic_api_base,
        .anthropic_key = cfg->anthropic_api_key,
        .anthropic_model = cfg->anthropic_model,
        .callback_base = cfg->webhook_base_url,
        .callback_key = cfg->jwt_secret,
        .callback_key_len = cfg->jwt_secret_len,
        .poll_ms = cfg->kie_poll_ms,
        .poll_max_ms = cfg->kie_poll_max_ms,
        .deadline_ms = (int64_t)cfg->task_deadline_s * 1000,
        .retry_ms = cfg->retry_ms,
    };
    return lr_provider_remote_new(loop, &ro);
}

/* LENSROOM_METRICS_PORT: /metrics and the probes on a listener of their
 * own (one thread), or NULL when none is configured or it cannot listen
 * (*failed then). */
static lr_http *start_metrics_port(const lr_config *cfg, lr_app *app, bool *failed)
{
    *failed = false;
    if (!cfg->metrics_port)
        return NULL;
    lr_http_opts mo = {.port = cfg->metrics_port,
                       .threads = 1,
                       .max_connections = 64,
                       .max_body = 4096,
                       .max_header_bytes = 16384,
                       .route = lr_api_metrics_route,
                       .app = app};
    lr_http *h = lr_http_start(&mo);
    if (!h) {
        fprintf(stderr, "serve: cannot listen on LENSROOM_METRICS_PORT %d (in use?)\n",
                cfg->metrics_port);
        *failed = true;
    }
    return h;
}

/* Serves HTTP until SIGINT/SIGTERM, then drains: new requests get 503,
 * event streams end, in-flight generations finish (15 s at most). */
static int serve_until_signal(const lr_config *cfg, lr_app *app)
{
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    lr_http_opts ho = {.port = cfg->port,
                       .threads = cfg->http_threads,
                       .max_connections = cfg->max_connections,
                       .max_body = cfg->max_body_bytes,
                       .max_header_bytes = cfg->max_header_bytes,
                       .route = lr_api_route,
                       .app = app,
                       .cors_origins = cfg->cors_origins};
    lr_http *http = lr_http_start(&ho);
    if (!http) {
        fprintf(stderr, "serve: cannot listen on port %d (in use?)\n", cfg->port);
        return -1;
    }
    bool metrics_failed;
    lr_http *metrics = start_metrics_port(cfg, app, &metrics_failed);
    if (metrics_failed) {
        lr_http_quiesce(http);
        lr_http_stop(http);
        return -1;
    }
    announce(cfg, app);
    while (!stop_requested)
        pause();
    lr_info("shutting down: finishing in-flight generations");
    atomic_store(&app->draining, true); /* /readyz on the metrics port says 503 from now */
    lr_http_quiesce(http);
    lr_events_close_all(app->events);
    lr_pipeline_drain(app->pipeline, 15000);
    lr_http_drain(http, 5000);
    lr_http_stop(http);
    lr_http_quiesce(metrics);
    if (metrics) {
        lr_http_drain(metrics, 5000);
        lr_http_stop(metrics);
    }
    return 0;
}

/* glibc hands the free top of a thread's heap back to the kernel (madvise
 * or brk) as soon as it passes 128 KiB: a PNG writer or a SQLite statement
 * that frees a few hundred KiB then does so on every generation, each time
 * a TLB shootdown on every core and fresh page faults on the next one.
 * Keeping up to 1 MiB per heap ends that; setting it also fixes the mmap
 * threshold at its 128 KiB default instead of letting it grow. */
static void tune_malloc(void)
{
    mallopt(M_TRIM_THRESHOLD, 1 << 20);
}

/* The outgoing webhooks and Stripe, on the running loop's parts. */
static void wire_billing(const lr_config *cfg, lr_app *app, lr_billing_db *bdb, lr_packs *packs,
                         lr_billing *billing)
{
    app->billing_db = bdb;
    app->hooks = lr_hooks_new(&(lr_hooks_opts){.db = app->db,
                                               .store = bdb,
                                               .loop = app->loop,
                                               .policy = app->net,
                                               .retry_ms = cfg->webhook_retry_ms,
                                               .max_age_ms = cfg->webhook_max_age_s * 1000LL,
                                               .timeout_ms = cfg->webhook_timeout_ms,
                                               .concurrency = cfg->webhook_concurrency,
                                               .low_balance = cfg->low_balance});
    *billing = (lr_billing){.db = app->db,
                            .store = bdb,
                            .packs = packs,
                            .hooks = app->hooks,
                            .loop = app->loop,
                            .api_base = cfg->stripe_api_base,
                            .secret_key = cfg->stripe_secret_key,
                            .success_url = cfg->checkout_success_url,
                            .cancel_url = cfg->checkout_cancel_url};
    app->billing = billing;
}

/* The preview jobs' threads; their limits are the defaults of
 * media/transform.h, the time limit and queue from the configuration;
 * {data_dir}/tmp holds a preview while it is written. */
static void start_previews(const lr_config *cfg, lr_app *app)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s/tmp", cfg->data_dir);
    mkdir(tmp, 0700);
    lr_temp_sweep(tmp, ".lr-preview-", 0, NULL); /* what a killed job left */
    app->previews = lr_previews_new(app->db, app->store,
                                    &(lr_previews_opts){.threads = cfg->preview_workers,
                                                        .queue_max = cfg->preview_queue,
                                                        .time_limit_s = cfg->preview_timeout_s,
                                                        .tmp_dir = tmp,
                                                        .limits = lr_media_default_limits()});
    lr_pipeline_set_previews(app->pipeline, app->previews);
}

/* Once the loop runs: the JWKS, the event hub and observers, the webhook
 * queue, recovery of what a stopped process left, and maintenance. */
static void start_services(const lr_config *cfg, lr_app *app)
{
    if (cfg->jwks_url) {
        app->jwks = lr_jwks_new(&(lr_jwks_opts){
            .loop = app->loop, .url = cfg->jwks_url, .refetch_s = cfg->jwks_refetch_s});
        lr_jwks_start(app->jwks);
    }
    app->events =
        lr_events_new(app->db, app->pipeline, app->loop, app->workers, cfg->sse_keepalive_s);
    lr_pipeline_observe(app->pipeline, observe_all, app);
    if (app->previews) {
        lr_events_wait_previews(app->events, cfg->preview_timeout_s + 30);
        lr_previews_on_done(app->previews, lr_events_preview, app->events);
        lr_previews_recover(app->previews);
    }
    lr_hooks_start(app->hooks);
    int recovered = lr_pipeline_recover(app->pipeline);
    if (recovered > 0)
        lr_warn("took over %d generations left unfinished by a stopped process (provider tasks "
                "resumed, the rest failed and refunded)",
                recovered);
    lr_pipeline_start_maintenance(app->pipeline);
}

/* The domain on the opened parts: the pipeline with graph runs, the
 * previews and render cache when on, the per-user rate limit. */
static void wire_domain(const lr_config *cfg, lr_app *app)
{
    app->pipeline = lr_pipeline_new(app->db, app->store, app->provider, app->catalog, app->net,
                                    app->loop, app->workers, cfg->lease_s);
    if (app->pipeline) {
        lr_pipeline_set_retry(app->pipeline, cfg->retry_ms);
        lr_graph_runs_attach(app->pipeline);
    }
    if (app->pipeline && cfg->previews)
        start_previews(cfg, app);
    if (app->store->ops->open_local) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/render-cache", cfg->data_dir);
        app->render = lr_render_new(app->store, dir, (uint64_t)cfg->render_cache_mb << 20, 10000);
    }
    app->ratelimit = lr_ratelimit_new(cfg->user_rate_per_min);
}

static int cmd_serve(void)
{
    lr_config cfg;
    lr_db *db = NULL;
    lr_app app = {0};
    lr_net_policy *net = NULL;
    lr_cli_backups *backups = NULL;
    lr_billing_db *bdb = NULL;
    lr_packs packs = {0};
    lr_billing billing = {0};
    lr_admin *admin = NULL;
    lr_catalog *catalog = NULL;
    lr_store *store = NULL;
    char *err = NULL;
    int rc = 1;
    tune_malloc();
    if (load_config(&cfg) != 0 ||
        open_db(&cfg, &db,
                cfg.http_threads + cfg.workers + 1 + (cfg.previews ? cfg.preview_workers : 0)) != 0)
        goto out_cfg;
    if (open_billing(&cfg, db, &bdb, &packs) != 0)
        goto out_db;
    db = lr_db_metered(db);
    if (lr_admin_open(cfg.database_url, &admin, &err) != LR_OK) {
        fprintf(stderr, "database: %s\n", err ? err : "cannot open");
        free(err);
        goto out_db;
    }
    catalog = lr_catalog_load(cfg.models_file, &err);
    if (!catalog) {
        fprintf(stderr, "config: LENSROOM_MODELS: %s\n", err ? err : "cannot load");
        free(err);
        goto out_db;
    }
    if (open_store(&cfg, &store) != 0)
        goto out_catalog;
    app = (lr_app){.cfg = &cfg,
                   .db = db,
                   .store = store,
                   .catalog = catalog,
                   .started_ms = lr_monotonic_ms(),
                   .admin = admin};
    app.loop = lr_loop_new();
    app.workers = lr_workers_new(cfg.workers);
    app.provider = open_provider(&cfg, app.loop);
    net = lr_net_policy_new(cfg.fetch_allow, &err);
    if (!net) {
        fprintf(stderr, "config: LENSROOM_FETCH_ALLOW: %s\n", err ? err : "invalid");
        free(err);
        goto out_all;
    }
    app.net = net;
    wire_billing(&cfg, &app, bdb, &packs, &billing);
    wire_domain(&cfg, &app);
    if (!app.loop || !app.workers || !app.provider || !app.pipeline ||
        lr_loop_start(app.loop) != LR_OK)
        goto out_all;
    lr_store_sweep_start(store); /* before anything is stored: see storage.h */
    start_services(&cfg, &app);
    if (lr_cli_backups_start(&cfg, store, VERSION, &backups) != 0)
        goto out_all;
    app.backup = lr_cli_backups_sched(backups);

    if (serve_until_signal(&cfg, &app) != 0)
        goto out_all;
    rc = 0;
out_all:
    lr_cli_backups_stop(backups);
    lr_loop_stop(app.loop);
    lr_workers_free(app.workers);
    lr_previews_free(app.previews); /* a job cut short stays processing for the next start */
    lr_render_free(app.render);
    lr_hooks_free(app.hooks);
    if (app.pipeline)
        lr_pipeline_release_claims(app.pipeline);
    lr_events_free(app.events);
    lr_pipeline_free(app.pipeline);
    lr_ratelimit_free(app.ratelimit);
    lr_net_policy_free(net);
    lr_jwks_free(app.jwks);
    if (app.provider)
        app.provider->ops->close(app.provider);
    lr_loop_free(app.loop);
    lr_store_close(store);
out_catalog:
    lr_catalog_free(catalog);
out_db:
    lr_admin_close(admin);
    lr_billing_db_close(bdb);
    lr_packs_free(&packs);
    lr_db_close(db);
out_cfg:
    lr_config_free(&cfg);
    return rc;
}

/* `lensroom webhooks ...` on the migrated database. */
static int cmd_webhooks(int argc, char **argv)
{
    lr_config cfg;
    lr_db *db = NULL;
    lr_billing_db *bdb = NULL;
    lr_packs packs = {0};
    int rc = 1;
    if (argc < 2) {
        fputs(lr_cli_webhooks_usage, stderr);
        return 2;
    }
    if (load_config(&cfg) == 0 && open_db(&cfg, &db, 1) == 0 &&
        open_billing(&cfg, db, &bdb, &packs) == 0)
        rc = lr_cli_webhooks(argc, argv, &cfg, bdb);
    lr_billing_db_close(bdb);
    lr_packs_free(&packs);
    lr_db_close(db);
    lr_config_free(&cfg);
    return rc;
}

static int cmd_migrate(void)
{
    lr_config cfg;
    lr_db *db = NULL;
    int rc = load_config(&cfg) == 0 && open_db(&cfg, &db, 1) == 0 ? 0 : 1;
    if (rc == 0)
        printf("database schema is up to date (%s)\n", db->backend);
    lr_db_close(db);
    lr_config_free(&cfg);
    return rc;
}

static int cmd_audit(void)
{
    lr_config cfg;
    lr_db *db = NULL;
    lr_violation_list v = {0};
    int rc = 2;
    if (load_config(&cfg) == 0 && open_db(&cfg, &db, 1) == 0 && db->ops->audit(db, &v) == LR_OK) {
        for (size_t i = 0; i < v.n; i++)
            printf("violation %s %s: %s\n", v.v[i].kind, v.v[i].subject, v.v[i].detail);
        if (v.n == 0)
            printf("ledger sound (%s): balances match their ledgers, none negative, every "
                   "generation charged once and refunded at most once\n",
                   db->backend);
        rc = v.n ? 1 : 0;
    } else {
        fprintf(stderr, "audit: could not run the checks\n");
    }
    lr_violation_list_clear(&v);
    lr_db_close(db);
    lr_config_free(&cfg);
    return rc;
}

static int cmd_smoke(void)
{
    lr_config cfg;
    if (load_config(&cfg) != 0) {
        puts("\u2717 env                    invalid configuration (see the config: lines above)");
        puts("smoke: FAILED");
        lr_config_free(&cfg);
        return 1;
    }
    lr_db *db = NULL;
    char *db_err = NULL;
    if (lr_db_open(cfg.database_url, 1, &db, &db_err) != LR_OK)
        db = NULL;
    lr_store *store = NULL;
    int srv = open_store(&cfg, &store);
    int rc = lr_smoke_run(&cfg, db, db_err, srv == 0 ? store : NULL, "cannot open the storage");
    free(db_err);
    lr_store_close(store);
    lr_db_close(db);
    lr_config_free(&cfg);
    return rc;
}

static int user_arg(const char *s, char out[LR_UUID_LEN + 1])
{
    if (!s || !lr_uuid_valid(s, strlen(s))) {
        fprintf(stderr, "error: USER_ID must be a UUID (got '%s')\n", s ? s : "");
        return -1;
    }
    for (int i = 0; i <= LR_UUID_LEN; i++)
        out[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] - 'A' + 'a') : s[i];
    return 0;
}

static const char *opt_value(int argc, char **argv, const char *name)
{
    for (int i = 0; i + 1 < argc; i++) {
        if (!strcmp(argv[i], name))
            return argv[i + 1];
    }
    return NULL;
}

static int cmd_token(int argc, char **argv)
{
    char user[LR_UUID_LEN + 1];
    if (argc < 2 || user_arg(argv[1], user) != 0) {
        fputs(usage_token, stderr);
        return 2;
    }
    long ttl = 3600;
    const char *t = opt_value(argc, argv, "--ttl");
    if (t && lr_parse_long(t, 1, 10L * 365 * 86400, &ttl) != 0) {
        fprintf(stderr, "error: --ttl must be a positive number of seconds\n");
        return 2;
    }
    lr_config cfg;
    if (load_config(&cfg) != 0) {
        lr_config_free(&cfg);
        return 1;
    }
    char *tok = lr_jwt_sign_user(cfg.jwt_secret, cfg.jwt_secret_len, user, cfg.jwt_issuer,
                                 (int64_t)time(NULL), ttl);
    lr_config_free(&cfg);
    if (!tok)
        return 1;
    puts(tok);
    free(tok);
    return 0;
}

static int cmd_credits(int argc, char **argv)
{
    if (argc < 3) {
        fputs(usage_credits, stderr);
        return 2;
    }
    const char *sub = argv[1];
    char user[LR_UUID_LEN + 1];
    if (user_arg(argv[2], user) != 0)
        return 2;
    long amount = 0, limit = 20;
    if (!strcmp(sub, "take"))
        return lr_cli_credits_take(argc - 1, argv + 1);
    if (!strcmp(sub, "grant")) {
        if (argc < 4 || lr_parse_long(argv[3], -1000000000, 1000000000, &amount) != 0 ||
            amount == 0) {
            fprintf(stderr, "error: AMOUNT must be a non-zero whole number\n");
            return 2;
        }
    } else if (!strcmp(sub, "history")) {
        const char *l = opt_value(argc, argv, "--limit");
        if (l && lr_parse_long(l, 1, 1000, &limit) != 0) {
            fprintf(stderr, "error: --limit must be from 1 to 1000\n");
            return 2;
        }
    } else if (strcmp(sub, "balance") != 0) {
        fputs(usage_credits, stderr);
        return 2;
    }
    lr_config cfg;
    lr_db *db = NULL;
    int rc = 1;
    if (load_config(&cfg) != 0 || open_db(&cfg, &db, 1) != 0)
        goto out;
    if (!strcmp(sub, "grant")) {
        const char *reason = opt_value(argc, argv, "--reason");
        lr_adjust_req r = {.user_id = user,
                           .amount = (int)amount,
                           .type = amount > 0 ? "bonus" : "adjustment",
                           .description = reason ? reason : "Granted with lensroom credits grant",
                           .idempotency_key = opt_value(argc, argv, "--key")};
        lr_adjust_result res;
        lr_err e = db->ops->adjust(db, &r, &res);
        if (e == LR_OK) {
            printf("%s %ld credits to %s: balance %d (transaction %s)\n",
                   res.replayed ? "already granted"
                   : amount > 0 ? "granted"
                                : "removed",
                   amount > 0 ? amount : -amount, user, res.new_balance, res.transaction_id);
            rc = 0;
        } else if (e == LR_ERR_INSUFFICIENT) {
            fprintf(stderr, "error: balance is %d; cannot remove %ld\n", res.new_balance, -amount);
        } else {
            fprintf(stderr, "error: %s\n", lr_strerror(e));
        }
    } else if (!strcmp(sub, "balance")) {
        int b;
        if (db->ops->balance(db, user, &b) == LR_OK) {
            printf("%d\n", b);
            rc = 0;
        }
    } else {
        lr_ledger_list rows;
        if (db->ops->list_transactions(db, user, NULL, NULL, (int)limit, &rows) == LR_OK) {
            printf("%-24s  %8s  %-10s  %s\n", "created_at", "amount", "type", "description");
            for (size_t i = 0; i < rows.n; i++) {
                const lr_ledger_row *t = &rows.v[i];
                printf("%-24s  %8d  %-10s  %s\n", t->created_at, t->amount, t->type,
                       t->description ? t->description : "");
            }
            lr_ledger_list_clear(&rows);
            rc = 0;
        }
    }
out:
    lr_db_close(db);
    lr_config_free(&cfg);
    return rc;
}

int main(int argc, char **argv)
{
    lr_db_library_init();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        fputs(usage_main, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--version")) {
        puts("lensroom " VERSION);
        return 0;
    }
    struct {
        const char *name;
        const char *usage;
    } helps[] = {{"serve", usage_serve},
                 {"migrate", usage_migrate},
                 {"token", usage_token},
                 {"credits", usage_credits},
                 {"audit", usage_audit},
                 {"smoke", usage_smoke},
                 {"backup", lr_cli_backup_usage},
                 {"generations", lr_cli_generations_usage},
                 {"users", lr_cli_users_usage},
                 {"analytics", lr_cli_analytics_usage},
                 {"webhooks", lr_cli_webhooks_usage},
                 {"admin-link", lr_cli_admin_link_usage}};
    for (size_t i = 0; i < sizeof helps / sizeof *helps; i++) {
        if (!strcmp(cmd, helps[i].name) && wants_help(argc - 2, argv + 2)) {
            fputs(helps[i].usage, stdout);
            return 0;
        }
    }
    if (!strcmp(cmd, "serve"))
        return cmd_serve();
    if (!strcmp(cmd, "migrate"))
        return cmd_migrate();
    if (!strcmp(cmd, "token"))
        return cmd_token(argc - 1, argv + 1);
    if (!strcmp(cmd, "credits"))
        return cmd_credits(argc - 1, argv + 1);
    if (!strcmp(cmd, "audit"))
        return cmd_audit();
    if (!strcmp(cmd, "smoke"))
        return cmd_smoke();
    if (!strcmp(cmd, "backup"))
        return lr_cli_backup(argc - 1, argv + 1, VERSION);
    if (!strcmp(cmd, "generations"))
        return lr_cli_generations(argc - 1, argv + 1);
    if (!strcmp(cmd, "users"))
        return lr_cli_users(argc - 1, argv + 1);
    if (!strcmp(cmd, "analytics"))
        return lr_cli_analytics(argc - 1, argv + 1);
    if (!strcmp(cmd, "webhooks"))
        return cmd_webhooks(argc - 1, argv + 1);
    if (!strcmp(cmd, "admin-link"))
        return lr_cli_admin_link(argc - 1, argv + 1);
    fprintf(stderr, "lensroom: unknown command '%s'\n\n%s", cmd, usage_main);
    return 2;
}
