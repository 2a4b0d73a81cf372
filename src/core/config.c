/* Environment parsing and validation. Every problem is reported, not just
 * the first, so an operator fixes a broken deployment in one pass. */
#include "core/config.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"

static int problems;

static void problem(const char *name, const char *what)
{
    fprintf(stderr, "config: %s: %s\n", name, what);
    problems++;
}

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return (v && *v) ? v : NULL;
}

static char *env_dup(const char *name, const char *fallback)
{
    const char *v = env(name);
    if (!v)
        v = fallback;
    return v ? lr_xstrdup(v) : NULL;
}

static bool env_bool(const char *name, bool fallback)
{
    const char *v = env(name);
    if (!v)
        return fallback;
    if (!strcasecmp(v, "true") || !strcmp(v, "1") || !strcasecmp(v, "yes") || !strcasecmp(v, "on"))
        return true;
    if (!strcasecmp(v, "false") || !strcmp(v, "0") || !strcasecmp(v, "no") || !strcasecmp(v, "off"))
        return false;
    problem(name, "must be true or false");
    return fallback;
}

static long env_long(const char *name, long fallback, long min, long max)
{
    const char *v = env(name);
    if (!v)
        return fallback;
    long out;
    if (lr_parse_long(v, min, max, &out) != 0) {
        char msg[128];
        snprintf(msg, sizeof msg, "must be a whole number from %ld to %ld", min, max);
        problem(name, msg);
        return fallback;
    }
    return out;
}

/* The role claim of a legacy API key (an HS256 JWT), malloc'd; NULL when
 * key is not a JWT. Only configured keys are read this way: the sb_ keys
 * are opaque and never parsed. */
static char *legacy_key_role(const char *key)
{
    const char *p1 = strchr(key, '.'), *p2 = p1 ? strchr(p1 + 1, '.') : NULL;
    if (strncmp(key, "eyJ", 3) != 0 || !p2 || strchr(p2 + 1, '.'))
        return NULL;
    size_t n;
    char *payload = (char *)lr_b64_decode(p1 + 1, (size_t)(p2 - p1 - 1), &n);
    json_t *j = payload ? json_loadb(payload, n, 0, NULL) : NULL;
    json_t *role = json_object_get(j, "role");
    char *out = json_is_string(role) ? lr_xstrdup(json_string_value(role))
                : json_is_object(j)  ? lr_xstrdup("")
                                     : NULL;
    json_decref(j);
    free(payload);
    return out;
}

/* Refuses the keys people paste by mistake: the publishable (or anon) key
 * where the secret one belongs, a legacy JWT in SUPABASE_SECRET_KEY, and
 * anything with spaces or control characters (it goes into HTTP headers). */
static void check_server_key(const char *name, const char *key, bool sb_secret_only)
{
    for (const char *p = key; *p; p++) {
        if (*p <= ' ' || *p == 0x7f) {
            problem(name, "contains a space or control character (copied with a line break?)");
            return;
        }
    }
    char *role = NULL;
    if (!strncmp(key, "sb_publishable_", 15))
        problem(name, "is a publishable key (sb_publishable_…), which is public; the server "
                      "needs the secret key (sb_secret_…, Project Settings → API Keys)");
    else if (!strncmp(key, "sb_", 3) && strncmp(key, "sb_secret_", 10) != 0)
        problem(name, "is an sb_ key of an unknown kind; expected sb_secret_…");
    else if (sb_secret_only && strncmp(key, "sb_secret_", 10) != 0)
        problem(name, (role = legacy_key_role(key))
                          ? "holds a legacy JWT key: put it in SUPABASE_SERVICE_ROLE_KEY, or use "
                            "an sb_secret_… key here"
                          : "must be a secret key, sb_secret_… (Project Settings → API Keys)");
    else if ((role = legacy_key_role(key)) && strcmp(role, "service_role") != 0)
        problem(name, !strcmp(role, "anon")
                          ? "is the anon key (a JWT with role anon), which is public; use the "
                            "service_role key or an sb_secret_… key"
                          : "is a JWT without role service_role; use the service_role key or an "
                            "sb_secret_… key");
    else if (strlen(key) < 20)
        problem(name, "too short to be a secret (at least 20 characters)");
    free(role);
}

/* http(s)://host… with no user:password@ (the URL is logged). */
static bool plain_http_url(const char *url)
{
    const char *host = strstr(url, "://");
    if ((strncmp(url, "http://", 7) && strncmp(url, "https://", 8)) || !host[3])
        return false;
    size_t authority = strcspn(host + 3, "/?#");
    return !memchr(host + 3, '@', authority);
}

/* The project's issuer and JWKS URL follow SUPABASE_URL (trailing slashes
 * dropped); SUPABASE_JWKS_URL names another JWKS, or "off" for none. */
static void load_jwks(lr_config *cfg)
{
    char *base = cfg->supabase_url ? lr_xstrdup(cfg->supabase_url) : NULL;
    size_t n = base ? strlen(base) : 0;
    while (n > 0 && base[n - 1] == '/')
        base[--n] = '\0';
    if (base && !plain_http_url(base)) {
        if (strcmp(cfg->storage, "supabase") != 0) /* that check reports it already */
            problem("SUPABASE_URL", "must be the project's http(s):// URL, e.g. "
                                    "https://<ref>.supabase.co");
    } else if (base && asprintf(&cfg->jwt_issuer, "%s/auth/v1", base) < 0)
        cfg->jwt_issuer = NULL;
    const char *url = env("SUPABASE_JWKS_URL");
    if (url && (!strcasecmp(url, "off") || !strcasecmp(url, "none"))) {
        /* HS256 only */
    } else if (url) {
        if (!plain_http_url(url))
            problem("SUPABASE_JWKS_URL", "must be an http(s):// URL without credentials (or off)");
        cfg->jwks_url = lr_xstrdup(url);
    } else if (cfg->jwt_issuer &&
               asprintf(&cfg->jwks_url, "%s/.well-known/jwks.json", cfg->jwt_issuer) < 0) {
        cfg->jwks_url = NULL;
    }
    free(base);
    cfg->jwks_refetch_s = (int)env_long("LENSROOM_JWKS_REFETCH_S", 5, 1, 3600);
}

/* A duration in seconds: a number, optionally with s, m, h or d. */
static int env_duration(const char *name)
{
    const char *v = env(name);
    if (!v)
        return 0;
    size_t n = strlen(v);
    long unit = 1;
    char num[32];
    if (n > 0 && strchr("smhd", v[n - 1])) {
        unit = v[n - 1] == 's' ? 1 : v[n - 1] == 'm' ? 60 : v[n - 1] == 'h' ? 3600 : 86400;
        n--;
    }
    long out;
    if (n == 0 || n >= sizeof num) {
        problem(name, "must be a number of seconds, or a number with s, m, h or d (e.g. 6h)");
        return 0;
    }
    memcpy(num, v, n);
    num[n] = '\0';
    if (lr_parse_long(num, 0, 366L * 86400 / unit, &out) != 0) {
        problem(name, "must be a number of seconds, or a number with s, m, h or d (e.g. 6h)");
        return 0;
    }
    return (int)(out * unit);
}

static void load_backup(lr_config *cfg)
{
    cfg->backup_interval_s = env_duration("LENSROOM_BACKUP_INTERVAL");
    cfg->backup_dir = env_dup("LENSROOM_BACKUP_DIR", NULL);
    if (!cfg->backup_dir && asprintf(&cfg->backup_dir, "%s/backups", cfg->data_dir) < 0)
        cfg->backup_dir = NULL;
    cfg->backup_s3 = env_dup("LENSROOM_BACKUP_S3", NULL);
    if (cfg->backup_s3 && (strncmp(cfg->backup_s3, "s3://", 5) != 0 || !cfg->backup_s3[5] ||
                           cfg->backup_s3[5] == '/'))
        problem("LENSROOM_BACKUP_S3", "must be s3://bucket or s3://bucket/prefix");
    if (cfg->backup_s3 && (!cfg->s3_endpoint || !cfg->s3_access_key || !cfg->s3_secret_key))
        problem("LENSROOM_BACKUP_S3", "needs S3_ENDPOINT, S3_ACCESS_KEY_ID and "
                                      "S3_SECRET_ACCESS_KEY");
    cfg->backup_keep = env_dup("LENSROOM_BACKUP_KEEP", "7d,4w");
    cfg->backup_with_objects = env_bool("LENSROOM_BACKUP_WITH_OBJECTS", false);
    cfg->pg_bindir = env_dup("LENSROOM_PG_BINDIR", NULL);
}

/* Where outputs go: the bucket, and the local folder, S3 or Supabase Storage. */
static void load_storage(lr_config *cfg)
{
    cfg->bucket = env_dup("BUCKET_NAME", "generations");
    for (const char *p = cfg->bucket; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' ||
              *p == '.')) {
            problem("BUCKET_NAME", "only a-z, 0-9, '-', '_' and '.' are allowed");
            break;
        }
    }

    /* Storage: S3 when an endpoint is configured, else the local folder. */
    cfg->s3_endpoint = env_dup("S3_ENDPOINT", NULL);
    cfg->supabase_url = env_dup("SUPABASE_URL", env("NEXT_PUBLIC_SUPABASE_URL"));
    cfg->storage = env_dup("LENSROOM_STORAGE", cfg->s3_endpoint ? "s3" : "local");
    cfg->s3_region = env_dup("S3_REGION", "us-east-1");
    cfg->s3_access_key = env_dup("S3_ACCESS_KEY_ID", NULL);
    cfg->s3_secret_key = env_dup("S3_SECRET_ACCESS_KEY", NULL);
    cfg->s3_public_url = env_dup("S3_PUBLIC_URL", NULL);
    cfg->s3_path_style = env_bool("S3_FORCE_PATH_STYLE", true);
    /* S3 refuses multipart parts under 5 MiB (EntityTooSmall) at the end of
     * the upload; s3rver and MinIO do not, so refuse it here, at start. */
    cfg->s3_part_size = env_long("S3_PART_SIZE", 16L << 20, 1, 1L << 30);
    if (cfg->s3_part_size < 5L << 20)
        problem("S3_PART_SIZE", "must be at least 5242880 (5 MiB): S3 refuses smaller "
                                "multipart parts with EntityTooSmall");
    const char *s3_bucket = env("S3_BUCKET");
    if (s3_bucket) {
        free(cfg->bucket);
        cfg->bucket = lr_xstrdup(s3_bucket);
    }
    if (!strcmp(cfg->storage, "s3")) {
        if (!cfg->s3_endpoint ||
            (strncmp(cfg->s3_endpoint, "http://", 7) && strncmp(cfg->s3_endpoint, "https://", 8)))
            problem("S3_ENDPOINT", "required for S3 storage, as http(s)://host[:port]");
        if (!cfg->s3_access_key)
            problem("S3_ACCESS_KEY_ID", "required for S3 storage");
        if (!cfg->s3_secret_key)
            problem("S3_SECRET_ACCESS_KEY", "required for S3 storage");
    } else if (!strcmp(cfg->storage, "supabase")) {
        if (!cfg->supabase_url ||
            (strncmp(cfg->supabase_url, "http://", 7) && strncmp(cfg->supabase_url, "https://", 8)))
            problem("SUPABASE_URL", "required for Supabase storage, as https://<ref>.supabase.co");
        if (!env("SUPABASE_SECRET_KEY") && !env("SUPABASE_SERVICE_ROLE_KEY"))
            problem("SUPABASE_SECRET_KEY", "required for Supabase storage (or the legacy "
                                           "SUPABASE_SERVICE_ROLE_KEY)");
    } else if (strcmp(cfg->storage, "local") != 0) {
        problem("LENSROOM_STORAGE", "must be local, s3 or supabase");
    }
}

/* DATABASE_URL: PostgreSQL, or a SQLite file (unset: the data dir's, set later). */
static void load_database(lr_config *cfg)
{
    const char *db = env("DATABASE_URL");
    if (db) {
        if (!strncmp(db, "postgres://", 11) || !strncmp(db, "postgresql://", 13))
            cfg->database_url = lr_xstrdup(db);
        else if (!strncmp(db, "sqlite:", 7))
            cfg->database_url = lr_xstrdup(db + 7);
        else
            problem("DATABASE_URL", "expected postgres://…, postgresql://… or sqlite:PATH (or "
                                    "nothing for the embedded default)");
    }
}

/* Who may call: the JWT secret and audience, the JWKS, the server's API keys. */
static void load_auth(lr_config *cfg)
{
    const char *secret = env("SUPABASE_JWT_SECRET");
    if (!secret)
        secret = env("LENSROOM_JWT_SECRET");
    if (secret) {
        if (strlen(secret) < 32)
            problem("SUPABASE_JWT_SECRET", "must be at least 32 characters");
        cfg->jwt_secret = (unsigned char *)lr_xstrdup(secret);
        cfg->jwt_secret_len = strlen(secret);
    }
    /* The audience check is on by default with Supabase's value; setting the
     * variable to "none" turns it off for foreign token issuers. */
    const char *aud = getenv("LENSROOM_JWT_AUDIENCE");
    if (!aud)
        cfg->jwt_audience = lr_xstrdup("authenticated");
    else if (*aud && strcmp(aud, "none") != 0)
        cfg->jwt_audience = lr_xstrdup(aud);
    cfg->jwt_leeway_s = (int)env_long("LENSROOM_JWT_LEEWAY_S", 30, 0, 600);
    load_jwks(cfg);

    cfg->secret_key = env_dup("SUPABASE_SECRET_KEY", NULL);
    cfg->service_role_key = env_dup("SUPABASE_SERVICE_ROLE_KEY", NULL);
    if (cfg->secret_key)
        check_server_key("SUPABASE_SECRET_KEY", cfg->secret_key, true);
    if (cfg->service_role_key)
        check_server_key("SUPABASE_SERVICE_ROLE_KEY", cfg->service_role_key, false);
    cfg->service_key = cfg->secret_key ? cfg->secret_key : cfg->service_role_key;
}

/* The providers: the mock, or Kie.ai and Anthropic with their knobs. */
static void load_providers(lr_config *cfg)
{
    cfg->kie_api_key = env_dup("KIE_API_KEY", NULL);
    const char *mock = env("USE_MOCK_INFERENCE");
    cfg->use_mock = env_bool("USE_MOCK_INFERENCE", true);
    if (!mock && cfg->kie_api_key)
        cfg->use_mock = false;
    cfg->mock_by_default = !mock && !cfg->kie_api_key;
    if (!cfg->use_mock && !cfg->kie_api_key)
        problem("USE_MOCK_INFERENCE", "is false but KIE_API_KEY is not set: the real provider "
                                      "needs a key");
    cfg->kie_api_base = env_dup("KIE_API_BASE", "https://api.kie.ai");
    cfg->anthropic_api_key = env_dup("ANTHROPIC_API_KEY", NULL);
    cfg->anthropic_api_base = env_dup("ANTHROPIC_API_BASE", "https://api.anthropic.com");
    cfg->anthropic_model = env_dup("ANTHROPIC_MODEL", "claude-sonnet-4-5");
    const char *bases[] = {"KIE_API_BASE", "ANTHROPIC_API_BASE"};
    const char *vals[] = {cfg->kie_api_base, cfg->anthropic_api_base};
    for (int i = 0; i < 2; i++) {
        if (strncmp(vals[i], "http://", 7) && strncmp(vals[i], "https://", 8))
            problem(bases[i], "must be an http(s):// URL");
    }
    cfg->webhook_base_url = env_dup("LENSROOM_WEBHOOK_BASE_URL", NULL);
    if (cfg->webhook_base_url && strncmp(cfg->webhook_base_url, "https://", 8) &&
        strncmp(cfg->webhook_base_url, "http://", 7))
        problem("LENSROOM_WEBHOOK_BASE_URL", "must be the server's public http(s):// URL");
    cfg->fetch_allow = env_dup("LENSROOM_FETCH_ALLOW", NULL);
    cfg->kie_poll_ms = (int)env_long("KIE_POLL_MS", 3000, 10, 600000);
    cfg->kie_poll_max_ms = (int)env_long("KIE_POLL_MAX_MS", 15000, 10, 600000);
    cfg->task_deadline_s = (int)env_long("LENSROOM_TASK_DEADLINE_S", 86400, 1, 7 * 86400);
    cfg->retry_ms = (int)env_long("LENSROOM_RETRY_MS", 1000, 10, 60000);
}

/* LENSROOM_CORS_ORIGINS: exact browser origins. */
static void load_cors(lr_config *cfg)
{
    cfg->cors_origins = env_dup("LENSROOM_CORS_ORIGINS", NULL);
    if (cfg->cors_origins) {
        char *copy = lr_xstrdup(cfg->cors_origins), *save = NULL;
        for (char *o = strtok_r(copy, ", ", &save); o; o = strtok_r(NULL, ", ", &save)) {
            const char *host = strstr(o, "://");
            if ((strncmp(o, "https://", 8) && strncmp(o, "http://", 7)) || !host[3] ||
                strchr(host + 3, '/'))
                problem("LENSROOM_CORS_ORIGINS",
                        "each entry must be an exact origin like https://app.example.com "
                        "(scheme://host[:port], no path, no *)");
        }
        free(copy);
    }
}

/* The mock's behaviour, the model catalog, and the test-only identities. */
static void load_mock_and_tests(lr_config *cfg)
{
    cfg->mock_latency_ms = (int)env_long("LENSROOM_MOCK_LATENCY_MS", 100, 0, 3600 * 1000);
    const char *rate = env("LENSROOM_MOCK_FAIL_RATE");
    if (rate) {
        char *end;
        errno = 0;
        double r = strtod(rate, &end);
        if (errno || *end || !(r >= 0.0 && r <= 1.0))
            problem("LENSROOM_MOCK_FAIL_RATE", "must be a number from 0 to 1");
        else
            cfg->mock_fail_rate = r;
    }
    cfg->models_file = env_dup("LENSROOM_MODELS", NULL);
    if (cfg->models_file && access(cfg->models_file, R_OK) != 0)
        problem("LENSROOM_MODELS", "file cannot be read");

    cfg->test_mode = env_bool("TEST_MODE", false);
    cfg->allow_anon_infer = env_bool("ALLOW_ANON_INFER", false);
    cfg->test_user_id = env_dup("TEST_USER_ID", NULL);
    if ((cfg->test_mode || cfg->allow_anon_infer) && !cfg->test_user_id)
        problem("TEST_USER_ID", "required when TEST_MODE or ALLOW_ANON_INFER is true");
    if (cfg->test_user_id && !lr_uuid_valid(cfg->test_user_id, strlen(cfg->test_user_id)))
        problem("TEST_USER_ID", "must be a UUID");
}

/* Leases, per-user limits, waits, threads and request sizes. */
static void load_limits(lr_config *cfg)
{
    cfg->lease_s = (int)env_long("LENSROOM_LEASE_S", 30, 2, 3600);
    cfg->user_rate_per_min = (int)env_long("LENSROOM_USER_RATE_PER_MIN", 300, 0, 1000000);
    cfg->user_max_in_flight = (int)env_long("LENSROOM_USER_MAX_IN_FLIGHT", 32, 0, 1000000);
    cfg->wait_default_s = (int)env_long("LENSROOM_WAIT_DEFAULT_S", 60, 0, 3600);
    cfg->wait_max_s = (int)env_long("LENSROOM_WAIT_MAX_S", 300, 1, 3600);
    if (cfg->wait_default_s > cfg->wait_max_s)
        problem("LENSROOM_WAIT_DEFAULT_S", "must not exceed LENSROOM_WAIT_MAX_S");
    cfg->http_threads = (int)env_long("LENSROOM_HTTP_THREADS", 2, 1, 64);
    /* More than the 2 cores: a worker storing into the local folder waits
     * for the disk (fdatasync) as long as it renders, and flushes from
     * several threads overlap. */
    cfg->workers = (int)env_long("LENSROOM_WORKERS", 8, 1, 64);
    cfg->max_connections = (int)env_long("LENSROOM_MAX_CONNECTIONS", 10000, 16, 100000);
    cfg->previews = env_bool("LENSROOM_PREVIEWS", true);
    cfg->preview_workers = (int)env_long("LENSROOM_PREVIEW_WORKERS", 1, 1, 16);
    cfg->preview_queue = (int)env_long("LENSROOM_PREVIEW_QUEUE", 256, 1, 100000);
    cfg->preview_timeout_s = (int)env_long("LENSROOM_PREVIEW_TIMEOUT_S", 60, 1, 3600);
    cfg->render_max_side = (int)env_long("LENSROOM_RENDER_MAX_SIDE", 2500, 16, 8192);
    cfg->render_cache_mb = (int)env_long("LENSROOM_RENDER_CACHE_MB", 256, 1, 1 << 20);
    cfg->max_body_bytes = (size_t)env_long("LENSROOM_MAX_BODY_BYTES", 16L << 20, 1024, 64L << 20);
    cfg->max_header_bytes =
        (size_t)env_long("LENSROOM_MAX_HEADER_BYTES", 64L << 10, 8L << 10, 128L << 10);
}

/* LENSROOM_PUBLIC_URL: the base of public file URLs (default from PORT). */
static void load_public_url(lr_config *cfg)
{
    const char *pub = env("LENSROOM_PUBLIC_URL");
    if (pub) {
        if (strncmp(pub, "http://", 7) && strncmp(pub, "https://", 8))
            problem("LENSROOM_PUBLIC_URL", "must start with http:// or https://");
        cfg->public_url = lr_xstrdup(pub);
        size_t n = strlen(cfg->public_url);
        while (n > 0 && cfg->public_url[n - 1] == '/')
            cfg->public_url[--n] = '\0';
    } else {
        char buf[64];
        snprintf(buf, sizeof buf, "http://localhost:%d", cfg->port);
        cfg->public_url = lr_xstrdup(buf);
    }
}

/* Who may read /metrics, and who is an admin. */
static void load_admin(lr_config *cfg)
{
    cfg->metrics_token = env_dup("LENSROOM_METRICS_TOKEN", NULL);
    if (cfg->metrics_token && strlen(cfg->metrics_token) < 16)
        problem("LENSROOM_METRICS_TOKEN", "must be at least 16 characters");
    cfg->metrics_port = (int)env_long("LENSROOM_METRICS_PORT", 0, 1, 65535);
    if (cfg->metrics_port && cfg->metrics_port == cfg->port)
        problem("LENSROOM_METRICS_PORT", "must differ from PORT");
    const char *admins = env("LENSROOM_ADMINS");
    if (!admins)
        return;
    cfg->admins = lr_xstrdup(admins);
    for (char *p = cfg->admins; *p; p++)
        *p = (*p >= 'A' && *p <= 'Z') ? (char)(*p - 'A' + 'a') : *p;
    for (const char *p = cfg->admins; *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t n = strcspn(p, ", ");
        if (n && !lr_uuid_valid(p, n)) {
            problem("LENSROOM_ADMINS", "must be user ids (UUIDs) separated by commas");
            break;
        }
        p += n;
    }
}

/* Credit packs sold through Stripe, and the outgoing webhooks. */
static void load_billing(lr_config *cfg)
{
    cfg->credit_packs_file = env_dup("LENSROOM_CREDIT_PACKS", NULL);
    cfg->stripe_secret_key = env_dup("STRIPE_SECRET_KEY", NULL);
    cfg->stripe_webhook_secret = env_dup("STRIPE_WEBHOOK_SECRET", NULL);
    cfg->stripe_api_base = env_dup("STRIPE_API_BASE", "https://api.stripe.com");
    if (!plain_http_url(cfg->stripe_api_base))
        problem("STRIPE_API_BASE", "must be an http(s):// URL without credentials");
    size_t n = strlen(cfg->stripe_api_base);
    while (n > 0 && cfg->stripe_api_base[n - 1] == '/')
        cfg->stripe_api_base[--n] = '\0';
    if (cfg->stripe_webhook_secret && strncmp(cfg->stripe_webhook_secret, "whsec_", 6) != 0)
        problem("STRIPE_WEBHOOK_SECRET", "must be the endpoint's signing secret (whsec_...)");
    cfg->stripe_tolerance_s = (int)env_long("STRIPE_WEBHOOK_TOLERANCE_S", 300, 1, 86400);
    cfg->checkout_success_url = env_dup("LENSROOM_CHECKOUT_SUCCESS_URL", NULL);
    if (!cfg->checkout_success_url &&
        asprintf(&cfg->checkout_success_url, "%s/?checkout=success", cfg->public_url) < 0)
        cfg->checkout_success_url = NULL;
    cfg->checkout_cancel_url = env_dup("LENSROOM_CHECKOUT_CANCEL_URL", NULL);
    if (!cfg->checkout_cancel_url &&
        asprintf(&cfg->checkout_cancel_url, "%s/?checkout=cancel", cfg->public_url) < 0)
        cfg->checkout_cancel_url = NULL;
    cfg->low_balance = (int)env_long("LENSROOM_LOW_BALANCE", 0, 0, 1000000000);
    cfg->webhook_retry_ms = (int)env_long("LENSROOM_WEBHOOK_RETRY_MS", 5000, 10, 3600000);
    cfg->webhook_max_age_s =
        env("LENSROOM_WEBHOOK_MAX_AGE") ? env_duration("LENSROOM_WEBHOOK_MAX_AGE") : 86400;
    cfg->webhook_timeout_ms = (int)env_long("LENSROOM_WEBHOOK_TIMEOUT_MS", 10000, 100, 120000);
    cfg->webhook_concurrency = (int)env_long("LENSROOM_WEBHOOK_CONCURRENCY", 32, 1, 1024);
    cfg->webhook_rotate_grace_s = env("LENSROOM_WEBHOOK_ROTATE_GRACE")
                                      ? env_duration("LENSROOM_WEBHOOK_ROTATE_GRACE")
                                      : 86400;
}

lr_err lr_config_load(lr_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    problems = 0;

    cfg->port = (int)env_long("PORT", 3001, 1, 65535);
    cfg->data_dir = env_dup("LENSROOM_DATA_DIR", "./lensroom-data");
    load_storage(cfg);
    load_database(cfg);
    load_auth(cfg);
    load_providers(cfg);
    cfg->sse_keepalive_s = (int)env_long("LENSROOM_SSE_KEEPALIVE_S", 15, 1, 3600);
    load_cors(cfg);
    load_mock_and_tests(cfg);
    load_limits(cfg);
    lr_log_level lvl = LR_LOG_INFO;
    const char *ls = env("LENSROOM_LOG_LEVEL");
    if (ls && lr_log_level_parse(ls, &lvl) != 0)
        problem("LENSROOM_LOG_LEVEL", "must be debug, info, warn or error");
    cfg->log_level = (int)lvl;

    load_backup(cfg);
    load_public_url(cfg);
    load_admin(cfg);
    load_billing(cfg);
    return problems ? LR_ERR_INVALID : LR_OK;
}

/* Reads the generated secret, or creates it with O_EXCL so two processes
 * starting at once agree on one secret. */
static lr_err load_or_create_secret(lr_config *cfg)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/jwt-secret", cfg->data_dir);
    for (int attempt = 0; attempt < 2; attempt++) {
        size_t n;
        char *s = lr_read_file(path, &n);
        if (s) {
            while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
                s[--n] = '\0';
            if (n < 32) {
                fprintf(stderr, "config: %s: secret file is too short; delete it to regenerate\n",
                        path);
                free(s);
                return LR_ERR_IO;
            }
            cfg->jwt_secret = (unsigned char *)s;
            cfg->jwt_secret_len = n;
            cfg->jwt_secret_from_file = true;
            return LR_OK;
        }
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
        if (fd < 0) {
            if (errno == EEXIST)
                continue;
            fprintf(stderr, "config: %s: cannot create the JWT secret file: %s\n", path,
                    strerror(errno));
            return LR_ERR_IO;
        }
        unsigned char raw[32];
        char hex[65];
        lr_random_bytes(raw, sizeof raw);
        lr_hex(raw, sizeof raw, hex);
        hex[64] = '\n';
        ssize_t w = write(fd, hex, 65);
        int rc = fsync(fd) == 0 ? lr_fsync_parent(path) : -1; /* its content and its name */
        close(fd);
        if (w != 65 || rc != 0) {
            unlink(path);
            fprintf(stderr, "config: %s: cannot write the JWT secret file\n", path);
            return LR_ERR_IO;
        }
    }
    return LR_ERR_IO;
}

lr_err lr_config_prepare_data(lr_config *cfg)
{
    if (lr_mkdir_p(cfg->data_dir, 0700) != 0) {
        fprintf(stderr, "config: LENSROOM_DATA_DIR: cannot create %s: %s\n", cfg->data_dir,
                strerror(errno));
        return LR_ERR_IO;
    }
    if (!cfg->database_url && asprintf(&cfg->database_url, "%s/lensroom.db", cfg->data_dir) < 0)
        abort(); /* out of memory, as lr_xmalloc */
    if (!cfg->jwt_secret)
        return load_or_create_secret(cfg);
    return LR_OK;
}

void lr_config_free(lr_config *cfg)
{
    free(cfg->data_dir);
    free(cfg->database_url);
    free(cfg->public_url);
    free(cfg->bucket);
    free(cfg->storage);
    free(cfg->supabase_url);
    free(cfg->s3_endpoint);
    free(cfg->s3_region);
    free(cfg->s3_access_key);
    if (cfg->s3_secret_key)
        OPENSSL_cleanse(cfg->s3_secret_key, strlen(cfg->s3_secret_key));
    free(cfg->s3_secret_key);
    free(cfg->s3_public_url);
    if (cfg->jwt_secret)
        OPENSSL_cleanse(cfg->jwt_secret, cfg->jwt_secret_len);
    free(cfg->jwt_secret);
    free(cfg->jwt_audience);
    if (cfg->secret_key)
        OPENSSL_cleanse(cfg->secret_key, strlen(cfg->secret_key));
    free(cfg->secret_key);
    if (cfg->service_role_key)
        OPENSSL_cleanse(cfg->service_role_key, strlen(cfg->service_role_key));
    free(cfg->jwks_url);
    free(cfg->jwt_issuer);
    free(cfg->service_role_key);
    free(cfg->kie_api_key);
    free(cfg->kie_api_base);
    free(cfg->anthropic_api_key);
    free(cfg->anthropic_api_base);
    free(cfg->anthropic_model);
    free(cfg->webhook_base_url);
    free(cfg->fetch_allow);
    free(cfg->cors_origins);
    free(cfg->models_file);
    free(cfg->test_user_id);
    free(cfg->backup_dir);
    free(cfg->backup_s3);
    free(cfg->backup_keep);
    free(cfg->pg_bindir);
    if (cfg->metrics_token)
        OPENSSL_cleanse(cfg->metrics_token, strlen(cfg->metrics_token));
    free(cfg->metrics_token);
    free(cfg->admins);
    free(cfg->credit_packs_file);
    if (cfg->stripe_secret_key)
        OPENSSL_cleanse(cfg->stripe_secret_key, strlen(cfg->stripe_secret_key));
    free(cfg->stripe_secret_key);
    if (cfg->stripe_webhook_secret)
        OPENSSL_cleanse(cfg->stripe_webhook_secret, strlen(cfg->stripe_webhook_secret));
    free(cfg->stripe_webhook_secret);
    free(cfg->stripe_api_base);
    free(cfg->checkout_success_url);
    free(cfg->checkout_cancel_url);
    memset(cfg, 0, sizeof *cfg);
}
