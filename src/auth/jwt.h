/* JSON Web Tokens, HS256, on OpenSSL directly.
 *
 * The algorithm is the server's choice, never the token's: a token whose
 * header says anything but HS256 is rejected before any key is touched
 * (so "none" and HS/RS confusion cannot happen). exp is required; nbf and
 * iat are honoured with a leeway; aud is checked when an audience is given;
 * sub must be a UUID. Pure functions: any thread may call them.
 */
#ifndef LR_JWT_H
#define LR_JWT_H

#include <stddef.h>
#include <stdint.h>

#include "core/util.h"

typedef enum {
    LR_JWT_OK = 0,
    LR_JWT_MALFORMED,
    LR_JWT_BAD_ALG,
    LR_JWT_BAD_SIGNATURE,
    LR_JWT_EXPIRED,
    LR_JWT_NOT_YET_VALID,
    LR_JWT_BAD_AUDIENCE,
    LR_JWT_BAD_SUBJECT,
} lr_jwt_status;

typedef struct {
    char sub[LR_UUID_LEN + 1];
    char role[32];
    int64_t exp;
} lr_jwt_claims;

typedef struct {
    const unsigned char *key;
    size_t key_len;
    const char *audience; /* NULL: not checked */
    int leeway_s;
} lr_jwt_verifier;

lr_jwt_status lr_jwt_verify(const lr_jwt_verifier *v, const char *token, size_t len, int64_t now_s,
                            lr_jwt_claims *out);

/* A Supabase-shaped access token for user sub (role and aud
 * "authenticated"), valid ttl_s seconds from now_s. malloc'd. */
char *lr_jwt_sign_user(const unsigned char *key, size_t key_len, const char *sub, int64_t now_s,
                       int64_t ttl_s);

const char *lr_jwt_strerror(lr_jwt_status s);

#endif
