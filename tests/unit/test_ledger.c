/* The ledger conformance suite: the money rules and the typed reads of
 * the database interface, run unchanged on every backend. With
 * LR_TEST_DB_URL unset it runs on a fresh SQLite file per test; with a
 * postgres:// URL, on that database (CTest points it at the test
 * cluster). Each test works for a user of its own, so tests sharing one
 * PostgreSQL database do not see each other's money. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "db/db.h"

typedef struct {
    char path[64]; /* SQLite file, "" on PostgreSQL */
    char user[LR_UUID_LEN + 1];
    lr_db *db;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    const char *url = getenv("LR_TEST_DB_URL");
    if (!url || !*url) {
        snprintf(f->path, sizeof f->path, "/tmp/lr-ledger-%d-%ld.db", getpid(), random());
        url = f->path;
    }
    char *err = NULL;
    lr_err e = lr_db_open(url, 4, &f->db, &err);
    if (e != LR_OK)
        fail_msg("cannot open %s: %s", url, err ? err : lr_strerror(e));
    assert_int_equal(f->db->ops->migrate(f->db), LR_OK);
    assert_int_equal(f->db->ops->migrate(f->db), LR_OK); /* idempotent */
    lr_uuid_v4(f->user);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    lr_db_close(f->db);
    if (f->path[0]) {
        char p[96];
        unlink(f->path);
        snprintf(p, sizeof p, "%s-wal", f->path);
        unlink(p);
        snprintf(p, sizeof p, "%s-shm", f->path);
        unlink(p);
    }
    free(f);
    return 0;
}

static void grant(fixture *f, int amount, const char *key)
{
    lr_adjust_req r = {
        .user_id = f->user, .amount = amount, .type = "bonus", .idempotency_key = key};
    lr_adjust_result res;
    assert_int_equal(f->db->ops->adjust(f->db, &r, &res), LR_OK);
}

/* A reservation's fields; the helpers below fill what a test leaves out. */
typedef struct {
    int cost, outputs;
    int64_t created_ms;     /* 0: now */
    int64_t lease_ms;       /* lease from now (0: an hour); negative: already run out */
    const char *owner;      /* NULL: a fresh one */
    const char *key, *hash; /* idempotency key and request hash */
    json_t *params;
} reservation;

static lr_err reserve_with(fixture *f, const reservation *v, char id[LR_UUID_LEN + 1], int *balance,
                           lr_key_holder *holder)
{
    lr_uuid_v4(id);
    char ts[32], lease[32], owner[LR_UUID_LEN + 1], expired[32];
    int64_t now = lr_now_ms();
    lr_time_iso(v->created_ms ? v->created_ms : now, ts);
    lr_time_iso(now + (v->lease_ms ? v->lease_ms : 3600 * 1000), lease);
    lr_time_iso(now - 24 * 3600 * 1000, expired);
    lr_uuid_v4(owner);
    lr_reserve_req r = {.generation_id = id,
                        .user_id = f->user,
                        .type = "photo",
                        .model = "seedream_image",
                        .provider = "mock",
                        .prompt = "a red fox",
                        .params = v->params,
                        .outputs_count = v->outputs ? v->outputs : 1,
                        .cost = v->cost,
                        .created_at = ts,
                        .owner = v->owner ? v->owner : owner,
                        .lease_until = lease,
                        .idempotency_key = v->key,
                        .request_hash = v->hash,
                        .key_expired_before = expired};
    lr_key_holder h;
    return f->db->ops->reserve(f->db, &r, balance, holder ? holder : &h);
}

static lr_err reserve(fixture *f, char id[LR_UUID_LEN + 1], int cost, int *balance)
{
    return reserve_with(f, &(reservation){.cost = cost}, id, balance, NULL);
}

static int balance_of(fixture *f)
{
    int balance = -1;
    assert_int_equal(f->db->ops->balance(f->db, f->user, &balance), LR_OK);
    return balance;
}

/* The ledger rows sum to the balance, which is not negative. */
static void assert_ledger_consistent(fixture *f)
{
    lr_ledger_list rows;
    assert_int_equal(f->db->ops->list_transactions(f->db, f->user, NULL, NULL, 100000, &rows),
                     LR_OK);
    long sum = 0;
    for (size_t i = 0; i < rows.n; i++)
        sum += rows.v[i].amount;
    lr_ledger_list_clear(&rows);
    int balance = balance_of(f);
    assert_int_equal(sum, balance);
    assert_true(balance >= 0);
}

/* How many ledger rows of type for generation id. */
static int ledger_rows(fixture *f, const char *id, const char *type)
{
    lr_ledger_list rows;
    assert_int_equal(f->db->ops->list_transactions(f->db, f->user, NULL, NULL, 100000, &rows),
                     LR_OK);
    int n = 0;
    for (size_t i = 0; i < rows.n; i++)
        n += rows.v[i].generation_id && !strcmp(rows.v[i].generation_id, id) &&
             !strcmp(rows.v[i].type, type);
    lr_ledger_list_clear(&rows);
    return n;
}

static void assert_audit_sound(fixture *f)
{
    lr_violation_list v;
    assert_int_equal(f->db->ops->audit(f->db, &v), LR_OK);
    for (size_t i = 0; i < v.n; i++)
        print_error("violation %s %s: %s\n", v.v[i].kind, v.v[i].subject, v.v[i].detail);
    assert_int_equal(v.n, 0);
    lr_violation_list_clear(&v);
}

static void test_reserve_short_changes_nothing(void **state)
{
    fixture *f = *state;
    char id[LR_UUID_LEN + 1];
    int balance = -1;
    assert_int_equal(reserve(f, id, 8, &balance), LR_ERR_INSUFFICIENT);
    assert_int_equal(balance, 0);
    grant(f, 5, NULL);
    assert_int_equal(reserve(f, id, 8, &balance), LR_ERR_INSUFFICIENT);
    assert_int_equal(balance, 5);
    lr_generation g;
    assert_int_equal(f->db->ops->get_generation(f->db, NULL, id, &g), LR_ERR_NOT_FOUND);
    assert_null(g.id);
    assert_int_equal(ledger_rows(f, id, "generation"), 0);
    assert_ledger_consistent(f);
}

static void test_settle_failed_refunds_exactly_once(void **state)
{
    fixture *f = *state;
    grant(f, 20, NULL);
    char id[LR_UUID_LEN + 1];
    int balance;
    assert_int_equal(reserve(f, id, 8, &balance), LR_OK);
    assert_int_equal(balance, 12);
    lr_settle_req s = {.generation_id = id,
                       .status = "failed",
                       .failed_count = 1,
                       .refund = 8,
                       .error_code = "provider_failed",
                       .error_message = "boom"};
    assert_int_equal(f->db->ops->settle(f->db, &s, &balance), LR_OK);
    assert_int_equal(balance, 20);
    assert_int_equal(f->db->ops->settle(f->db, &s, &balance), LR_ERR_CONFLICT);
    assert_int_equal(balance_of(f), 20);
    assert_int_equal(ledger_rows(f, id, "generation"), 1);
    assert_int_equal(ledger_rows(f, id, "refund"), 1);
    lr_generation g;
    assert_int_equal(f->db->ops->get_generation(f->db, f->user, id, &g), LR_OK);
    assert_string_equal(g.status, "failed");
    assert_null(g.stage);
    assert_int_equal(g.credits_used, 0);
    assert_int_equal(g.failed_count, 1);
    assert_string_equal(g.error_code, "provider_failed");
    assert_string_equal(g.error_message, "boom");
    assert_int_equal(g.result_urls.n, 0);
    assert_non_null(g.finished_at);
    lr_generation_clear(&g);
    /* someone else's generation is not found */
    char other[LR_UUID_LEN + 1];
    lr_uuid_v4(other);
    assert_int_equal(f->db->ops->get_generation(f->db, other, id, &g), LR_ERR_NOT_FOUND);
    assert_ledger_consistent(f);
    assert_audit_sound(f);
}

static void test_settle_success_charges_once_and_reads_back_typed(void **state)
{
    fixture *f = *state;
    grant(f, 10, NULL);
    char id[LR_UUID_LEN + 1];
    int balance;
    int64_t before = lr_now_ms();
    json_t *params = json_pack("{s:s, s:i}", "aspectRatio", "16:9", "seed", 7);
    assert_int_equal(reserve_with(f, &(reservation){.cost = 6, .outputs = 2, .params = params}, id,
                                  &balance, NULL),
                     LR_OK);
    assert_int_equal(balance, 4);
    char *task_v[] = {"task-1", NULL},
         *url_v[] = {"https://cdn.example/a.png", "https://cdn.example/b.png"};
    char *key_v[] = {"u/photo/a.png", "u/photo/b.png"};
    lr_strv tasks = {task_v, 2};
    assert_int_equal(f->db->ops->set_stage(f->db, id, "processing", "storing", &tasks), LR_OK);
    lr_generation g;
    assert_int_equal(f->db->ops->get_generation(f->db, NULL, id, &g), LR_OK);
    assert_string_equal(g.status, "processing");
    assert_string_equal(g.stage, "storing");
    assert_int_equal(g.task_ids.n, 2);
    assert_string_equal(g.task_ids.v[0], "task-1");
    assert_null(g.task_ids.v[1]);
    assert_false(g.has_duration);
    assert_null(g.finished_at);
    assert_true(lr_generation_unfinished(&g));
    lr_generation_clear(&g);

    lr_settle_req s = {.generation_id = id,
                       .status = "success",
                       .result_urls = {url_v, 2},
                       .storage_keys = {key_v, 2},
                       .task_ids = tasks,
                       .succeeded_count = 2,
                       .text = "two foxes",
                       .duration_ms = 1234};
    assert_int_equal(f->db->ops->settle(f->db, &s, &balance), LR_OK);
    assert_int_equal(balance, 4);
    assert_int_equal(f->db->ops->get_generation(f->db, f->user, id, &g), LR_OK);
    assert_string_equal(g.id, id);
    assert_string_equal(g.user_id, f->user);
    assert_string_equal(g.type, "photo");
    assert_string_equal(g.model, "seedream_image");
    assert_string_equal(g.provider, "mock");
    assert_string_equal(g.prompt, "a red fox");
    assert_string_equal(g.status, "success");
    assert_false(lr_generation_unfinished(&g));
    assert_int_equal(g.result_urls.n, 2);
    assert_string_equal(g.result_urls.v[1], "https://cdn.example/b.png");
    assert_int_equal(g.credits_used, 6);
    assert_int_equal(g.outputs_count, 2);
    assert_int_equal(g.succeeded_count, 2);
    assert_int_equal(g.failed_count, 0);
    assert_true(json_equal(g.params, params));
    assert_null(g.error_code);
    assert_true(g.has_duration);
    assert_int_equal(g.duration_ms, 1234);
    assert_string_equal(g.text, "two foxes");
    int64_t created = lr_time_parse_iso(g.created_at);
    assert_true(created >= before - 1000 && created <= lr_now_ms() + 1000);
    assert_true(lr_time_parse_iso(g.finished_at) >= created);
    assert_non_null(g.updated_at);
    lr_generation_clear(&g);
    assert_int_equal(ledger_rows(f, id, "generation"), 1);
    assert_int_equal(ledger_rows(f, id, "refund"), 0);
    json_decref(params);
    assert_ledger_consistent(f);
    assert_audit_sound(f);
}

static void test_grant_idempotent_by_key_and_never_negative(void **state)
{
    fixture *f = *state;
    lr_adjust_req r = {.user_id = f->user,
                       .amount = 50,
                       .type = "purchase",
                       .description = "pack",
                       .idempotency_key = "pay-1"};
    lr_adjust_result a, b;
    assert_int_equal(f->db->ops->adjust(f->db, &r, &a), LR_OK);
    assert_false(a.replayed);
    assert_int_equal(f->db->ops->adjust(f->db, &r, &b), LR_OK);
    assert_true(b.replayed);
    assert_string_equal(a.transaction_id, b.transaction_id);
    assert_int_equal(b.new_balance, 50);
    r.amount = 60;
    assert_int_equal(f->db->ops->adjust(f->db, &r, &b), LR_ERR_CONFLICT);
    lr_adjust_req debit = {.user_id = f->user, .amount = -51, .type = "adjustment"};
    assert_int_equal(f->db->ops->adjust(f->db, &debit, &b), LR_ERR_INSUFFICIENT);
    assert_int_equal(b.new_balance, 50);
    assert_int_equal(balance_of(f), 50);
    lr_ledger_list rows;
    assert_int_equal(f->db->ops->list_transactions(f->db, f->user, NULL, NULL, 10, &rows), LR_OK);
    assert_int_equal(rows.n, 1);
    assert_string_equal(rows.v[0].id, a.transaction_id);
    assert_int_equal(rows.v[0].amount, 50);
    assert_string_equal(rows.v[0].type, "purchase");
    assert_string_equal(rows.v[0].description, "pack");
    assert_true(json_is_object(rows.v[0].metadata));
    assert_null(rows.v[0].generation_id);
    assert_true(lr_time_parse_iso(rows.v[0].created_at) > 0);
    lr_ledger_list_clear(&rows);
    assert_ledger_consistent(f);
}

static void test_reserve_idempotent_by_key(void **state)
{
    fixture *f = *state;
    grant(f, 10, NULL);
    char id[LR_UUID_LEN + 1], again[LR_UUID_LEN + 1];
    int balance;
    lr_key_holder h = {0};
    reservation v = {.cost = 3, .key = "retry-1", .hash = "aaaa"};
    assert_int_equal(reserve_with(f, &v, id, &balance, &h), LR_OK);
    assert_int_equal(reserve_with(f, &v, again, &balance, &h), LR_ERR_CONFLICT);
    assert_string_equal(h.generation_id, id);
    assert_true(h.same_request);
    v.hash = "bbbb";
    assert_int_equal(reserve_with(f, &v, again, &balance, &h), LR_ERR_CONFLICT);
    assert_false(h.same_request);
    assert_int_equal(balance_of(f), 7); /* charged once */
    lr_generation g;
    assert_int_equal(f->db->ops->get_generation(f->db, NULL, again, &g), LR_ERR_NOT_FOUND);
    /* a key held by a generation older than the hold is free again */
    v.created_ms = lr_now_ms() - 25 * 3600 * 1000;
    v.key = "retry-2";
    assert_int_equal(reserve_with(f, &v, id, &balance, &h), LR_OK);
    v.created_ms = 0;
    assert_int_equal(reserve_with(f, &v, again, &balance, &h), LR_OK);
    assert_int_equal(balance_of(f), 1);
    assert_ledger_consistent(f);
}

static void test_lists_are_newest_first_in_keyset_pages(void **state)
{
    fixture *f = *state;
    grant(f, 10, NULL);
    char ids[3][LR_UUID_LEN + 1];
    int balance;
    int64_t t0 = lr_now_ms() - 10000;
    for (int i = 0; i < 3; i++)
        assert_int_equal(reserve_with(f, &(reservation){.cost = 1, .created_ms = t0 + i * 1000},
                                      ids[i], &balance, NULL),
                         LR_OK);
    lr_gen_filter filter = {.limit = 2};
    lr_generation_list page;
    assert_int_equal(f->db->ops->list_generations(f->db, f->user, &filter, &page), LR_OK);
    assert_int_equal(page.n, 2);
    assert_string_equal(page.v[0].id, ids[2]);
    assert_string_equal(page.v[1].id, ids[1]);
    char created[32], last[LR_UUID_LEN + 1];
    snprintf(created, sizeof created, "%s", page.v[1].created_at);
    snprintf(last, sizeof last, "%s", page.v[1].id);
    lr_generation_list_clear(&page);
    filter.before_created_at = created;
    filter.before_id = last;
    assert_int_equal(f->db->ops->list_generations(f->db, f->user, &filter, &page), LR_OK);
    assert_int_equal(page.n, 1);
    assert_string_equal(page.v[0].id, ids[0]);
    lr_generation_list_clear(&page);
    lr_gen_filter done = {.limit = 10, .status = "success"};
    assert_int_equal(f->db->ops->list_generations(f->db, f->user, &done, &page), LR_OK);
    assert_int_equal(page.n, 0);
    lr_generation_list_clear(&page);

    lr_ledger_list rows;
    assert_int_equal(f->db->ops->list_transactions(f->db, f->user, NULL, NULL, 2, &rows), LR_OK);
    assert_int_equal(rows.n, 2); /* the grant (now), then the newest charge */
    assert_string_equal(rows.v[0].type, "bonus");
    assert_string_equal(rows.v[1].generation_id, ids[2]);
    assert_int_equal(rows.v[1].amount, -1);
    assert_string_equal(rows.v[1].type, "generation");
    snprintf(created, sizeof created, "%s", rows.v[1].created_at);
    snprintf(last, sizeof last, "%s", rows.v[1].id);
    lr_ledger_list_clear(&rows);
    assert_int_equal(f->db->ops->list_transactions(f->db, f->user, created, last, 10, &rows),
                     LR_OK);
    assert_int_equal(rows.n, 2); /* the two older charges */
    assert_string_equal(rows.v[0].generation_id, ids[1]);
    assert_string_equal(rows.v[1].generation_id, ids[0]);
    lr_ledger_list_clear(&rows);
}

static void test_delete_hides_and_queues_objects(void **state)
{
    fixture *f = *state;
    grant(f, 5, NULL);
    char id[LR_UUID_LEN + 1];
    int balance;
    assert_int_equal(reserve(f, id, 2, &balance), LR_OK);
    lr_strv keys;
    assert_int_equal(f->db->ops->mark_deleted(f->db, f->user, id, &keys), LR_ERR_CONFLICT);
    char *stored[] = {"u/photo/x.png"};
    lr_settle_req s = {.generation_id = id,
                       .status = "success",
                       .succeeded_count = 1,
                       .storage_keys = {stored, 1}};
    assert_int_equal(f->db->ops->settle(f->db, &s, &balance), LR_OK);
    char other[LR_UUID_LEN + 1];
    lr_uuid_v4(other);
    assert_int_equal(f->db->ops->mark_deleted(f->db, other, id, &keys), LR_ERR_NOT_FOUND);
    assert_int_equal(f->db->ops->mark_deleted(f->db, f->user, id, &keys), LR_OK);
    assert_int_equal(keys.n, 1);
    assert_string_equal(keys.v[0], "u/photo/x.png");
    lr_strv_clear(&keys);
    assert_int_equal(f->db->ops->mark_deleted(f->db, f->user, id, &keys), LR_ERR_NOT_FOUND);
    lr_generation g;
    assert_int_equal(f->db->ops->get_generation(f->db, f->user, id, &g), LR_ERR_NOT_FOUND);

    lr_purge_list purges;
    assert_int_equal(f->db->ops->pending_purges(f->db, 100000, &purges), LR_OK);
    bool queued = false;
    for (size_t i = 0; i < purges.n; i++)
        queued |= !strcmp(purges.v[i].id, id) && purges.v[i].keys.n == 1;
    lr_purge_list_clear(&purges);
    assert_true(queued);
    assert_int_equal(f->db->ops->purged(f->db, id), LR_OK);
    assert_int_equal(f->db->ops->pending_purges(f->db, 100000, &purges), LR_OK);
    for (size_t i = 0; i < purges.n; i++)
        assert_string_not_equal(purges.v[i].id, id);
    lr_purge_list_clear(&purges);
    assert_int_equal(balance_of(f), 3); /* deleting moves no credit */
    assert_ledger_consistent(f);
}

/* Whether reap_expired (reap) or claim_resumable by rival takes id;
 * dead: whether ended heartbeats count (db.h). */
static bool taken_as(fixture *f, const char *rival, const char *id, bool reap, bool dead)
{
    char until[32];
    lr_time_iso(lr_now_ms() + 60000, until);
    bool taken = false;
    if (reap) {
        lr_reaped_list l;
        assert_int_equal(f->db->ops->reap_expired(f->db, rival, 100000, dead, &l), LR_OK);
        for (size_t i = 0; i < l.n; i++)
            taken |= !strcmp(l.v[i].id, id);
        lr_reaped_list_clear(&l);
    } else {
        lr_generation_list l;
        assert_int_equal(f->db->ops->claim_resumable(f->db, rival, until, 100000, dead, &l), LR_OK);
        for (size_t i = 0; i < l.n; i++)
            taken |= !strcmp(l.v[i].id, id);
        lr_generation_list_clear(&l);
    }
    return taken;
}

static bool taken_by(fixture *f, const char *rival, const char *id, bool reap)
{
    return taken_as(f, rival, id, reap, true);
}

/* A row lease that ran out is not enough: the process that claimed the
 * row must also have stopped beating (a backlog renewed late is not a
 * dead process); once its heartbeat ends, its work is taken over. */
static void test_live_heartbeat_keeps_expired_work(void **state)
{
    fixture *f = *state;
    grant(f, 10, NULL);
    char owner[LR_UUID_LEN + 1], rival[LR_UUID_LEN + 1], alive[32];
    lr_uuid_v4(owner);
    lr_uuid_v4(rival);
    lr_time_iso(lr_now_ms() + 3600 * 1000, alive);
    assert_int_equal(f->db->ops->renew_leases(f->db, owner, alive), LR_OK);
    char untaken[LR_UUID_LEN + 1], running[LR_UUID_LEN + 1];
    int balance;
    reservation late = {.cost = 2, .lease_ms = -60000, .owner = owner};
    assert_int_equal(reserve_with(f, &late, untaken, &balance, NULL), LR_OK);
    late.cost = 3;
    assert_int_equal(reserve_with(f, &late, running, &balance, NULL), LR_OK);
    char *task_v[] = {"task-7"};
    lr_strv tasks = {task_v, 1};
    assert_int_equal(f->db->ops->set_stage(f->db, running, "processing", "submitted", &tasks),
                     LR_OK);
    assert_false(taken_by(f, rival, untaken, true));
    assert_false(taken_by(f, rival, running, false));
    assert_int_equal(balance_of(f), 5);

    char past[32];
    lr_time_iso(lr_now_ms() - 1000, past);
    assert_int_equal(f->db->ops->renew_leases(f->db, owner, past), LR_OK); /* it stopped */
    /* released: taken even by a process that counts no ended heartbeat */
    assert_true(taken_as(f, rival, untaken, true, false));
    assert_true(taken_as(f, rival, running, false, false));
    assert_int_equal(balance_of(f), 7); /* the untaken one refunded, once */
    assert_false(taken_by(f, owner, untaken, true));
    assert_ledger_consistent(f);
    assert_audit_sound(f);
}

/* An owner's heartbeat decides for it: once it has ended, its work is
 * taken over even though the rows' own leases still hold (a killed
 * process's newest rows would otherwise wait a whole lease more), and
 * while it lasts nothing is taken. */
static void test_ended_heartbeat_hands_over_leased_work(void **state)
{
    fixture *f = *state;
    grant(f, 10, NULL);
    char owner[LR_UUID_LEN + 1], rival[LR_UUID_LEN + 1], alive[32];
    lr_uuid_v4(owner);
    lr_uuid_v4(rival);
    int64_t dies_ms = lr_now_ms() + 5000;
    lr_time_iso(dies_ms, alive);
    assert_int_equal(f->db->ops->renew_leases(f->db, owner, alive), LR_OK);
    char untaken[LR_UUID_LEN + 1], running[LR_UUID_LEN + 1];
    int balance;
    reservation fresh = {.cost = 2, .lease_ms = 3600 * 1000, .owner = owner};
    assert_int_equal(reserve_with(f, &fresh, untaken, &balance, NULL), LR_OK);
    fresh.cost = 3;
    assert_int_equal(reserve_with(f, &fresh, running, &balance, NULL), LR_OK);
    char *task_v[] = {"task-8"};
    lr_strv tasks = {task_v, 1};
    assert_int_equal(f->db->ops->set_stage(f->db, running, "processing", "submitted", &tasks),
                     LR_OK);
    bool untaken_early = taken_by(f, rival, untaken, true);
    bool running_early = taken_by(f, rival, running, false);
    if (lr_now_ms() < dies_ms) { /* the checks ran while the heartbeat lived */
        assert_false(untaken_early);
        assert_false(running_early);
    }
    /* The heartbeat ends by itself (no release): wait for it to be seen. */
    while (lr_now_ms() <= dies_ms + 10) /* the heartbeat's end is a time */
        usleep(20000);
    /* a process that counts no ended heartbeat (just started) leaves it */
    assert_false(taken_as(f, rival, untaken, true, false));
    assert_false(taken_as(f, rival, running, false, false));
    bool refunded = untaken_early, claimed = running_early;
    for (int64_t deadline = dies_ms + 30000; (!refunded || !claimed) && lr_now_ms() < deadline;) {
        usleep(50000);
        refunded = refunded || taken_by(f, rival, untaken, true);
        claimed = claimed || taken_by(f, rival, running, false);
    }
    assert_true(refunded);
    assert_true(claimed);
    assert_int_equal(balance_of(f), 7); /* the untaken one refunded, once */
    assert_false(taken_by(f, owner, untaken, true));
    assert_ledger_consistent(f);
    assert_audit_sound(f);
}

static void test_expired_work_is_reaped_or_claimed_once(void **state)
{
    fixture *f = *state;
    grant(f, 10, NULL);
    char dead[LR_UUID_LEN + 1], live[LR_UUID_LEN + 1], held[LR_UUID_LEN + 1];
    int balance;
    /* a dead process's generation the provider never took, and one it did */
    assert_int_equal(
        reserve_with(f, &(reservation){.cost = 2, .lease_ms = -60000}, dead, &balance, NULL),
        LR_OK);
    assert_int_equal(
        reserve_with(f, &(reservation){.cost = 3, .lease_ms = -60000}, live, &balance, NULL),
        LR_OK);
    char *task_v[] = {"task-9"};
    lr_strv tasks = {task_v, 1};
    assert_int_equal(f->db->ops->set_stage(f->db, live, "processing", "submitted", &tasks), LR_OK);
    /* and one whose lease still holds */
    assert_int_equal(reserve(f, held, 1, &balance), LR_OK);
    assert_int_equal(balance_of(f), 4);

    char me[LR_UUID_LEN + 1], until[32];
    lr_uuid_v4(me);
    lr_time_iso(lr_now_ms() + 60000, until);
    lr_generation_list claimed;
    assert_int_equal(f->db->ops->claim_resumable(f->db, me, until, 100000, true, &claimed), LR_OK);
    const lr_generation *mine = NULL;
    for (size_t i = 0; i < claimed.n; i++) {
        assert_string_not_equal(claimed.v[i].id, dead);
        assert_string_not_equal(claimed.v[i].id, held);
        if (!strcmp(claimed.v[i].id, live))
            mine = &claimed.v[i];
    }
    assert_non_null(mine);
    assert_string_equal(mine->user_id, f->user);
    assert_int_equal(mine->task_ids.n, 1);
    assert_string_equal(mine->task_ids.v[0], "task-9");
    assert_int_equal(mine->credits_used, 3);
    lr_generation_list_clear(&claimed);
    char rival[LR_UUID_LEN + 1];
    lr_uuid_v4(rival);
    assert_int_equal(f->db->ops->claim_resumable(f->db, rival, until, 100000, true, &claimed),
                     LR_OK);
    for (size_t i = 0; i < claimed.n; i++)
        assert_string_not_equal(claimed.v[i].id, live); /* my lease holds now */
    lr_generation_list_clear(&claimed);

    lr_reaped_list reaped;
    assert_int_equal(f->db->ops->reap_expired(f->db, me, 100000, true, &reaped), LR_OK);
    int refunded = -1;
    for (size_t i = 0; i < reaped.n; i++) {
        assert_string_not_equal(reaped.v[i].id, live);
        assert_string_not_equal(reaped.v[i].id, held);
        if (!strcmp(reaped.v[i].id, dead))
            refunded = reaped.v[i].refund;
    }
    lr_reaped_list_clear(&reaped);
    assert_int_equal(refunded, 2);
    assert_int_equal(balance_of(f), 6);
    assert_int_equal(f->db->ops->reap_expired(f->db, rival, 100000, true, &reaped), LR_OK);
    for (size_t i = 0; i < reaped.n; i++)
        assert_string_not_equal(reaped.v[i].id, dead); /* refunded once */
    lr_reaped_list_clear(&reaped);
    lr_generation g;
    assert_int_equal(f->db->ops->get_generation(f->db, f->user, dead, &g), LR_OK);
    assert_string_equal(g.status, "failed");
    assert_string_equal(g.error_code, "interrupted");
    lr_generation_clear(&g);
    assert_int_equal(ledger_rows(f, dead, "refund"), 1);
    assert_ledger_consistent(f);
    assert_audit_sound(f);
}

/* A run of three nodes: a (10), b (20) and c from the cache (0). */
static lr_err reserve_run(fixture *f, const char *run, char gens[3][LR_UUID_LEN + 1], int total,
                          const char *owner, const char *hash, int *balance, lr_key_holder *h)
{
    char ts[32], lease[32];
    lr_time_iso(lr_now_ms(), ts);
    lr_time_iso(lr_now_ms() - 60000, lease); /* a dead process's */
    for (int i = 0; i < 3; i++)
        lr_uuid_v4(gens[i]);
    json_t *urls = json_pack("[s]", "https://cdn.example/c.png");
    lr_run_node_req nodes[3] = {
        {.generation_id = gens[0],
         .node_id = "a",
         .type = "text",
         .model = "anthropic_text",
         .provider = "mock",
         .prompt = "hi",
         .outputs_count = 1,
         .cost = 10,
         .cache_key = "ka"},
        {.generation_id = gens[1],
         .node_id = "b",
         .type = "photo",
         .model = "seedream_image",
         .provider = "mock",
         .outputs_count = 2,
         .cost = 20,
         .cache_key = "kb"},
        {.generation_id = gens[2],
         .node_id = "c",
         .type = "photo",
         .model = "seedream_image",
         .provider = "mock",
         .prompt = "c",
         .outputs_count = 1,
         .cost = 0,
         .cache_key = "kc",
         .cached_from = gens[0],
         .result_urls = urls},
    };
    json_t *graph = json_pack("{s:[]}", "nodes"), *meta = json_pack("{s:s}", "run_id", run);
    lr_run_reserve_req r = {.run_id = run,
                            .user_id = f->user,
                            .graph = graph,
                            .charge_meta = meta,
                            .nodes = nodes,
                            .n = 3,
                            .total = total,
                            .created_at = ts,
                            .owner = owner,
                            .lease_until = lease,
                            .idempotency_key = hash ? "run-key" : NULL,
                            .request_hash = hash};
    lr_err e = f->db->ops->reserve_run(f->db, &r, balance, h);
    json_decref(urls);
    json_decref(graph);
    json_decref(meta);
    return e;
}

static void test_run_charged_once_nodes_refunded_once_and_left_to_their_run(void **state)
{
    fixture *f = *state;
    grant(f, 100, NULL);
    char run[LR_UUID_LEN + 1], again[LR_UUID_LEN + 1], gens[3][LR_UUID_LEN + 1], more[3][37];
    char owner[LR_UUID_LEN + 1], rival[LR_UUID_LEN + 1], until[32];
    lr_uuid_v4(run);
    lr_uuid_v4(again);
    lr_uuid_v4(owner);
    lr_uuid_v4(rival);
    lr_time_iso(lr_now_ms() + 60000, until);
    int balance;
    lr_key_holder h = {0};
    assert_int_equal(reserve_run(f, run, gens, 30, owner, "h1", &balance, &h), LR_OK);
    assert_int_equal(balance, 70);
    /* the key answers with its run, same body or not; nothing charged */
    assert_int_equal(reserve_run(f, again, more, 30, owner, "h1", &balance, &h), LR_ERR_CONFLICT);
    assert_string_equal(h.generation_id, run);
    assert_true(h.same_request);
    assert_int_equal(reserve_run(f, again, more, 30, owner, "h2", &balance, &h), LR_ERR_CONFLICT);
    assert_false(h.same_request);
    assert_int_equal(balance_of(f), 70);
    lr_run r;
    assert_int_equal(f->db->ops->get_run(f->db, f->user, again, &r), LR_ERR_NOT_FOUND);
    assert_int_equal(f->db->ops->get_run(f->db, rival, run, &r), LR_ERR_NOT_FOUND);
    assert_int_equal(f->db->ops->get_run(f->db, f->user, run, &r), LR_OK);
    assert_string_equal(r.status, "running");
    assert_int_equal(r.quoted, 30);
    lr_run_clear(&r);

    lr_run_node_list nodes;
    assert_int_equal(f->db->ops->list_run_nodes(f->db, run, &nodes), LR_OK);
    assert_int_equal(nodes.n, 3);
    for (size_t i = 0; i < nodes.n; i++) {
        const lr_run_node *n = &nodes.v[i];
        if (!strcmp(n->node_id, "c")) {
            assert_string_equal(n->status, "success");
            assert_string_equal(n->cached_from, gens[0]);
            assert_int_equal(n->result_urls.n, 1);
            assert_int_equal(n->run_cost, 0);
        } else {
            assert_string_equal(n->status, "pending");
            assert_null(n->cached_from);
            assert_int_equal(n->run_cost, !strcmp(n->node_id, "a") ? 10 : 20);
        }
    }
    lr_run_node_list_clear(&nodes);

    /* a started node, at the provider, of a run whose process died: the
     * generic reaper and claimer leave it (and the pending one) alone */
    assert_int_equal(f->db->ops->start_node(f->db, gens[0], "hi", NULL), LR_OK);
    assert_int_equal(f->db->ops->start_node(f->db, gens[0], "hi", NULL), LR_ERR_CONFLICT);
    char *task_v[] = {"task-1"};
    lr_strv tasks = {task_v, 1};
    assert_int_equal(f->db->ops->set_stage(f->db, gens[0], "processing", "submitted", &tasks),
                     LR_OK);
    lr_generation_list claimed;
    assert_int_equal(f->db->ops->claim_resumable(f->db, rival, until, 100000, true, &claimed),
                     LR_OK);
    for (size_t i = 0; i < claimed.n; i++)
        assert_string_not_equal(claimed.v[i].id, gens[0]);
    lr_generation_list_clear(&claimed);
    lr_reaped_list reaped;
    assert_int_equal(f->db->ops->reap_expired(f->db, rival, 100000, true, &reaped), LR_OK);
    for (size_t i = 0; i < reaped.n; i++)
        assert_string_not_equal(reaped.v[i].id, gens[1]);
    lr_reaped_list_clear(&reaped);
    /* the run is claimed once, with its nodes */
    lr_strv ids;
    assert_int_equal(f->db->ops->claim_runs(f->db, rival, until, 100000, true, &ids), LR_OK);
    bool mine = false;
    for (size_t i = 0; i < ids.n; i++)
        mine |= !strcmp(ids.v[i], run);
    assert_true(mine);
    lr_strv_clear(&ids);
    assert_int_equal(f->db->ops->claim_runs(f->db, owner, until, 100000, true, &ids), LR_OK);
    for (size_t i = 0; i < ids.n; i++)
        assert_string_not_equal(ids.v[i], run);
    lr_strv_clear(&ids);

    /* the cache finds the node that succeeded, for its user only */
    lr_run_node hit = {0};
    assert_int_equal(f->db->ops->find_cached(f->db, f->user, "kc", NULL, &hit), LR_OK);
    assert_string_equal(hit.generation_id, gens[2]);
    lr_run_node_clear(&hit);
    assert_int_equal(f->db->ops->find_cached(f->db, f->user, "kc", again, &hit), LR_ERR_NOT_FOUND);
    assert_int_equal(f->db->ops->find_cached(f->db, rival, "kc", NULL, &hit), LR_ERR_NOT_FOUND);
    assert_int_equal(f->db->ops->find_cached(f->db, f->user, "kb", NULL, &hit), LR_ERR_NOT_FOUND);

    /* a fails, b below it is refunded without running; each once */
    lr_settle_req fa = {.generation_id = gens[0],
                        .status = "failed",
                        .failed_count = 1,
                        .refund = 10,
                        .error_code = "provider_failed"};
    lr_settle_req fb = {.generation_id = gens[1],
                        .status = "failed",
                        .failed_count = 2,
                        .refund = 20,
                        .error_code = "upstream_failed"};
    assert_int_equal(f->db->ops->settle(f->db, &fa, &balance), LR_OK);
    assert_int_equal(f->db->ops->settle(f->db, &fb, &balance), LR_OK);
    assert_int_equal(f->db->ops->settle(f->db, &fb, &balance), LR_ERR_CONFLICT);
    assert_int_equal(balance_of(f), 100);
    assert_int_equal(ledger_rows(f, gens[0], "refund"), 1);
    assert_int_equal(ledger_rows(f, gens[1], "refund"), 1);
    assert_int_equal(ledger_rows(f, gens[0], "generation"), 0);
    assert_int_equal(f->db->ops->finish_run(f->db, run, "failed", "a", "provider_failed", "x"),
                     LR_OK);
    assert_int_equal(f->db->ops->finish_run(f->db, run, "success", NULL, NULL, NULL),
                     LR_ERR_CONFLICT);
    assert_int_equal(f->db->ops->get_run(f->db, NULL, run, &r), LR_OK);
    assert_string_equal(r.status, "failed");
    assert_string_equal(r.error_node, "a");
    lr_run_clear(&r);
    /* short (no key): nothing written */
    lr_uuid_v4(again);
    assert_int_equal(reserve_run(f, again, more, 1000, owner, NULL, &balance, &h),
                     LR_ERR_INSUFFICIENT);
    assert_int_equal(balance, 100);
    assert_int_equal(f->db->ops->get_run(f->db, NULL, again, &r), LR_ERR_NOT_FOUND);
    assert_ledger_consistent(f);
    assert_audit_sound(f);
}

typedef struct {
    fixture *f;
    int ok, short_;
} worker_arg;

static void *spend(void *p)
{
    worker_arg *a = p;
    for (int i = 0; i < 100; i++) {
        char id[LR_UUID_LEN + 1];
        int balance;
        lr_err e = reserve(a->f, id, 3, &balance);
        if (e == LR_OK)
            a->ok++;
        else if (e == LR_ERR_INSUFFICIENT)
            a->short_++;
    }
    return NULL;
}

static void test_concurrent_reserves_never_overspend(void **state)
{
    fixture *f = *state;
    grant(f, 600, NULL); /* 200 reservations of 3 */
    pthread_t t[4];
    worker_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (worker_arg){f, 0, 0};
        pthread_create(&t[i], NULL, spend, &a[i]);
    }
    int ok = 0, short_ = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        ok += a[i].ok;
        short_ += a[i].short_;
    }
    assert_int_equal(ok, 200);
    assert_int_equal(short_, 200);
    assert_int_equal(balance_of(f), 0);
    assert_ledger_consistent(f);
    assert_audit_sound(f);
}

/* One caller of the mixed-batch test: a user of its own (rich ones hold
 * ROUNDS x 8 credits, broke ones 4), ROUNDS reservations of 8, each
 * settled; rich callers settle every other one as failed (refund) and
 * then once more (already final). key callers race one Idempotency-Key
 * of a shared user. Results are counted here and asserted by the main
 * thread (cmocka asserts only there). */
enum { MIX_CALLERS = 24, MIX_ROUNDS = 12 };

typedef struct {
    fixture f; /* f.user is this caller's */
    pthread_barrier_t *start;
    bool rich, key;
    int ok, short_, wrong_balance, settled, refused_twice, held, errors;
    char won[LR_UUID_LEN + 1];
} mix_caller;

static void mix_settle(mix_caller *c, const char *id, int round)
{
    bool fail = round % 2;
    lr_settle_req s = {.generation_id = id,
                       .user_id = c->f.user,
                       .status = fail ? "failed" : "success",
                       .succeeded_count = !fail,
                       .failed_count = fail,
                       .refund = fail ? 8 : 0,
                       .error_code = fail ? "provider_failed" : NULL};
    int balance;
    c->settled += c->f.db->ops->settle(c->f.db, &s, &balance) == LR_OK;
    c->refused_twice += c->f.db->ops->settle(c->f.db, &s, &balance) == LR_ERR_CONFLICT;
}

static void *mix_call(void *p)
{
    mix_caller *c = p;
    pthread_barrier_wait(c->start);
    for (int round = 0; round < MIX_ROUNDS; round++) {
        char id[LR_UUID_LEN + 1];
        int balance = -1;
        lr_key_holder h = {0};
        lr_err e = reserve_with(
            &c->f, &(reservation){.cost = 8, .key = c->key ? "shared" : NULL, .hash = "h"}, id,
            &balance, &h);
        if (e == LR_OK) {
            c->ok++;
            if (c->key)
                memcpy(c->won, id, sizeof c->won);
            else
                mix_settle(c, id, round);
        } else if (e == LR_ERR_INSUFFICIENT) {
            c->short_++;
            c->wrong_balance += balance != 4;
        } else if (e == LR_ERR_CONFLICT && h.same_request) {
            c->held++;
        } else {
            c->errors++;
        }
    }
    return NULL;
}

/* Many callers at once, so the writer batches them: a short balance, a
 * taken key or a settle of a final generation answers that caller alone
 * and never fails the others in its transaction. */
static void test_mixed_batches_answer_each_caller(void **state)
{
    fixture *f = *state;
    static mix_caller c[MIX_CALLERS];
    pthread_t t[MIX_CALLERS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, MIX_CALLERS);
    char key_user[LR_UUID_LEN + 1];
    lr_uuid_v4(key_user);
    for (int i = 0; i < MIX_CALLERS; i++) {
        c[i] = (mix_caller){.f = *f, .start = &start, .rich = i % 3 == 0, .key = i % 3 == 1};
        if (c[i].key)
            memcpy(c[i].f.user, key_user, sizeof key_user);
        else
            lr_uuid_v4(c[i].f.user);
        if (!c[i].key)
            grant(&c[i].f, c[i].rich ? MIX_ROUNDS * 8 : 4, NULL);
    }
    mix_caller *any_key = &c[1];
    grant(&any_key->f, 8 * MIX_ROUNDS, NULL);
    for (int i = 0; i < MIX_CALLERS; i++)
        pthread_create(&t[i], NULL, mix_call, &c[i]);
    int key_ok = 0, key_held = 0;
    for (int i = 0; i < MIX_CALLERS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(c[i].errors, 0);
        if (c[i].key) {
            key_ok += c[i].ok;
            key_held += c[i].held;
            continue;
        }
        assert_int_equal(c[i].ok, c[i].rich ? MIX_ROUNDS : 0);
        assert_int_equal(c[i].short_, c[i].rich ? 0 : MIX_ROUNDS);
        assert_int_equal(c[i].wrong_balance, 0);
        assert_int_equal(c[i].settled, c[i].ok);
        assert_int_equal(c[i].refused_twice, c[i].ok);
        /* half the rounds failed and were refunded */
        assert_int_equal(balance_of(&c[i].f), c[i].rich ? MIX_ROUNDS / 2 * 8 : 4);
        assert_ledger_consistent(&c[i].f);
    }
    pthread_barrier_destroy(&start);
    /* one generation holds the shared key; every other try was told so */
    assert_int_equal(key_ok, 1);
    assert_int_equal(key_held, (MIX_CALLERS / 3) * MIX_ROUNDS - 1);
    assert_int_equal(balance_of(&any_key->f), 8 * MIX_ROUNDS - 8);
    assert_ledger_consistent(&any_key->f);
    assert_audit_sound(f);
}

/* Callers that never pause: the writer commits while the checkpoint
 * thread copies, so that copy alone never catches up with the WAL's end.
 * The WAL must still start over from its beginning (the writer copies
 * the tail), or it grows for as long as the load lasts: its file's size
 * is the most it ever held. */
enum { STEADY_CALLERS = 16, STEADY_ROUNDS = 300, WAL_FRAME = 24 + 4096 };

typedef struct {
    fixture f;
    int errors;
} steady_caller;

static void *steady_call(void *p)
{
    steady_caller *c = p;
    for (int round = 0; round < STEADY_ROUNDS; round++) {
        char id[LR_UUID_LEN + 1];
        int balance;
        if (reserve_with(&c->f, &(reservation){.cost = 1}, id, &balance, NULL) != LR_OK) {
            c->errors++;
            continue;
        }
        lr_settle_req s = {
            .generation_id = id, .user_id = c->f.user, .status = "success", .succeeded_count = 1};
        c->errors += c->f.db->ops->settle(c->f.db, &s, &balance) != LR_OK;
    }
    return NULL;
}

static void test_wal_starts_over_under_steady_writes(void **state)
{
    fixture *f = *state;
    if (!f->path[0])
        skip(); /* PostgreSQL: its own WAL */
    static steady_caller c[STEADY_CALLERS];
    pthread_t t[STEADY_CALLERS];
    for (int i = 0; i < STEADY_CALLERS; i++) {
        c[i] = (steady_caller){.f = *f};
        lr_uuid_v4(c[i].f.user);
        grant(&c[i].f, STEADY_ROUNDS, NULL);
    }
    for (int i = 0; i < STEADY_CALLERS; i++)
        pthread_create(&t[i], NULL, steady_call, &c[i]);
    for (int i = 0; i < STEADY_CALLERS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(c[i].errors, 0);
        assert_int_equal(balance_of(&c[i].f), 0);
    }
    char wal[96];
    snprintf(wal, sizeof wal, "%s-wal", f->path);
    struct stat st;
    assert_int_equal(stat(wal, &st), 0);
    /* 9,600 writes put tens of thousands of frames through it */
    assert_true(st.st_size < 4000 * WAL_FRAME);
    assert_audit_sound(f);
}

/* Posted reserves and settles (lr_db_reserve_async / settle_async), all in
 * flight at once from one thread: each is answered exactly once, with its
 * own result, and the money is what the blocking calls would have left. */
#define POSTED 40

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int answered;
    lr_err e[POSTED];
    int calls[POSTED];
} posted_answers;

typedef struct {
    posted_answers *a;
    int i;
} posted_slot;

static void posted_done(void *ctx, lr_err e)
{
    posted_slot *s = ctx;
    pthread_mutex_lock(&s->a->mu);
    s->a->e[s->i] = e;
    s->a->calls[s->i]++;
    s->a->answered++;
    pthread_cond_signal(&s->a->cv);
    pthread_mutex_unlock(&s->a->mu);
}

static void posted_wait(posted_answers *a, int n)
{
    pthread_mutex_lock(&a->mu);
    while (a->answered < n)
        pthread_cond_wait(&a->cv, &a->mu);
    pthread_mutex_unlock(&a->mu);
}

static void test_posted_writes_answer_each_caller_once(void **state)
{
    fixture *f = *state;
    grant(f, 8 * (POSTED / 2), NULL); /* enough for half of them */
    static posted_answers a;
    a = (posted_answers){.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    static posted_slot slot[POSTED];
    static char ids[POSTED][LR_UUID_LEN + 1], ts[32], lease[32], owner[LR_UUID_LEN + 1];
    static lr_reserve_req r[POSTED];
    static lr_key_holder holder[POSTED];
    static int balance[POSTED];
    lr_time_iso(lr_now_ms(), ts);
    lr_time_iso(lr_now_ms() + 3600 * 1000, lease);
    lr_uuid_v4(owner);
    for (int i = 0; i < POSTED; i++) {
        lr_uuid_v4(ids[i]);
        slot[i] = (posted_slot){&a, i};
        r[i] = (lr_reserve_req){.generation_id = ids[i],
                                .user_id = f->user,
                                .type = "photo",
                                .model = "seedream_image",
                                .provider = "mock",
                                .prompt = "a red fox",
                                .outputs_count = 1,
                                .cost = 8,
                                .created_at = ts,
                                .owner = owner,
                                .lease_until = lease};
        lr_db_reserve_async(f->db, &r[i], &balance[i], &holder[i], posted_done, &slot[i]);
    }
    posted_wait(&a, POSTED);
    int ok = 0, short_ = 0;
    for (int i = 0; i < POSTED; i++) {
        assert_int_equal(a.calls[i], 1);
        ok += a.e[i] == LR_OK;
        short_ += a.e[i] == LR_ERR_INSUFFICIENT;
    }
    assert_int_equal(ok, POSTED / 2);
    assert_int_equal(short_, POSTED / 2);
    assert_int_equal(balance_of(f), 0);

    /* settle every charged one as failed, twice: one refund each */
    static lr_settle_req q[POSTED];
    a.answered = 0;
    int n = 0;
    for (int i = 0; i < POSTED; i++) {
        if (a.e[i] != LR_OK)
            continue;
        a.calls[i] = 0;
        q[i] = (lr_settle_req){.generation_id = ids[i],
                               .user_id = f->user,
                               .status = "failed",
                               .failed_count = 1,
                               .refund = 8,
                               .error_code = "provider_failed",
                               .error_message = "no"};
        lr_db_settle_async(f->db, &q[i], &balance[i], posted_done, &slot[i]);
        n++;
    }
    posted_wait(&a, n);
    for (int i = 0; i < POSTED; i++) {
        if (q[i].generation_id) {
            assert_int_equal(a.calls[i], 1);
            assert_int_equal(a.e[i], LR_OK);
        }
    }
    assert_int_equal(balance_of(f), 8 * (POSTED / 2));
    int again = 0, first = 0;
    while (!q[first].generation_id)
        first++;
    assert_int_equal(f->db->ops->settle(f->db, &q[first], &again), LR_ERR_CONFLICT);
    assert_ledger_consistent(f);
    assert_audit_sound(f);
}

/* A text generation's reservation for the posted tests: every string it
 * points to must outlive the call's answer. */
static lr_reserve_req text_reservation(const char *id, const char *user, int cost, const char *ts,
                                       const char *owner, const char *lease)
{
    return (lr_reserve_req){.generation_id = id,
                            .user_id = user,
                            .type = "text",
                            .model = "anthropic_text",
                            .provider = "mock",
                            .prompt = "p",
                            .outputs_count = 1,
                            .cost = cost,
                            .created_at = ts,
                            .owner = owner,
                            .lease_until = lease};
}

/* Reserves of several users posted at once from one thread, so they meet
 * in the writer's batches: one user's short balance refuses that user's
 * calls alone, a user's calls are taken in the order they came while the
 * balance lasts (a cheaper one after a refused one still fits), a key
 * taken earlier in the batch answers the later calls, and the balances
 * the answers carry are those after each call. Then settles of the same
 * users, one generation twice, likewise posted together. */
enum { MB_USERS = 5, MB_CALLS = 14 };

static void test_posted_batch_mixes_users_in_order(void **state)
{
    fixture *f = *state;
    static fixture u[MB_USERS]; /* A 24 credits, B 4, C none, D 10, E 100 */
    const int granted[MB_USERS] = {24, 4, 0, 10, 100};
    for (int i = 0; i < MB_USERS; i++) {
        u[i] = *f;
        lr_uuid_v4(u[i].user);
        if (granted[i])
            grant(&u[i], granted[i], NULL);
    }
    /* in posting order: user, cost, key hash (E's calls share one key) */
    static const struct {
        int user, cost;
        const char *hash;
        lr_err want;
        int balance;
    } call[MB_CALLS] = {
        {0, 8, NULL, LR_OK, 16},
        {1, 8, NULL, LR_ERR_INSUFFICIENT, 4},
        {3, 8, NULL, LR_OK, 2},
        {0, 8, NULL, LR_OK, 8},
        {4, 5, "h", LR_OK, 95},
        {2, 1, NULL, LR_ERR_INSUFFICIENT, 0},
        {0, 8, NULL, LR_OK, 0},
        {3, 4, NULL, LR_ERR_INSUFFICIENT, 2},
        {1, 8, NULL, LR_ERR_INSUFFICIENT, 4},
        {4, 5, "h", LR_ERR_CONFLICT, 0},
        {0, 8, NULL, LR_ERR_INSUFFICIENT, 0},
        {3, 2, NULL, LR_OK, 0},
        {4, 5, "h2", LR_ERR_CONFLICT, 0},
        {0, 8, NULL, LR_ERR_INSUFFICIENT, 0},
    };
    static posted_answers a;
    a = (posted_answers){.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    static posted_slot slot[MB_CALLS];
    static char ids[MB_CALLS][LR_UUID_LEN + 1], ts[32], lease[32], expired[32],
        owner[LR_UUID_LEN + 1];
    static lr_reserve_req r[MB_CALLS];
    static lr_key_holder holder[MB_CALLS];
    static int balance[MB_CALLS];
    lr_time_iso(lr_now_ms(), ts);
    lr_time_iso(lr_now_ms() + 3600 * 1000, lease);
    lr_time_iso(lr_now_ms() - 24 * 3600 * 1000, expired);
    lr_uuid_v4(owner);
    for (int i = 0; i < MB_CALLS; i++) {
        lr_uuid_v4(ids[i]);
        slot[i] = (posted_slot){&a, i};
        r[i] = text_reservation(ids[i], u[call[i].user].user, call[i].cost, ts, owner, lease);
        r[i].idempotency_key = call[i].hash ? "k" : NULL;
        r[i].request_hash = call[i].hash;
        r[i].key_expired_before = expired;
        balance[i] = -1;
        lr_db_reserve_async(f->db, &r[i], &balance[i], &holder[i], posted_done, &slot[i]);
    }
    posted_wait(&a, MB_CALLS);
    for (int i = 0; i < MB_CALLS; i++) {
        assert_int_equal(a.calls[i], 1);
        if (a.e[i] != call[i].want)
            fail_msg("call %d: %s, wanted %s", i, lr_strerror(a.e[i]), lr_strerror(call[i].want));
        if (a.e[i] != LR_ERR_CONFLICT)
            assert_int_equal(balance[i], call[i].balance);
    }
    /* E's second call is the same request as its first, the third not */
    assert_string_equal(holder[9].generation_id, ids[4]);
    assert_true(holder[9].same_request);
    assert_string_equal(holder[12].generation_id, ids[4]);
    assert_false(holder[12].same_request);
    const int left[MB_USERS] = {0, 4, 0, 0, 95};
    for (int i = 0; i < MB_USERS; i++)
        assert_int_equal(balance_of(&u[i]), left[i]);

    /* A's first fails (refund 8) and is settled twice; the rest succeed */
    static const int settle[] = {0, 3, 6, 2, 11, 0};
    enum { MB_SETTLES = sizeof settle / sizeof *settle };
    static lr_settle_req q[MB_SETTLES];
    a.answered = 0;
    for (int i = 0; i < MB_SETTLES; i++) {
        int c = settle[i];
        bool fail = c == 0;
        q[i] = (lr_settle_req){.generation_id = ids[c],
                               .user_id = u[call[c].user].user,
                               .status = fail ? "failed" : "success",
                               .succeeded_count = !fail,
                               .failed_count = fail,
                               .refund = fail ? 8 : 0,
                               .error_code = fail ? "provider_failed" : NULL,
                               .text = fail ? NULL : "answer"};
        slot[i] = (posted_slot){&a, i};
        a.calls[i] = 0;
        balance[i] = -1;
        lr_db_settle_async(f->db, &q[i], &balance[i], posted_done, &slot[i]);
    }
    posted_wait(&a, MB_SETTLES);
    const int settled_balance[MB_SETTLES] = {8, 8, 8, 0, 0};
    for (int i = 0; i < MB_SETTLES - 1; i++) {
        assert_int_equal(a.calls[i], 1);
        assert_int_equal(a.e[i], LR_OK);
        assert_int_equal(balance[i], settled_balance[i]);
    }
    assert_int_equal(a.e[MB_SETTLES - 1], LR_ERR_CONFLICT); /* already final */
    const int end[MB_USERS] = {8, 4, 0, 0, 95};
    for (int i = 0; i < MB_USERS; i++) {
        assert_int_equal(balance_of(&u[i]), end[i]);
        assert_ledger_consistent(&u[i]);
    }
    assert_int_equal(ledger_rows(&u[0], ids[0], "refund"), 1);
    lr_generation g;
    assert_int_equal(f->db->ops->get_generation(f->db, NULL, ids[3], &g), LR_OK);
    assert_string_equal(g.status, "success");
    lr_generation_clear(&g);
    assert_audit_sound(f);
}

/* PostgreSQL only (NULL elsewhere): user's balance row locked by a
 * connection of the test's own, in an open transaction, until
 * release_balance. A writer batch that moves that balance waits for it, so
 * the calls posted meanwhile queue up and meet in the batch after. */
static PGconn *hold_balance(const char *user)
{
    const char *url = getenv("LR_TEST_DB_URL");
    if (!url || !lr_db_url_is_postgres(url))
        return NULL;
    PGconn *c = PQconnectdb(url);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PGresult *r = PQexec(c, "BEGIN");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    const char *p[] = {user};
    r = PQexecParams(c, "SELECT 1 FROM public.credits WHERE user_id = $1 FOR UPDATE", 1, NULL, p,
                     NULL, NULL, 0);
    assert_int_equal(PQntuples(r), 1);
    PQclear(r);
    return c;
}

/* Returns once a backend of this database waits for a lock in
 * lensroom.reserve (the writer's batch, stopped by hold_balance). */
static void wait_for_blocked_reserve(PGconn *c)
{
    for (;;) {
        PGresult *r = PQexec(c, "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                "current_database() AND wait_event_type = 'Lock' "
                                "AND query LIKE '%lensroom.reserve%'");
        assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
        bool blocked = atoi(PQgetvalue(r, 0, 0)) > 0;
        PQclear(r);
        if (blocked)
            return;
        usleep(2000); /* polling what PostgreSQL shows, not a wait for an event */
    }
}

static void release_balance(PGconn *c)
{
    PGresult *r = PQexec(c, "COMMIT");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    PQfinish(c);
}

/* A refund and the same user's next reserve posted back to back: the
 * reserve sees the refunded credits, as it would had each call been its
 * own transaction. PostgreSQL's set-based batch decides reserves before
 * settles; the refund must not come too late for a reserve that came
 * after it. On PostgreSQL each round makes the two share one batch: a
 * reserve of another user goes first and waits on that user's balance row,
 * locked by the test, while the two queue behind it. Ten rounds, each
 * with a balance that covers exactly one generation. */
static void test_reserve_after_refund_in_one_batch(void **state)
{
    fixture *f = *state;
    enum { ROUNDS = 10 };
    grant(f, 8, NULL);
    static fixture other;
    other = *f;
    lr_uuid_v4(other.user);
    grant(&other, 1000, NULL);
    static posted_answers a;
    static posted_slot slot[3];
    static char failed[LR_UUID_LEN + 1], next[LR_UUID_LEN + 1], blocker[LR_UUID_LEN + 1], ts[32],
        lease[32], owner[LR_UUID_LEN + 1];
    static lr_settle_req q;
    static lr_reserve_req r, blocked;
    static lr_key_holder holder, blocker_holder;
    static int balance[3];
    int b = -1;
    assert_int_equal(reserve(f, failed, 8, &b), LR_OK);
    for (int round = 0; round < ROUNDS; round++) {
        a = (posted_answers){.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
        slot[0] = (posted_slot){&a, 0};
        slot[1] = (posted_slot){&a, 1};
        q = (lr_settle_req){.generation_id = failed,
                            .user_id = f->user,
                            .status = "failed",
                            .failed_count = 1,
                            .refund = 8,
                            .error_code = "provider_failed"};
        lr_uuid_v4(next);
        lr_uuid_v4(owner);
        lr_time_iso(lr_now_ms(), ts);
        lr_time_iso(lr_now_ms() + 3600 * 1000, lease);
        r = text_reservation(next, f->user, 8, ts, owner, lease);
        balance[0] = balance[1] = balance[2] = -1;
        PGconn *hold = hold_balance(other.user);
        if (hold) {
            slot[2] = (posted_slot){&a, 2};
            lr_uuid_v4(blocker);
            blocked = text_reservation(blocker, other.user, 1, ts, owner, lease);
            lr_db_reserve_async(f->db, &blocked, &balance[2], &blocker_holder, posted_done,
                                &slot[2]);
            wait_for_blocked_reserve(hold);
        }
        lr_db_settle_async(f->db, &q, &balance[0], posted_done, &slot[0]);
        lr_db_reserve_async(f->db, &r, &balance[1], &holder, posted_done, &slot[1]);
        if (hold)
            release_balance(hold);
        posted_wait(&a, hold ? 3 : 2);
        if (hold)
            assert_int_equal(a.e[2], LR_OK);
        if (a.e[0] != LR_OK || a.e[1] != LR_OK)
            fail_msg("round %d: refund %s, reserve after it %s", round, lr_strerror(a.e[0]),
                     lr_strerror(a.e[1]));
        assert_int_equal(balance[0], 8);
        assert_int_equal(balance[1], 0);
        memcpy(failed, next, sizeof next); /* the next round refunds this one */
    }
    assert_int_equal(balance_of(f), 0);
    assert_ledger_consistent(f);
    assert_audit_sound(f);
}

/* A batch whose set-based statement raises (here: two reserves with one
 * generation id, a primary key violation) is rolled back and run again one
 * call per transaction: the other callers of the batch are answered as if
 * nothing happened, the duplicate alone fails, and no credit moves for it. */
static void test_failed_batch_is_rerun_call_by_call(void **state)
{
    fixture *f = *state;
    enum { CALLS = 6 };
    static fixture u[2];
    for (int i = 0; i < 2; i++) {
        u[i] = *f;
        lr_uuid_v4(u[i].user);
        grant(&u[i], 100, NULL);
    }
    static posted_answers a;
    a = (posted_answers){.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    static posted_slot slot[CALLS];
    static char ids[CALLS][LR_UUID_LEN + 1], ts[32], lease[32], owner[LR_UUID_LEN + 1];
    static lr_reserve_req r[CALLS];
    static lr_key_holder holder[CALLS];
    static int balance[CALLS];
    lr_time_iso(lr_now_ms(), ts);
    lr_time_iso(lr_now_ms() + 3600 * 1000, lease);
    lr_uuid_v4(owner);
    for (int i = 0; i < CALLS; i++) {
        if (i == 3)
            memcpy(ids[i], ids[1], sizeof ids[i]); /* the duplicate */
        else
            lr_uuid_v4(ids[i]);
        slot[i] = (posted_slot){&a, i};
        r[i] = text_reservation(ids[i], u[i % 2].user, 10, ts, owner, lease);
        lr_db_reserve_async(f->db, &r[i], &balance[i], &holder[i], posted_done, &slot[i]);
    }
    posted_wait(&a, CALLS);
    for (int i = 0; i < CALLS; i++) {
        assert_int_equal(a.calls[i], 1);
        if (i == 3)
            assert_int_not_equal(a.e[i], LR_OK);
        else
            assert_int_equal(a.e[i], LR_OK);
    }
    assert_int_equal(balance_of(&u[0]), 70); /* calls 0, 2, 4 */
    assert_int_equal(balance_of(&u[1]), 80); /* calls 1, 5; 3 failed */
    for (int i = 0; i < 2; i++)
        assert_ledger_consistent(&u[i]);
    assert_int_equal(ledger_rows(&u[1], ids[1], "generation"), 1);
    assert_audit_sound(f);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_reserve_short_changes_nothing),
        T(test_settle_failed_refunds_exactly_once),
        T(test_settle_success_charges_once_and_reads_back_typed),
        T(test_grant_idempotent_by_key_and_never_negative),
        T(test_reserve_idempotent_by_key),
        T(test_lists_are_newest_first_in_keyset_pages),
        T(test_delete_hides_and_queues_objects),
        T(test_expired_work_is_reaped_or_claimed_once),
        T(test_live_heartbeat_keeps_expired_work),
        T(test_ended_heartbeat_hands_over_leased_work),
        T(test_concurrent_reserves_never_overspend),
        T(test_mixed_batches_answer_each_caller),
        T(test_posted_writes_answer_each_caller_once),
        T(test_posted_batch_mixes_users_in_order),
        T(test_failed_batch_is_rerun_call_by_call),
        T(test_reserve_after_refund_in_one_batch),
        T(test_wal_starts_over_under_steady_writes),
        T(test_run_charged_once_nodes_refunded_once_and_left_to_their_run),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
