#include "auth/session.h"

#include <ctype.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/util.h"

#define MAX_COOKIE_VALUE 65536
#define MAX_CHUNKS 16

typedef struct {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} cookie;

static int parse_cookies(const char *h, cookie *out, int max)
{
    int n = 0;
    const char *p = h;
    while (p && *p && n < max) {
        while (*p == ' ' || *p == '\t' || *p == ';')
            p++;
        const char *end = strchr(p, ';');
        if (!end)
            end = p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));
        if (eq && eq > p) {
            const char *v = eq + 1, *ve = end;
            const char *ne = eq;
            while (ne > p && (ne[-1] == ' ' || ne[-1] == '\t'))
                ne--;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            if (ve - v >= 2 && *v == '"' && ve[-1] == '"') {
                v++;
                ve--;
            }
            out[n++] = (cookie){p, (size_t)(ne - p), v, (size_t)(ve - v)};
        }
        p = *end ? end + 1 : end;
    }
    return n;
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

/* Cookie values from browsers may be percent-encoded (encodeURIComponent). */
static char *percent_decode(const char *s, size_t len)
{
    char *out = malloc(len + 1);
    if (!out)
        return NULL;
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
    if (strlen(out) != o) { /* an encoded NUL: refuse rather than truncate */
        free(out);
        return NULL;
    }
    return out;
}

static bool looks_like_jwt(const char *s)
{
    int dots = 0;
    for (const char *p = s; *p; p++) {
        if (*p == '.')
            dots++;
        else if (!(isalnum((unsigned char)*p) || *p == '-' || *p == '_' || *p == '='))
            return false;
    }
    return dots == 2;
}

/* Extracts the access token from a Supabase session cookie value. */
static char *token_from_session_value(const char *value)
{
    char *decoded = NULL;
    const char *json_text = value;
    size_t json_len = strlen(value);
    if (!strncmp(value, "base64-", 7)) {
        size_t n;
        decoded = (char *)lr_b64_decode(value + 7, strlen(value + 7), &n);
        if (!decoded)
            return NULL;
        json_text = decoded;
        json_len = n;
    } else if (looks_like_jwt(value)) {
        return strdup(value);
    }
    char *token = NULL;
    json_t *j = json_loadb(json_text, json_len, 0, NULL);
    json_t *t = NULL;
    if (json_is_object(j))
        t = json_object_get(j, "access_token");
    else if (json_is_array(j))
        t = json_array_get(j, 0);
    if (json_is_string(t) && json_string_length(t) > 0 &&
        strlen(json_string_value(t)) == json_string_length(t))
        token = strdup(json_string_value(t));
    json_decref(j);
    free(decoded);
    return token;
}

/* Matches sb-<ref>-auth-token with an optional .N chunk suffix. Returns
 * the length of the base name (without suffix), chunk index in *idx (-1
 * when unchunked), or 0 when the name does not match. */
static size_t supabase_cookie_name(const cookie *c, int *idx)
{
    static const char suffix[] = "-auth-token";
    const size_t sl = sizeof suffix - 1;
    if (c->name_len < 3 + 1 + sl || strncmp(c->name, "sb-", 3) != 0)
        return 0;
    size_t base = c->name_len;
    *idx = -1;
    const char *dot = memchr(c->name, '.', c->name_len);
    if (dot) {
        base = (size_t)(dot - c->name);
        long v = 0;
        size_t digits = c->name_len - base - 1;
        if (digits == 0 || digits > 2)
            return 0;
        for (size_t i = base + 1; i < c->name_len; i++) {
            if (!isdigit((unsigned char)c->name[i]))
                return 0;
            v = v * 10 + (c->name[i] - '0');
        }
        *idx = (int)v;
    }
    if (base < 3 + 1 + sl || strncmp(c->name + base - sl, suffix, sl) != 0)
        return 0;
    return base;
}

static bool name_is(const cookie *c, const char *name)
{
    return c->name_len == strlen(name) && !strncmp(c->name, name, c->name_len);
}

static int push(lr_credential *out, int n, int max, char *token, const char *source)
{
    if (!token)
        return n;
    if (n >= max || !*token) {
        free(token);
        return n;
    }
    out[n].token = token;
    out[n].source = source;
    return n + 1;
}

static char *supabase_session_token(const cookie *cs, int nc)
{
    /* The first sb-*-auth-token name seen decides the project ref. */
    const cookie *first = NULL;
    size_t base = 0;
    int idx;
    for (int i = 0; i < nc && !first; i++) {
        if ((base = supabase_cookie_name(&cs[i], &idx)) > 0)
            first = &cs[i];
    }
    if (!first)
        return NULL;
    const cookie *whole = NULL, *chunks[MAX_CHUNKS] = {0};
    for (int i = 0; i < nc; i++) {
        size_t b = supabase_cookie_name(&cs[i], &idx);
        if (b != base || strncmp(cs[i].name, first->name, base) != 0)
            continue;
        if (idx < 0)
            whole = &cs[i];
        else if (idx < MAX_CHUNKS)
            chunks[idx] = &cs[i];
    }
    char *raw = NULL;
    if (chunks[0]) {
        size_t total = 0;
        int n = 0;
        while (n < MAX_CHUNKS && chunks[n])
            total += chunks[n++]->value_len;
        if (total > MAX_COOKIE_VALUE)
            return NULL;
        char *joined = malloc(total + 1);
        if (!joined)
            return NULL;
        size_t o = 0;
        for (int i = 0; i < n; i++) {
            memcpy(joined + o, chunks[i]->value, chunks[i]->value_len);
            o += chunks[i]->value_len;
        }
        raw = percent_decode(joined, o);
        free(joined);
    } else if (whole && whole->value_len <= MAX_COOKIE_VALUE) {
        raw = percent_decode(whole->value, whole->value_len);
    }
    if (!raw)
        return NULL;
    char *token = token_from_session_value(raw);
    free(raw);
    return token;
}

int lr_session_candidates(const char *cookie_header, const char *authorization,
                          lr_credential *out, int max)
{
    int n = 0;
    if (cookie_header && strlen(cookie_header) <= 4 * MAX_COOKIE_VALUE) {
        cookie cs[64];
        int nc = parse_cookies(cookie_header, cs, 64);
        static const char *const bare[] = {"lr_session", "sb-access-token", "supabase-auth-token"};
        for (size_t b = 0; b < sizeof bare / sizeof *bare; b++) {
            for (int i = 0; i < nc; i++) {
                if (name_is(&cs[i], bare[b]) && cs[i].value_len <= MAX_COOKIE_VALUE) {
                    n = push(out, n, max, percent_decode(cs[i].value, cs[i].value_len), bare[b]);
                    break;
                }
            }
        }
        n = push(out, n, max, supabase_session_token(cs, nc), "sb-auth-token");
    }
    if (authorization && !strncasecmp(authorization, "Bearer ", 7)) {
        const char *t = authorization + 7;
        while (*t == ' ')
            t++;
        size_t len = strlen(t);
        while (len > 0 && t[len - 1] == ' ')
            len--;
        if (len > 0 && len <= MAX_COOKIE_VALUE)
            n = push(out, n, max, strndup(t, len), "authorization");
    }
    return n;
}

void lr_session_free(lr_credential *c, int n)
{
    for (int i = 0; i < n; i++)
        free(c[i].token);
}
