/* JSON Web Tokens (JWS compact form) on OpenSSL directly: HS256 with the
 * server's secret, ES256 (P-256) and RS256 with public keys from a JWKS.
 *
 * The algorithm is the server's choice, never the token's alone: HS256 is
 * verified only with the configured secret, ES256/RS256 only with the key
 * the token's `kid` names, and the token header's alg must equal the one
 * algorithm that key is for (its kty/crv/alg, decided when the JWKS was
 * read). So "none", HS/RS confusion (an HMAC keyed with a public key) and
 * an ES256 token naming an RSA key's kid are all rejected before any
 * signature is checked. Any `crit` header parameter is rejected (we
 * understand no extension, RFC 7515 §4.1.11); jku/x5u/jwk headers are
 * ignored, keys never come from the token.
 *
 * Claims: exp is required; exp, nbf and iat are NumericDates from 0 to
 * LR_JWT_MAX_TIME (year 9999), anything else is malformed (so no value can
 * overflow the leeway arithmetic); nbf and iat are honoured with the
 * leeway (iat later than now + leeway is rejected); aud and iss are checked
 * when configured; sub must be a UUID. Pure functions: any thread may call
 * them (the key lookup must be thread-safe too).
 */
#ifndef LR_JWT_H
#define LR_JWT_H

#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/util.h"

#define LR_JWT_MAX_TIME INT64_C(253402300799) /* 9999-12-31T23:59:59Z */

typedef enum {
    LR_JWT_OK = 0,
    LR_JWT_MALFORMED,
    LR_JWT_BAD_ALG,
    LR_JWT_BAD_SIGNATURE,
    LR_JWT_EXPIRED,
    LR_JWT_NOT_YET_VALID,
    LR_JWT_BAD_AUDIENCE,
    LR_JWT_BAD_SUBJECT,
    LR_JWT_UNKNOWN_KEY, /* ES256/RS256 kid not in the JWKS (yet) */
    LR_JWT_BAD_ISSUER,
    LR_JWT_FUTURE_IAT,
    LR_JWT_BAD_CRIT,
} lr_jwt_status;

typedef enum { LR_JWT_HS256 = 0, LR_JWT_ES256, LR_JWT_RS256 } lr_jwt_alg;

/* "HS256", "ES256", "RS256". */
const char *lr_jwt_alg_name(lr_jwt_alg a);

/* A public key and the one algorithm it verifies. Whoever fills one owns
 * a reference to pkey (EVP_PKEY_free it). */
typedef struct {
    EVP_PKEY *pkey;
    lr_jwt_alg alg;
} lr_jwt_key;

/* Finds the public key named kid (NUL-free, NUL-terminated). True with a
 * new reference in *out when found. refetch: the caller will fail without
 * it, so the key set may be refreshed (rate-limited; the answer to this
 * call does not wait for it). Must be thread-safe. */
typedef bool (*lr_jwt_key_lookup)(void *ctx, const char *kid, bool refetch, lr_jwt_key *out);

typedef struct {
    const unsigned char *key; /* HS256 secret; NULL: HS256 refused */
    size_t key_len;
    const char *audience;     /* NULL: not checked */
    int leeway_s;             /* 0..600 */
    const char *issuer;       /* required iss; NULL: not checked */
    lr_jwt_key_lookup lookup; /* NULL: ES256/RS256 refused */
    void *lookup_ctx;
} lr_jwt_verifier;

typedef struct {
    char sub[LR_UUID_LEN + 1];
    char role[32];
    int64_t exp;
    char email[256];     /* "" when absent or longer */
    bool lensroom_admin; /* app_metadata.lensroom_admin is true */
} lr_jwt_claims;

lr_jwt_status lr_jwt_verify(const lr_jwt_verifier *v, const char *token, size_t len, int64_t now_s,
                            lr_jwt_claims *out);

/* A Supabase-shaped HS256 access token for user sub (role and aud
 * "authenticated", iss when issuer is not NULL), valid ttl_s seconds from
 * now_s. malloc'd. */
char *lr_jwt_sign_user(const unsigned char *key, size_t key_len, const char *sub,
                       const char *issuer, int64_t now_s, int64_t ttl_s);
/* The same with app_metadata.lensroom_admin true: the session an admin
 * sign-in link opens. */
char *lr_jwt_sign_admin(const unsigned char *key, size_t key_len, const char *sub,
                        const char *issuer, int64_t now_s, int64_t ttl_s);

/* A short human reason, safe to show to the caller. */
const char *lr_jwt_strerror(lr_jwt_status s);

#endif
