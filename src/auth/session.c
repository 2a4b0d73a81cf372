#include "auth/session.h"

#include <ctype.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/util.h"

typedef struct {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} cookie;

typedef struct {
    cookie *v;
    size_t n, cap;
} cookie_list;

typedef struct {
    lr_credential *v;
    int n, cap;
} cred_list;

/* One cookie of a Supabase session: sb-<ref>-auth-token[.idx]. */
typedef struct {
    const cookie *c;
    size_t base_len; /* length of sb-<ref>-auth-token within c->name */
    long idx;        /* chunk index, -1 for the unsplit cookie */
    size_t pos;      /* position in the header, to keep its order */
} sb_part;

static bool grow(void **v, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return true;
    size_t cap2 = *cap ? *cap * 2 : 16;
    *v = lr_xrealloc(*v, cap2 * size);
    *cap = cap2;
    return true;
}

/* Splits "a=1; b=2" into name/value pairs pointing into h (len bytes, a NUL
 * inside ends it). Quotes around a value are dropped. */
static bool parse_cookies(const char *h, size_t len, cookie_list *out)
{
    const char *p = h, *hend = h + len;
    while (p < hend) {
        while (p < hend && (*p == ' ' || *p == '\t' || *p == ';'))
            p++;
        const char *end = memchr(p, ';', (size_t)(hend - p));
        if (!end)
            end = hend;
        const char *eq = memchr(p, '=', (size_t)(end - p));
        if (eq && eq > p) {
            const char *v = eq + 1, *ve = end, *ne = eq;
            while (ne > p && (ne[-1] == ' ' || ne[-1] == '\t'))
                ne--;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            if (ve - v >= 2 && *v == '"' && ve[-1] == '"') {
                v++;
                ve--;
            }
            if (!grow((void **)&out->v, &out->cap, out->n + 1, sizeof *out->v))
                return false;
            out->v[out->n++] = (cookie){p, (size_t)(ne - p), v, (size_t)(ve - v)};
        }
        p = end < hend ? end + 1 : end;
    }
    return true;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Cookie values are written with encodeURIComponent by the cookie library
 * @supabase/ssr uses; a malformed escape stays as it is, as there. */
static char *percent_decode(const char *s, size_t len, size_t *out_len)
{
    char *out = lr_xmalloc(len + 1);
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%' && i + 2 < len && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            out[o++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    if (memchr(out, '\0', o)) { /* an encoded NUL: refuse rather than truncate */
        free(out);
        return NULL;
    }
    *out_len = o;
    return out;
}

static bool looks_like_jwt(const char *s, size_t len)
{
    int dots = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '.')
            dots++;
        else if (!(isalnum((unsigned char)s[i]) || s[i] == '-' || s[i] == '_' || s[i] == '='))
            return false;
    }
    return dots == 2;
}

/* The access token inside a decoded session value, or NULL when the value
 * is not one of the shapes in session.h. */
static char *token_from_session_value(const char *value, size_t len)
{
    char *decoded = NULL;
    const char *json_text = value;
    size_t json_len = len;
    if (len >= 7 && !memcmp(value, "base64-", 7)) {
        decoded = (char *)lr_b64_decode(value + 7, len - 7, &json_len);
        if (!decoded)
            return NULL;
        json_text = decoded;
    } else if (looks_like_jwt(value, len)) {
        return lr_xstrndup(value, len);
    }
    char *token = NULL;
    /* user_metadata may hold "\u0000"; the token itself is checked below. */
    json_t *j = json_loadb(json_text, json_len, JSON_ALLOW_NUL, NULL);
    json_t *t = NULL;
    if (json_is_object(j))
        t = json_object_get(j, "access_token");
    else if (json_is_array(j))
        t = json_array_get(j, 0);
    if (json_is_string(t) && json_string_length(t) > 0 &&
        strlen(json_string_value(t)) == json_string_length(t))
        token = lr_xstrdup(json_string_value(t));
    json_decref(j);
    free(decoded);
    return token;
}

static char *token_from_cookie_value(const char *v, size_t len)
{
    size_t n;
    char *raw = percent_decode(v, len, &n);
    if (!raw)
        return NULL;
    char *token = token_from_session_value(raw, n);
    free(raw);
    return token;
}

/* Matches sb-<ref>-auth-token with an optional .N chunk suffix (N is 0 or
 * has no leading zero, as @supabase/ssr writes it). Returns the length of
 * the name without the suffix, the chunk index in *idx (-1 when unsplit),
 * or 0 when the name does not match. */
static size_t supabase_cookie_name(const cookie *c, long *idx)
{
    static const char suffix[] = "-auth-token";
    const size_t sl = sizeof suffix - 1;
    if (c->name_len < 3 + 1 + sl || strncmp(c->name, "sb-", 3) != 0)
        return 0;
    size_t base = c->name_len;
    *idx = -1;
    const char *dot = memrchr(c->name, '.', c->name_len);
    if (dot) {
        base = (size_t)(dot - c->name);
        size_t digits = c->name_len - base - 1;
        if (digits == 0 || digits > 9 || (digits > 1 && dot[1] == '0'))
            return 0;
        long v = 0;
        for (size_t i = 1; i <= digits; i++) {
            if (!isdigit((unsigned char)dot[i]))
                return 0;
            v = v * 10 + (dot[i] - '0');
        }
        *idx = v;
    }
    if (base < 3 + 1 + sl || strncmp(c->name + base - sl, suffix, sl) != 0 ||
        memchr(c->name, '.', base))
        return 0;
    return base;
}

static bool name_is(const cookie *c, const char *name)
{
    return c->name_len == strlen(name) && !strncmp(c->name, name, c->name_len);
}

/* Takes ownership of token (NULL or empty: nothing to add). */
static void push(cred_list *l, char *token, const char *source)
{
    if (!token || !*token) {
        free(token);
        return;
    }
    size_t cap = (size_t)l->cap;
    if (!grow((void **)&l->v, &cap, (size_t)l->n + 1, sizeof *l->v)) {
        free(token);
        return;
    }
    l->cap = (int)cap;
    l->v[l->n++] = (lr_credential){token, source};
}

static int part_cmp(const void *a, const void *b)
{
    const sb_part *x = a, *y = b;
    size_t n = x->base_len < y->base_len ? x->base_len : y->base_len;
    int c = memcmp(x->c->name, y->c->name, n);
    if (c)
        return c;
    if (x->base_len != y->base_len)
        return x->base_len < y->base_len ? -1 : 1;
    if (x->idx != y->idx)
        return x->idx < y->idx ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static bool same_project(const sb_part *a, const sb_part *b)
{
    return a->base_len == b->base_len && !memcmp(a->c->name, b->c->name, a->base_len);
}

/* Joins chunks .0, .1, … of one project (parts sorted by index, then by
 * position) until an index is missing; NULL when there is no .0. */
static char *joined_chunks(const sb_part *g, size_t n)
{
    size_t i = 0, total = 0, o = 0;
    while (i < n && g[i].idx < 0)
        i++;
    size_t first = i;
    for (long want = 0; i < n && g[i].idx == want; want++) {
        total += g[i].c->value_len;
        while (i < n && g[i].idx == want) /* repeated name: the first one counts */
            i++;
    }
    if (i == first)
        return NULL;
    char *s = lr_xmalloc(total + 1);
    long want = 0;
    for (size_t k = first; k < i; k++) {
        if (g[k].idx != want)
            continue;
        memcpy(s + o, g[k].c->value, g[k].c->value_len);
        o += g[k].c->value_len;
        want++;
    }
    s[o] = '\0';
    return s;
}

/* Offers the candidates of one project: unsplit first, then chunks. */
static void project_candidates(const sb_part *g, size_t n, cred_list *out)
{
    int before = out->n;
    if (g[0].idx < 0)
        push(out, token_from_cookie_value(g[0].c->value, g[0].c->value_len), "sb-auth-token");
    char *joined = joined_chunks(g, n);
    if (!joined)
        return;
    char *token = token_from_cookie_value(joined, strlen(joined));
    free(joined);
    if (token && out->n > before && !strcmp(out->v[out->n - 1].token, token))
        free(token); /* the same session twice: one try is enough */
    else
        push(out, token, "sb-auth-token-chunks");
}

static int first_pos_cmp(const void *a, const void *b)
{
    const size_t *x = a, *y = b; /* {first position, start, length} */
    return x[0] < y[0] ? -1 : x[0] > y[0];
}

static void supabase_candidates(const cookie_list *cs, cred_list *out)
{
    sb_part *parts = NULL;
    size_t np = 0, cap = 0;
    for (size_t i = 0; i < cs->n; i++) {
        long idx;
        size_t base = supabase_cookie_name(&cs->v[i], &idx);
        if (!base)
            continue;
        if (!grow((void **)&parts, &cap, np + 1, sizeof *parts))
            goto out;
        parts[np++] = (sb_part){&cs->v[i], base, idx, i};
    }
    if (np == 0)
        goto out;
    qsort(parts, np, sizeof *parts, part_cmp);
    /* Groups (one per project), then put back in header order. */
    size_t(*groups)[3] = lr_xmalloc(np * sizeof *groups);
    size_t ng = 0;
    for (size_t i = 0; i < np;) {
        size_t j = i, first = parts[i].pos;
        while (j < np && same_project(&parts[i], &parts[j])) {
            if (parts[j].pos < first)
                first = parts[j].pos;
            j++;
        }
        groups[ng][0] = first;
        groups[ng][1] = i;
        groups[ng][2] = j - i;
        ng++;
        i = j;
    }
    qsort(groups, ng, sizeof *groups, first_pos_cmp);
    for (size_t g = 0; g < ng; g++)
        project_candidates(&parts[groups[g][1]], groups[g][2], out);
    free(groups);
out:
    free(parts);
}

const char *lr_session_bearer(const char *authorization, size_t *len)
{
    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
        return NULL;
    const char *t = authorization + 7;
    while (*t == ' ')
        t++;
    size_t n = strlen(t);
    while (n > 0 && t[n - 1] == ' ')
        n--;
    *len = n;
    return n ? t : NULL;
}

static void bearer_candidate(const char *authorization, cred_list *out)
{
    size_t len;
    const char *t = lr_session_bearer(authorization, &len);
    /* An API key (sb_publishable_…, sb_secret_…) is not a user's token; no
     * JWT starts with "sb_" (its header is base64url of '{'). */
    if (!t || len > LR_SESSION_MAX_HEADER || !strncmp(t, "sb_", 3))
        return;
    push(out, lr_xstrndup(t, len), "authorization");
}

int lr_session_candidates(const char *cookie_header, const char *authorization, lr_credential **out)
{
    cred_list l = {0};
    size_t hlen = cookie_header ? strnlen(cookie_header, LR_SESSION_MAX_HEADER + 1) : 0;
    if (hlen > 0 && hlen <= LR_SESSION_MAX_HEADER) {
        cookie_list cs = {0};
        if (parse_cookies(cookie_header, hlen, &cs)) {
            static const char *const bare[] = {"lr_session", "sb-access-token",
                                               "supabase-auth-token"};
            for (size_t b = 0; b < sizeof bare / sizeof *bare; b++) {
                for (size_t i = 0; i < cs.n; i++) {
                    size_t n;
                    if (name_is(&cs.v[i], bare[b]))
                        push(&l, percent_decode(cs.v[i].value, cs.v[i].value_len, &n), bare[b]);
                }
            }
            supabase_candidates(&cs, &l);
        }
        free(cs.v);
    }
    if (authorization)
        bearer_candidate(authorization, &l);
    if (l.n == 0) {
        free(l.v);
        l.v = NULL;
    }
    *out = l.v;
    return l.n;
}

void lr_session_free(lr_credential *c, int n)
{
    for (int i = 0; i < n; i++)
        free(c[i].token);
    free(c);
}
