/* Finding the caller's access token in a request, the way the original
 * design and Supabase clients send it. Candidates come out in this order,
 * and lr_auth_user tries each until one verifies:
 *   1. cookie lr_session (every occurrence, in header order)
 *   2. cookies sb-access-token, then supabase-auth-token (a bare JWT)
 *   3. cookies sb-<ref>-auth-token, one project after the other in the
 *      order each project's first cookie appears in the header; for each,
 *      the unsplit cookie first, then the chunks .0, .1, … joined up to
 *      the first missing index (as @supabase/ssr 0.12 reads them). A value
 *      is percent-decoded, then "base64-" + base64(url) of JSON, JSON (an
 *      object with access_token, or an array whose element 0 is the
 *      token), or a bare JWT; one that does not decode counts as absent.
 *      Every project is offered, so a stale cookie from another project
 *      (or an old session) cannot hide the valid one.
 *   4. Authorization: Bearer <token>, unless the token is an sb_… API key
 *      (supabase-js forwards its publishable or secret key there when no
 *      one is signed in; it is not a user credential).
 * When a cookie name repeats, the first occurrence is used (as the cookie
 * parser of @supabase/ssr does), except for the bare cookies of 1 and 2.
 *
 * There is no fixed number of cookies or candidates: both grow with the
 * header, which is bounded by LR_SESSION_MAX_HEADER (the HTTP server's own
 * header limit is lower), so the work is linear in the header's size.
 * Nothing is verified here; auth.h does that. Inputs are never trusted to
 * be NUL-free or well-formed. Thread-safe.
 */
#ifndef LR_SESSION_H
#define LR_SESSION_H

#include <stddef.h>

/* A Cookie or Authorization header longer than this is ignored. */
#define LR_SESSION_MAX_HEADER ((size_t)1 << 20)

typedef struct {
    char *token;        /* malloc'd, NUL-free */
    const char *source; /* static name of where it came from */
} lr_credential;

/* Stores a malloc'd array of every candidate in *out (NULL when there is
 * none) and returns how many; free with lr_session_free. Either header may
 * be NULL. */
int lr_session_candidates(const char *cookie_header, const char *authorization,
                          lr_credential **out);
/* Frees the tokens and the array. */
void lr_session_free(lr_credential *c, int n);

/* The token of "Authorization: Bearer <token>" (scheme case-insensitive,
 * spaces around the token dropped): a pointer into authorization and its
 * length, or NULL when the header is not a non-empty Bearer. */
const char *lr_session_bearer(const char *authorization, size_t *len);

#endif
