/* The public keys that sign user tokens (ES256 / RS256), read from a JSON
 * Web Key Set URL (Supabase: {SUPABASE_URL}/auth/v1/.well-known/jwks.json)
 * and kept in memory.
 *
 * Fetching happens on the event loop (lr_call on the loop's libcurl
 * multi): once at start, again when the answer's Cache-Control max-age
 * runs out (600 s when absent), and when a token names a kid the set does
 * not hold — at most once per refetch_s, however many requests ask. A
 * request never waits for a fetch: a token whose kid is unknown is refused
 * (401) and the fetch it triggered serves the next request. While the URL
 * fails (network, non-200, too large, not a JWKS) the cached keys keep
 * working, one error line is logged when fetching starts to fail and one
 * info line when it works again; retries back off up to 5 minutes.
 *
 * Each key's algorithm is decided here from the key itself: EC on P-256 is
 * ES256, RSA (at least 2048 bits) is RS256; a key whose "alg" says
 * otherwise, a symmetric ("oct") key, a key with "use" other than "sig" or
 * without a kid is skipped (listed in the "keys loaded" log line).
 *
 * lr_jwks_lookup may be called from any thread; lr_jwks_start and
 * lr_jwks_free from the thread that owns the loop (free after the loop
 * stopped).
 */
#ifndef LR_JWKS_H
#define LR_JWKS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "auth/jwt.h"
#include "core/err.h"
#include "loop/loop.h"

#define LR_JWKS_MAX_BYTES (64 * 1024) /* a JWKS answer larger than this is refused */
#define LR_JWKS_MAX_KEYS 32

typedef struct lr_jwks lr_jwks;

typedef struct {
    lr_loop *loop; /* NULL: no fetching, keys only from lr_jwks_load (tests) */
    const char *url;
    int refetch_s; /* least seconds between two fetches */
} lr_jwks_opts;

lr_jwks *lr_jwks_new(const lr_jwks_opts *o);
/* Queues the first fetch. */
void lr_jwks_start(lr_jwks *k);
void lr_jwks_free(lr_jwks *k);

/* An lr_jwt_key_lookup: ctx is the lr_jwks. */
bool lr_jwks_lookup(void *ctx, const char *kid, bool refetch, lr_jwt_key *out);

/* Replaces the key set with the one in json[0..len) (a JWKS object with a
 * "keys" array). LR_ERR_INVALID with *why (static text) when it is not a
 * JWKS; the old set is kept then. *loaded / *skipped may be NULL. */
lr_err lr_jwks_load(lr_jwks *k, const char *json, size_t len, const char **why, size_t *loaded,
                    size_t *skipped);

/* Builds the key one JWK describes (borrowed). LR_ERR_UNSUPPORTED or
 * LR_ERR_INVALID with *why (static text) when it cannot be used. */
lr_err lr_jwks_key_from_json(json_t *jwk, lr_jwt_key *out, const char **why);

#endif
