/* The vocabulary every layer shares: a generation's statuses and stages,
 * and the stable error codes a client sees, each defined once here as an
 * X-macro table (as libuv does with UV_ERRNO_MAP), with an enum and the
 * string the database and the wire carry.
 *
 * The strings are the database's column values and the API's "code"
 * field: they never change once shipped (docs/openapi.yaml's ErrorCode
 * enum lists the same codes; tests/integration/test_openapi.py compares
 * it with LR_ERROR_MAP). Name functions return static strings; parse
 * functions take a NUL-terminated string and return false for one that
 * is not in the table. All functions are pure and thread-safe.
 */
#ifndef LR_VOCAB_H
#define LR_VOCAB_H

#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

/* XX(NAME, "string"). A generation is pending (reserved, not yet handed
 * to the provider), then processing, then final: success, failed or
 * canceled. */
#define LR_GEN_STATUS_MAP(XX)                                                                      \
    XX(PENDING, "pending")                                                                         \
    XX(PROCESSING, "processing")                                                                   \
    XX(SUCCESS, "success")                                                                         \
    XX(FAILED, "failed")                                                                           \
    XX(CANCELED, "canceled")

typedef enum {
#define XX(name, s) LR_GEN_##name,
    LR_GEN_STATUS_MAP(XX)
#undef XX
} lr_gen_status;

const char *lr_gen_status_name(lr_gen_status s);
bool lr_gen_status_parse(const char *s, lr_gen_status *out);
/* Pending and processing: the generation has not settled yet. */
bool lr_gen_status_unfinished(lr_gen_status s);

/* XX(NAME, "string"), in the order a processing generation goes through
 * them (a stage never goes back): handed to the provider (its task id
 * recorded when it has one), the result being downloaded from the
 * provider, the result being written to storage. */
#define LR_GEN_STAGE_MAP(XX)                                                                       \
    XX(SUBMITTED, "submitted")                                                                     \
    XX(DOWNLOADING, "downloading")                                                                 \
    XX(STORING, "storing")

typedef enum {
    LR_STAGE_NONE = 0, /* not processing (yet) */
#define XX(name, s) LR_STAGE_##name,
    LR_GEN_STAGE_MAP(XX)
#undef XX
} lr_gen_stage;

/* NULL for LR_STAGE_NONE. */
const char *lr_gen_stage_name(lr_gen_stage s);
bool lr_gen_stage_parse(const char *s, lr_gen_stage *out);

/* XX(NAME, "code", HTTP status, "default message"): every error a client
 * can get in the "code" field, with the status the API answers it with
 * (for a generation that failed with it: the status of POST /api/infer's
 * answer) and the message used where the caller has no better one. */
#define LR_ERROR_MAP(XX)                                                                           \
    XX(BAD_REQUEST_LINE, "bad_request_line", 400,                                                  \
       "The request line is not METHOD TARGET HTTP/1.x")                                           \
    XX(BAD_HEADER, "bad_header", 400, "A header line is malformed")                                \
    XX(MISSING_HOST, "missing_host", 400, "HTTP/1.1 requests need a Host header")                  \
    XX(BAD_REQUEST, "bad_request", 400, "Bad request")                                             \
    XX(BAD_FRAMING, "bad_framing", 400, "The request's length is ambiguous")                       \
    XX(BAD_CONTENT_LENGTH, "bad_content_length", 400, "Content-Length is not a number")            \
    XX(REQUEST_TIMEOUT, "request_timeout", 408, "The request headers did not arrive in time")      \
    XX(HEADER_TOO_LARGE, "header_too_large", 431, "Request headers are too large")                 \
    XX(UNSUPPORTED_TRANSFER_CODING, "unsupported_transfer_coding", 501,                            \
       "Unsupported Transfer-Encoding")                                                            \
    XX(TOO_MANY_CONNECTIONS, "too_many_connections", 503,                                          \
       "The server is at its connection limit; retry")                                             \
    XX(HTTP_VERSION_NOT_SUPPORTED, "http_version_not_supported", 505,                              \
       "Only HTTP/1.0 and HTTP/1.1 are served")                                                    \
    XX(PACK_NOT_FOUND, "pack_not_found", 404, "No credit pack has this id")                        \
    XX(BILLING_NOT_CONFIGURED, "billing_not_configured", 503,                                      \
       "Buying credits is not configured on this server")                                          \
    XX(INVALID_SIGNATURE, "invalid_signature", 400, "The webhook signature does not verify")       \
    XX(INVALID_EVENT, "invalid_event", 400, "The body is not a valid event")                       \
    XX(INVALID_WEBHOOK_URL, "invalid_webhook_url", 422, "The webhook URL is not allowed")          \
    XX(INVALID_EVENTS, "invalid_events", 422, "Unknown webhook event types")                       \
    XX(PAYMENT_PROVIDER_ERROR, "payment_provider_error", 502,                                      \
       "The payment provider could not be reached")                                                \
    XX(INVALID_JSON, "invalid_json", 400, "Malformed JSON body")                                   \
    XX(MISSING_FIELDS, "missing_fields", 400, "Missing required fields")                           \
    XX(MISSING_INPUT_IMAGE, "missing_input_image", 400, "This model needs an input image")         \
    XX(INVALID_PARAMETER, "invalid_parameter", 422, "Invalid parameter")                           \
    XX(INVALID_PROMPT, "invalid_prompt", 422, "Invalid prompt")                                    \
    XX(UNAUTHORIZED, "unauthorized", 401, "Unauthorized")                                          \
    XX(INVALID_TOKEN, "invalid_token", 401, "Unauthorized: invalid session")                       \
    XX(ADMIN_DISABLED, "admin_disabled", 401, "Admin endpoints are disabled")                      \
    XX(INSUFFICIENT_CREDITS, "insufficient_credits", 402, "Insufficient credits")                  \
    XX(FORBIDDEN, "forbidden", 403, "Forbidden")                                                   \
    XX(METRICS_DISABLED, "metrics_disabled", 403, "Metrics are not enabled on this server")        \
    XX(ORIGIN_NOT_ALLOWED, "origin_not_allowed", 403, "This origin may not call the API")          \
    XX(CSRF_FAILED, "csrf_failed", 403, "Missing or wrong CSRF token")                             \
    XX(MODEL_NOT_FOUND, "model_not_found", 404, "Model not found")                                 \
    XX(GENERATION_NOT_FOUND, "generation_not_found", 404, "Generation not found")                  \
    XX(NOT_FOUND, "not_found", 404, "Not found")                                                   \
    XX(METHOD_NOT_ALLOWED, "method_not_allowed", 405, "Method not allowed")                        \
    XX(GENERATION_RUNNING, "generation_running", 409, "The generation is still running")           \
    XX(GENERATION_FINISHED, "generation_finished", 409, "The generation has already finished")     \
    XX(IDEMPOTENCY_CONFLICT, "idempotency_conflict", 409, "Idempotency conflict")                  \
    XX(IDEMPOTENCY_IN_PROGRESS, "idempotency_in_progress", 409,                                    \
       "A request with this Idempotency-Key is still running")                                     \
    XX(CANCELED, "canceled", 409, "Canceled by the user")                                          \
    XX(BODY_TOO_LARGE, "body_too_large", 413, "Request body is too large")                         \
    XX(INPUT_IMAGE_TOO_LARGE, "input_image_too_large", 413, "An input image is too large")         \
    XX(UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", 415,                                      \
       "Content-Type must be application/json")                                                    \
    XX(UNSUPPORTED_INPUT_IMAGE, "unsupported_input_image", 415,                                    \
       "Input images must be PNG, JPEG, WebP or GIF")                                              \
    XX(RANGE_NOT_SATISFIABLE, "range_not_satisfiable", 416, "Range not satisfiable")               \
    XX(INVALID_IDEMPOTENCY_KEY, "invalid_idempotency_key", 400, "Invalid Idempotency-Key")         \
    XX(INVALID_INPUT_IMAGE, "invalid_input_image", 400,                                            \
       "inputs.images must be an array of at most 4 data URLs")                                    \
    XX(INVALID_LAST_EVENT_ID, "invalid_last_event_id", 400, "Invalid Last-Event-ID")               \
    XX(INVALID_CALLBACK, "invalid_callback", 400, "Invalid callback")                              \
    XX(INVALID_CALLBACK_TOKEN, "invalid_callback_token", 401, "Invalid callback token")            \
    XX(IDEMPOTENCY_KEY_REUSED, "idempotency_key_reused", 422,                                      \
       "This Idempotency-Key was already used with a different request")                           \
    XX(INVALID_IMAGE_URL, "invalid_image_url", 422,                                                \
       "inputs.imageUrl is not usable: must be an https URL of at most 2048 characters")           \
    XX(INPUT_REJECTED, "input_rejected", 422, "The provider rejected the input")                   \
    XX(RATE_LIMITED, "rate_limited", 429, "Too many requests")                                     \
    XX(TOO_MANY_GENERATIONS, "too_many_generations", 429, "Too many generations running")          \
    XX(QUOTE_NOT_FOUND, "quote_not_found", 404, "Quote not found")                                 \
    XX(QUOTE_EXPIRED, "quote_expired", 409, "The quote has expired: ask for a new one")            \
    XX(QUOTE_MISMATCH, "quote_mismatch", 409, "The request is not the one quoted")                 \
    XX(INVALID_GRAPH, "invalid_graph", 422, "The graph has errors (see nodeErrors)")               \
    XX(GRAPH_TOO_LARGE, "graph_too_large", 413, "The graph has too many nodes")                    \
    XX(DANGLING_REFERENCE, "dangling_reference", 422, "The input refers to no such node output")   \
    XX(GRAPH_CYCLE, "graph_cycle", 422, "The node is part of a cycle")                             \
    XX(TYPE_MISMATCH, "type_mismatch", 422, "The referenced output does not fit this input")       \
    XX(MAX_CREDITS_EXCEEDED, "max_credits_exceeded", 402, "The run costs more than maxCredits")    \
    XX(RUN_NOT_FOUND, "run_not_found", 404, "Run not found")                                       \
    XX(RUN_FINISHED, "run_finished", 409, "The run has already finished")                          \
    XX(UPSTREAM_FAILED, "upstream_failed", 424, "A node this one reads from failed")               \
    XX(INTERNAL_ERROR, "internal_error", 500, "Internal error")                                    \
    XX(PROVIDER_FAILED, "provider_failed", 502, "The provider failed")                             \
    XX(PROVIDER_ERROR, "provider_error", 502, "The provider sent a malformed answer")              \
    XX(PROVIDER_AUTH, "provider_auth", 502, "The provider rejected the server's credentials")      \
    XX(STORAGE_FAILED, "storage_failed", 502, "The output could not be stored")                    \
    XX(OUTPUT_TOO_LARGE, "output_too_large", 502, "The provider's output is larger than 50 MB")    \
    XX(OUTPUT_TYPE_NOT_ALLOWED, "output_type_not_allowed", 502,                                    \
       "The provider's output is not an allowed image or video type")                              \
    XX(OUTPUT_URL_REFUSED, "output_url_refused", 502, "The provider's result URL was refused")     \
    XX(DOWNLOAD_FAILED, "download_failed", 502, "The result could not be downloaded")              \
    XX(INTERRUPTED, "interrupted", 502, "The server stopped before the generation finished")       \
    XX(DATABASE_UNAVAILABLE, "database_unavailable", 503,                                          \
       "The database is unavailable, try again shortly")                                           \
    XX(PROVIDER_NOT_CONFIGURED, "provider_not_configured", 503,                                    \
       "This model's provider is not configured on this server")                                   \
    XX(PROVIDER_UNAVAILABLE, "provider_unavailable", 503, "The provider could not be reached")     \
    XX(PROVIDER_OUT_OF_CREDITS, "provider_out_of_credits", 503,                                    \
       "The provider's account is out of credits")                                                 \
    XX(NOT_READY, "not_ready", 503, "Not ready to take traffic")                                   \
    XX(SHUTTING_DOWN, "shutting_down", 503, "The server is shutting down; retry")                  \
    XX(PROVIDER_TIMEOUT, "provider_timeout", 504, "The provider did not finish in time")

typedef enum {
    LR_CODE_NONE = 0, /* no error */
#define XX(name, s, status, msg) LR_CODE_##name,
    LR_ERROR_MAP(XX)
#undef XX
} lr_code;

/* NULL for LR_CODE_NONE. */
const char *lr_code_name(lr_code c);
bool lr_code_parse(const char *s, lr_code *out);
/* The HTTP status the API answers c with (500 for LR_CODE_NONE). */
int lr_code_http_status(lr_code c);
const char *lr_code_message(lr_code c);
/* A refusal's message into buf: fmt formatted with ap, or c's own message
 * when fmt is NULL. */
void lr_code_vformat(char *buf, size_t size, lr_code c, const char *fmt, va_list ap);

/* The API's error body {"success": false, "error": msg, "code": code},
 * with extra's fields merged in (extra is consumed; may be NULL). A new
 * reference. */
json_t *lr_error_body(const char *code, const char *msg, json_t *extra);

#endif
