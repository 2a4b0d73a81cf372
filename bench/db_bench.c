/* Generations per second through the database interface alone, without
 * HTTP: THREADS threads each run reserve -> set_stage -> settle (the three
 * writes of a generation) for USERS users round-robin.
 *   lensroom-dbbench DATABASE THREADS USERS GENERATIONS
 * DATABASE: a SQLite file (created) or a postgres:// URL. Shows what the
 * group commit of src/db/batch.c does with many concurrent callers. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "db/db.h"

static lr_db *db;
static int users_n, per_thread;
static char (*users)[LR_UUID_LEN + 1];

static lr_err one_generation(const char *user)
{
    char id[LR_UUID_LEN + 1], owner[LR_UUID_LEN + 1], ts[32], lease[32];
    lr_uuid_v4(id);
    lr_uuid_v4(owner);
    lr_time_iso(lr_now_ms(), ts);
    lr_time_iso(lr_now_ms() + 3600 * 1000, lease);
    lr_reserve_req r = {.generation_id = id,
                        .user_id = user,
                        .type = "text",
                        .model = "bench",
                        .provider = "mock",
                        .prompt = "p",
                        .outputs_count = 1,
                        .cost = 1,
                        .created_at = ts,
                        .owner = owner,
                        .lease_until = lease,
                        .key_expired_before = ts};
    lr_settle_req s = {
        .generation_id = id, .user_id = user, .status = "success", .succeeded_count = 1};
    int balance;
    lr_key_holder holder;
    lr_err e = db->ops->reserve(db, &r, &balance, &holder);
    if (e == LR_OK)
        e = db->ops->set_stage(db, id, "processing", "submitted", NULL);
    if (e == LR_OK)
        e = db->ops->settle(db, &s, &balance);
    return e;
}

static void *caller(void *p)
{
    long t = (long)p;
    for (int i = 0; i < per_thread; i++) {
        lr_err e = one_generation(users[(t * per_thread + i) % users_n]);
        if (e != LR_OK) {
            fprintf(stderr, "generation failed: %s\n", lr_strerror(e));
            exit(1);
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    lr_db_library_init(); /* as the server does */
    if (argc != 5) {
        fprintf(stderr, "usage: %s DATABASE THREADS USERS GENERATIONS\n", argv[0]);
        return 2;
    }
    int threads = atoi(argv[2]);
    users_n = atoi(argv[3]);
    per_thread = atoi(argv[4]) / (threads > 0 ? threads : 1);
    if (threads < 1 || threads > 1024 || users_n < 1 || per_thread < 1) {
        fprintf(stderr, "THREADS 1..1024, USERS >= 1, GENERATIONS >= THREADS\n");
        return 2;
    }
    char *err = NULL;
    if (lr_db_open(argv[1], threads + 1, &db, &err) != LR_OK || db->ops->migrate(db) != LR_OK) {
        fprintf(stderr, "cannot open %s: %s\n", argv[1], err ? err : "migration failed");
        return 1;
    }
    users = lr_xcalloc((size_t)users_n, sizeof *users);
    for (int i = 0; i < users_n; i++) {
        lr_uuid_v4(users[i]);
        lr_adjust_req a = {.user_id = users[i], .amount = 1000000000, .type = "bonus"};
        lr_adjust_result res;
        db->ops->adjust(db, &a, &res);
    }
    pthread_t *tid = lr_xcalloc((size_t)threads, sizeof *tid);
    int64_t t0 = lr_now_ms();
    for (long i = 0; i < threads; i++)
        pthread_create(&tid[i], NULL, caller, (void *)i);
    for (int i = 0; i < threads; i++)
        pthread_join(tid[i], NULL);
    int64_t ms = lr_now_ms() - t0;
    printf("db threads=%d users=%d generations/s=%.0f\n", threads, users_n,
           (double)threads * per_thread * 1000.0 / (double)(ms ? ms : 1));
    free(tid);
    free(users);
    lr_db_close(db);
    return 0;
}
