/* The money rules on the SQLite backend: reserve is all-or-nothing, the
 * balance never goes negative under concurrency, settle refunds once, and
 * grants are idempotent by key. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "db/db.h"

static const char USER[] = "3f1c2a9e-8a4b-4c1d-9e2f-0a1b2c3d4e5f";

typedef struct {
    char path[64];
    lr_db *db;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->path, sizeof f->path, "/tmp/lr-ledger-%d-%ld.db", getpid(), random());
    assert_int_equal(lr_db_sqlite_open(f->path, 4, &f->db, NULL), LR_OK);
    assert_int_equal(f->db->ops->migrate(f->db), LR_OK);
    assert_int_equal(f->db->ops->migrate(f->db), LR_OK); /* idempotent */
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    lr_db_close(f->db);
    char p[96];
    unlink(f->path);
    snprintf(p, sizeof p, "%s-wal", f->path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", f->path);
    unlink(p);
    free(f);
    return 0;
}

static void grant(lr_db *db, int amount, const char *key)
{
    lr_adjust_req r = {.user_id = USER, .amount = amount, .type = "bonus", .idempotency_key = key};
    lr_adjust_result res;
    assert_int_equal(db->ops->adjust(db, &r, &res), LR_OK);
}

static lr_err reserve(lr_db *db, char id[LR_UUID_LEN + 1], int cost, int *balance)
{
    lr_uuid_v4(id);
    char ts[32];
    lr_time_iso(lr_now_ms(), ts);
    lr_reserve_req r = {.generation_id = id, .user_id = USER, .type = "photo",
                        .model = "seedream_image", .provider = "mock", .prompt = "p",
                        .outputs_count = 1, .cost = cost, .created_at = ts};
    lr_key_holder holder;
    return db->ops->reserve(db, &r, balance, &holder);
}

/* Sum of ledger rows must equal the balance. */
static void assert_ledger_consistent(lr_db *db)
{
    json_t *rows = NULL;
    assert_int_equal(db->ops->list_transactions(db, USER, NULL, NULL, 100000, &rows), LR_OK);
    long sum = 0;
    size_t i;
    json_t *t;
    json_array_foreach(rows, i, t) sum += json_integer_value(json_object_get(t, "amount"));
    json_decref(rows);
    int balance;
    assert_int_equal(db->ops->balance(db, USER, &balance), LR_OK);
    assert_int_equal(sum, balance);
    assert_true(balance >= 0);
}

static void test_reserve_short_changes_nothing(void **state)
{
    fixture *f = *state;
    char id[LR_UUID_LEN + 1];
    int balance = -1;
    assert_int_equal(reserve(f->db, id, 8, &balance), LR_ERR_INSUFFICIENT);
    assert_int_equal(balance, 0);
    grant(f->db, 5, NULL);
    assert_int_equal(reserve(f->db, id, 8, &balance), LR_ERR_INSUFFICIENT);
    assert_int_equal(balance, 5);
    json_t *g = NULL;
    assert_int_equal(f->db->ops->get_generation(f->db, NULL, id, &g), LR_ERR_NOT_FOUND);
    assert_ledger_consistent(f->db);
}

static void test_settle_failed_refunds_exactly_once(void **state)
{
    fixture *f = *state;
    grant(f->db, 20, NULL);
    char id[LR_UUID_LEN + 1];
    int balance;
    assert_int_equal(reserve(f->db, id, 8, &balance), LR_OK);
    assert_int_equal(balance, 12);
    lr_settle_req s = {.generation_id = id, .status = "failed", .failed_count = 1, .refund = 8,
                       .error_code = "provider_failed", .error_message = "boom"};
    assert_int_equal(f->db->ops->settle(f->db, &s, &balance), LR_OK);
    assert_int_equal(balance, 20);
    assert_int_equal(f->db->ops->settle(f->db, &s, &balance), LR_ERR_CONFLICT);
    assert_int_equal(f->db->ops->balance(f->db, USER, &balance), LR_OK);
    assert_int_equal(balance, 20);
    json_t *g = NULL;
    assert_int_equal(f->db->ops->get_generation(f->db, USER, id, &g), LR_OK);
    assert_string_equal(json_string_value(json_object_get(g, "status")), "failed");
    assert_int_equal(json_integer_value(json_object_get(g, "creditsUsed")), 0);
    json_decref(g);
    /* another user's id lookup is not found */
    assert_int_equal(f->db->ops->get_generation(f->db, "00000000-0000-4000-8000-000000000000", id,
                                                &g),
                     LR_ERR_NOT_FOUND);
    assert_ledger_consistent(f->db);
}

static void test_grant_idempotent_by_key(void **state)
{
    fixture *f = *state;
    lr_adjust_req r = {.user_id = USER, .amount = 50, .type = "purchase", .idempotency_key = "pay-1"};
    lr_adjust_result a, b;
    assert_int_equal(f->db->ops->adjust(f->db, &r, &a), LR_OK);
    assert_int_equal(f->db->ops->adjust(f->db, &r, &b), LR_OK);
    assert_true(b.replayed);
    assert_string_equal(a.transaction_id, b.transaction_id);
    assert_int_equal(b.new_balance, 50);
    r.amount = 60;
    assert_int_equal(f->db->ops->adjust(f->db, &r, &b), LR_ERR_CONFLICT);
    lr_adjust_req debit = {.user_id = USER, .amount = -51, .type = "adjustment"};
    assert_int_equal(f->db->ops->adjust(f->db, &debit, &b), LR_ERR_INSUFFICIENT);
    assert_int_equal(b.new_balance, 50);
    assert_ledger_consistent(f->db);
}

typedef struct {
    lr_db *db;
    int ok, short_;
} worker_arg;

static void *spend(void *p)
{
    worker_arg *a = p;
    for (int i = 0; i < 250; i++) {
        char id[LR_UUID_LEN + 1];
        int balance;
        lr_err e = reserve(a->db, id, 3, &balance);
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
    grant(f->db, 1500, NULL); /* 500 reservations of 3 */
    pthread_t t[4];
    worker_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (worker_arg){f->db, 0, 0};
        pthread_create(&t[i], NULL, spend, &a[i]);
    }
    int ok = 0, short_ = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        ok += a[i].ok;
        short_ += a[i].short_;
    }
    assert_int_equal(ok, 500);
    assert_int_equal(short_, 500);
    int balance;
    assert_int_equal(f->db->ops->balance(f->db, USER, &balance), LR_OK);
    assert_int_equal(balance, 0);
    assert_ledger_consistent(f->db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reserve_short_changes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_settle_failed_refunds_exactly_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_grant_idempotent_by_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_reserves_never_overspend, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
