/* Who is calling: a user (from a verified access token) or the service
 * role (SUPABASE_SECRET_KEY or SUPABASE_SERVICE_ROLE_KEY, compared in
 * constant time).
 *
 * lr_auth_user tries the session candidates in the original's order and
 * takes the first that verifies; when none does, *reason says why the
 * first one failed. TEST_MODE makes every request TEST_USER_ID;
 * ALLOW_ANON_INFER does so only for requests without any credential, and
 * only where the caller allows it (POST /api/infer). Thread-safe.
 */
#ifndef LR_AUTH_H
#define LR_AUTH_H

#include <stdbool.h>

#include "auth/jwks.h"
#include "auth/jwt.h"
#include "core/config.h"
#include "core/util.h"

typedef enum { LR_AUTH_OK = 0, LR_AUTH_MISSING, LR_AUTH_INVALID } lr_auth_status;

/* Every user token is verified here, by one verifier: HS256 with the
 * configured secret, ES256/RS256 with the keys in jwks (NULL: none
 * configured), iss checked when SUPABASE_URL is set (cfg->jwt_issuer). */
lr_auth_status lr_auth_user(const lr_config *cfg, lr_jwks *jwks, const char *cookie,
                            const char *authorization, bool anon_allowed,
                            char user[LR_UUID_LEN + 1], const char **reason);
/* As lr_auth_user, with the verified token's claims (email, the admin
 * flag, exp) in *out. */
lr_auth_status lr_auth_claims(const lr_config *cfg, lr_jwks *jwks, const char *cookie,
                              const char *authorization, bool anon_allowed, lr_jwt_claims *out,
                              const char **reason);

/* True when the request carries SUPABASE_SECRET_KEY or
 * SUPABASE_SERVICE_ROLE_KEY: in apikey when that header is present (it
 * wins over Authorization), else as Authorization: Bearer. */
bool lr_auth_service_role(const lr_config *cfg, const char *authorization, const char *apikey);

#endif
