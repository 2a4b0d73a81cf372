/* Server configuration from the environment.
 *
 * lr_config_load reads every variable once, validates it and reports each
 * problem as one line on stderr ("config: NAME: what is wrong"); it returns
 * non-zero when any was found. The original design's names are accepted
 * (SUPABASE_JWT_SECRET, SUPABASE_SERVICE_ROLE_KEY, USE_MOCK_INFERENCE,
 * BUCKET_NAME, KIE_API_KEY, TEST_MODE, ALLOW_ANON_INFER, TEST_USER_ID, PORT);
 * LENSROOM_* names cover the rest. The struct owns its strings; free with
 * lr_config_free. Read-only after load, so any thread may read it.
 */
#ifndef LR_CONFIG_H
#define LR_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"

typedef struct {
    int port;
    char *data_dir;
    char *database_url; /* postgres URL or SQLite path; prepare_data defaults it */
    char *public_url;   /* base of public file URLs, no trailing slash */
    char *bucket;
    char *storage;      /* "local" | "s3" | "supabase" */
    char *supabase_url; /* SUPABASE_URL or NEXT_PUBLIC_SUPABASE_URL */
    char *s3_endpoint, *s3_region, *s3_access_key, *s3_secret_key, *s3_public_url;
    bool s3_path_style;
    long s3_part_size;

    unsigned char *jwt_secret;
    size_t jwt_secret_len;
    bool jwt_secret_from_file; /* generated and kept in data_dir */
    char *jwt_audience;        /* NULL: aud not checked */
    int jwt_leeway_s;
    /* ES256/RS256 user tokens: keys from a JWKS, issuer of the project. */
    char *jwks_url;     /* SUPABASE_JWKS_URL, else {supabase_url}/auth/v1/.well-known/jwks.json;
                           NULL (also SUPABASE_JWKS_URL=off): HS256 only */
    char *jwt_issuer;   /* {supabase_url}/auth/v1: required iss; NULL without SUPABASE_URL */
    int jwks_refetch_s; /* LENSROOM_JWKS_REFETCH_S: least seconds between two JWKS fetches */
    /* Server-side Supabase API keys, never logged: SUPABASE_SECRET_KEY
     * (sb_secret_…) and SUPABASE_SERVICE_ROLE_KEY (the legacy service_role
     * JWT, an sb_secret_… key, or any admin secret without Supabase). The
     * admin API takes either; Storage calls use service_key, which is the
     * secret key when both are set. */
    char *secret_key;
    char *service_role_key;
    const char *service_key; /* borrowed from one of the two; NULL: neither */

    bool use_mock;
    bool mock_by_default; /* mock chosen because no provider key is set */
    char *kie_api_key;
    char *kie_api_base;      /* KIE_API_BASE, https://api.kie.ai */
    char *anthropic_api_key; /* NULL: anthropic_text not offered by the real provider */
    char *anthropic_api_base;
    char *anthropic_model;
    char *webhook_base_url; /* public URL Kie's callbacks reach, NULL: poll only */
    char *fetch_allow;      /* ip:port list that downloads may reach despite the SSRF rules */
    int kie_poll_ms, kie_poll_max_ms;
    int task_deadline_s;
    int retry_ms;
    /* LENSROOM_RETRY_MS: first delay of provider/download retries */ /* provider task
                                                                         unfinished after this:
                                                                         failed, refunded */
    int sse_keepalive_s;
    char *cors_origins; /* LENSROOM_CORS_ORIGINS: exact origins, comma-separated */
    int mock_latency_ms;
    double mock_fail_rate;
    char *models_file;

    bool test_mode;
    bool allow_anon_infer;
    char *test_user_id;

    int lease_s;            /* claim on a running generation; takeover within it */
    int user_rate_per_min;  /* infer requests per user and minute, 0: no limit */
    int user_max_in_flight; /* generations running per user, 0: no limit */
    int wait_default_s;
    int wait_max_s;
    int http_threads;
    int workers;
    int max_connections;
    /* Derived media (media/jobs.h): posters, previews, thumbnails. */
    bool previews;         /* LENSROOM_PREVIEWS (on): make them after a generation succeeds */
    int preview_workers;   /* LENSROOM_PREVIEW_WORKERS (1): threads, below the workers' priority */
    int preview_queue;     /* LENSROOM_PREVIEW_QUEUE (256): queued jobs; more wait in the table */
    int preview_timeout_s; /* LENSROOM_PREVIEW_TIMEOUT_S (60): one job's time limit */
    int render_max_side;   /* LENSROOM_RENDER_MAX_SIDE (2500): /storage/v1/render width/height */
    int render_cache_mb;   /* LENSROOM_RENDER_CACHE_MB (256): its variants kept on disk */
    size_t max_body_bytes;
    size_t max_header_bytes; /* request line + header fields; libmicrohttpd's pool is ~2x */
    int log_level;

    /* Backups: `lensroom backup`, and scheduled ones inside serve. */
    int backup_interval_s;    /* LENSROOM_BACKUP_INTERVAL (s, or with s/m/h/d); 0: none */
    char *backup_dir;         /* LENSROOM_BACKUP_DIR, default {data_dir}/backups */
    char *backup_s3;          /* LENSROOM_BACKUP_S3: s3://bucket/prefix copy, or NULL */
    char *backup_keep;        /* LENSROOM_BACKUP_KEEP rotation, default 7d,4w */
    bool backup_with_objects; /* LENSROOM_BACKUP_WITH_OBJECTS: copy S3/Supabase objects too */
    char *pg_bindir;          /* LENSROOM_PG_BINDIR: where pg_dump/pg_restore are, or NULL */

    /* Operations: /metrics and the admin dashboard. */
    char *metrics_token; /* LENSROOM_METRICS_TOKEN: Bearer token /metrics requires, or NULL */
    int metrics_port;    /* LENSROOM_METRICS_PORT: /metrics (and /readyz) on a port of their
                            own, not on PORT; 0: none */
    char *admins;        /* LENSROOM_ADMINS: user ids (comma-separated, lowercase) that are
                            admins, besides tokens with app_metadata.lensroom_admin */
    /* Billing (Stripe) and outgoing webhooks. Secrets never logged. */
    char *credit_packs_file;     /* LENSROOM_CREDIT_PACKS: JSON file of packs, NULL: no sales */
    char *stripe_secret_key;     /* STRIPE_SECRET_KEY (sk_... / rk_...) for Checkout Sessions */
    char *stripe_webhook_secret; /* STRIPE_WEBHOOK_SECRET: whsec_..., comma-separated in rotation */
    char *stripe_api_base;       /* STRIPE_API_BASE, https://api.stripe.com */
    int stripe_tolerance_s;      /* STRIPE_WEBHOOK_TOLERANCE_S: oldest signature accepted (300) */
    char *checkout_success_url;  /* LENSROOM_CHECKOUT_SUCCESS_URL, default
                                    {public_url}/?checkout=success */
    char *checkout_cancel_url;   /* LENSROOM_CHECKOUT_CANCEL_URL, default
                                    {public_url}/?checkout=cancel */
    int low_balance;             /* LENSROOM_LOW_BALANCE: credits.low below this; 0: never */
    int webhook_retry_ms;        /* LENSROOM_WEBHOOK_RETRY_MS: first retry delay, doubling */
    int webhook_max_age_s;       /* LENSROOM_WEBHOOK_MAX_AGE: retried this long (24h) */
    int webhook_timeout_ms;      /* LENSROOM_WEBHOOK_TIMEOUT_MS: one attempt's limit */
    int webhook_concurrency;     /* LENSROOM_WEBHOOK_CONCURRENCY: deliveries in flight */
    int webhook_rotate_grace_s;  /* LENSROOM_WEBHOOK_ROTATE_GRACE: a rotated-out secret
                                    keeps signing this long (24h) */
} lr_config;

/* Reads the environment into cfg; LR_OK when valid, else LR_ERR_INVALID
 * after one line per problem. Does not touch the disk. */
lr_err lr_config_load(lr_config *cfg);

/* Makes sure data_dir exists and a JWT secret is available: when none is
 * configured, reads data_dir/jwt-secret or creates it (mode 0600). Also
 * defaults database_url to the SQLite file data_dir/lensroom.db. LR_ERR_IO
 * (said on stderr) when the folder or the secret cannot be made. */
lr_err lr_config_prepare_data(lr_config *cfg);

void lr_config_free(lr_config *cfg);

#endif
