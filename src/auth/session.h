/* Finding the caller's access token in a request, the way the original
 * design and Supabase clients send it. Candidates come out in the
 * original's priority order:
 *   1. cookie lr_session
 *   2. cookies sb-access-token, supabase-auth-token (a bare JWT)
 *   3. cookie sb-<ref>-auth-token (JSON object with access_token, JSON
 *      array whose element 0 is the token, or "base64-" + base64url of
 *      either), possibly split into .0, .1, … chunks joined in order
 *   4. Authorization: Bearer <token>
 * Nothing is verified here; auth.h does that. Inputs are never trusted to
 * be NUL-free or well-formed; every path has a length bound.
 */
#ifndef LR_SESSION_H
#define LR_SESSION_H

#include <stddef.h>

#define LR_SESSION_MAX_CANDIDATES 6

typedef struct {
    char *token;        /* malloc'd */
    const char *source; /* static name of where it came from */
} lr_credential;

/* Fills out[] (up to max) and returns how many; free with
 * lr_session_free. Either header may be NULL. */
int lr_session_candidates(const char *cookie_header, const char *authorization,
                          lr_credential *out, int max);
void lr_session_free(lr_credential *c, int n);

#endif
