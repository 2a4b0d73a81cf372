/* The edge in front of libmicrohttpd: accepts connections, checks the
 * first request's header block before libmicrohttpd reads a byte of it,
 * and answers what it refuses itself, as one JSON error response.
 *
 * Why it exists: libmicrohttpd 0.9.75 answers the requests it cannot
 * parse (header block too large for its memory pool, a bad
 * Content-Length, a request line it cannot read) with hard-coded HTML or
 * not at all, and sends some of them with the status line and headers
 * twice (see docs/TROUBLESHOOTING.md). Nothing but the socket comes before
 * it, so the check peeks (MSG_PEEK) at the socket: the bytes stay there for
 * libmicrohttpd when the request is handed over with MHD_add_connection.
 *
 * The edge sees the first request of each connection only: once handed
 * over, libmicrohttpd reads the connection itself. The framing rules
 * (lr_edge_field, lr_edge_judge) are therefore also applied by the access
 * handler to every request, on the fields libmicrohttpd parsed.
 *
 * One thread runs the edge; lr_edge_start and lr_edge_stop are called from
 * the thread that owns the server.
 */
#ifndef LR_HTTP_EDGE_H
#define LR_HTTP_EDGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Response headers a browser script may read (CORS), on every answer. */
#define LR_HTTP_EXPOSE_HEADERS "Location, Retry-After, X-Request-Id, Idempotent-Replayed"

/* What the framing rules found in a header block (zero-initialised). */
typedef struct {
    int hosts;
    int content_lengths;
    uint64_t content_length;
    bool cl_invalid;  /* not 1*DIGIT */
    bool cl_conflict; /* two different values */
    bool cl_huge;     /* more than 19 digits */
    int transfer_encodings;
    int codings;       /* transfer codings listed, all lines together */
    bool chunked_last; /* the last listed coding is chunked */
    bool chunked_twice;
    bool unknown_coding;
    const char *origin; /* borrowed from the block; not NUL-terminated */
    size_t origin_len;
} lr_edge_fields;

/* Feeds one header field (name and value without surrounding spaces). */
void lr_edge_field(lr_edge_fields *f, const char *name, size_t name_len, const char *value,
                   size_t value_len);

/* An answer to a request the server refuses before routing it. */
typedef struct {
    int status; /* 0: acceptable */
    const char *code;
    const char *msg;
} lr_edge_verdict;

/* RFC 9112 framing of a request with these fields: Host (exactly one on
 * HTTP/1.1), Content-Length and Transfer-Encoding (sections 6.1-6.3). */
lr_edge_verdict lr_edge_judge(const lr_edge_fields *f, bool http11);

/* True when origin[0..len) is on the comma/space separated list. */
bool lr_edge_origin_allowed(const char *list, const char *origin, size_t len);

/* Hands an accepted connection whose first header block passed to the
 * HTTP library. Returns false when the server cannot take it (connection
 * limit): the edge then answers 503 and closes. On true the edge no longer
 * owns fd. */
typedef bool (*lr_edge_handoff_fn)(void *cls, int fd, const struct sockaddr *addr,
                                   socklen_t addr_len);

typedef struct {
    int port;
    size_t max_header; /* bytes of request line + fields + blank line */
    /* Memory libmicrohttpd has per connection (its pool); requests whose
     * parsed form would not fit are refused here with 431. */
    size_t pool_size;
    const char *cors_origins; /* borrowed for the edge's lifetime; may be NULL */
    lr_edge_handoff_fn handoff;
    void *cls;
} lr_edge_opts;

typedef struct lr_edge lr_edge;

/* Listens on o->port (IPv6 dual stack, else IPv4); NULL when it cannot. */
lr_edge *lr_edge_start(const lr_edge_opts *o);
/* Stops accepting and closes the connections not handed over yet. */
void lr_edge_stop(lr_edge *e);

#endif
