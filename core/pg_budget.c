/* pg_budget.c — the node's shared connection budget and the policy's rules
 * (see pg_budget.h). */
#include "pg_budget.h"
#include "shm.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* One worker's share of one server; only that worker writes it (and its
 * successor, on attach). */
struct row {
    int held;          /* units taken and not given back */
    int busy;          /* published demand */
    int starving;
    int64_t oldest_us; /* 0: none */
};

struct server {
    int ready; /* accessed atomically: 1 once key and cap are written */
    int cap;
    int used; /* over all workers: the hard cap is kept on this counter */
    char key[PG_BUDGET_KEY_LEN];
};

struct region {
    pthread_mutex_t lock; /* process-shared, robust: registration only */
    int workers;
    int nservers; /* written under the lock, read atomically */
    struct server servers[PG_BUDGET_MAX_SERVERS];
    struct row rows[]; /* PG_BUDGET_MAX_SERVERS rows of `workers` */
};

static struct region *region;
static size_t region_size;
static int me; /* this process's row */

static struct region *region_create(int workers, size_t *size)
{
    if (workers < 1 || workers > PG_BUDGET_MAX_WORKERS)
        return NULL;
    *size = sizeof(struct region) +
            (size_t)PG_BUDGET_MAX_SERVERS * (size_t)workers * sizeof(struct row);
    void *p = shm_map(*size);
    if (p == NULL)
        return NULL;
    struct region *r = p; /* zero-filled: no server, nothing held */
    if (shm_mutex_init(&r->lock) != 0) {
        shm_unmap(p, *size);
        return NULL;
    }
    r->workers = workers;
    return r;
}

int pg_budget_init(int workers)
{
    size_t size = 0;
    struct region *r = region_create(workers, &size);
    if (r == NULL)
        return -1;
    pg_budget_shutdown();
    region = r;
    region_size = size;
    me = 0;
    return 0;
}

void pg_budget_shutdown(void)
{
    if (region != NULL)
        shm_unmap(region, region_size);
    region = NULL;
    region_size = 0;
}

/* This process's table: a private one for a single worker when none was
 * mapped. NULL when that cannot be made. */
static struct region *current(void)
{
    if (region == NULL && pg_budget_init(1) != 0)
        return NULL;
    return region;
}

static struct row *row_of(struct region *r, int slot, int worker)
{
    return &r->rows[(size_t)slot * (size_t)r->workers + (size_t)worker];
}

/* The slot's server, or NULL for a slot not registered. */
static struct server *server_of(struct region *r, int slot)
{
    if (r == NULL || slot < 0 || slot >= __atomic_load_n(&r->nservers, __ATOMIC_ACQUIRE))
        return NULL;
    struct server *s = &r->servers[slot];
    return __atomic_load_n(&s->ready, __ATOMIC_ACQUIRE) ? s : NULL;
}

void pg_budget_attach(int worker)
{
    struct region *r = region;
    if (r == NULL || worker < 0 || worker >= r->workers)
        return;
    me = worker;
    int n = __atomic_load_n(&r->nservers, __ATOMIC_ACQUIRE);
    for (int slot = 0; slot < n; slot++) {
        struct row *w = row_of(r, slot, me);
        int held = __atomic_exchange_n(&w->held, 0, __ATOMIC_ACQ_REL);
        if (held > 0)
            __atomic_sub_fetch(&r->servers[slot].used, held, __ATOMIC_ACQ_REL);
        struct pg_budget_demand none = {0, 0, 0};
        pg_budget_publish(slot, &none);
    }
}

/* Returns key's slot, adding it; -1 when full. Called under the lock. */
static int find_or_add(struct region *r, const char *key, int cap)
{
    int n = r->nservers;
    for (int slot = 0; slot < n; slot++)
        if (strcmp(r->servers[slot].key, key) == 0)
            return slot;
    if (n >= PG_BUDGET_MAX_SERVERS)
        return -1;
    struct server *s = &r->servers[n];
    snprintf(s->key, sizeof s->key, "%s", key);
    s->cap = cap;
    __atomic_store_n(&s->ready, 1, __ATOMIC_RELEASE);
    __atomic_store_n(&r->nservers, n + 1, __ATOMIC_RELEASE);
    return n;
}

int pg_budget_server(const char *key, int cap)
{
    struct region *r = current();
    if (r == NULL || cap < 1 || strlen(key) >= PG_BUDGET_KEY_LEN || shm_mutex_lock(&r->lock) != 0)
        return -1;
    int slot = find_or_add(r, key, cap);
    pthread_mutex_unlock(&r->lock);
    return slot;
}

int pg_budget_reserve(int slot)
{
    struct server *s = server_of(region, slot);
    if (s == NULL)
        return 0;
    int used = __atomic_load_n(&s->used, __ATOMIC_ACQUIRE);
    while (used < s->cap) {
        if (__atomic_compare_exchange_n(&s->used, &used, used + 1, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            __atomic_add_fetch(&row_of(region, slot, me)->held, 1, __ATOMIC_RELAXED);
            return 1;
        }
    }
    return 0;
}

void pg_budget_release(int slot)
{
    struct server *s = server_of(region, slot);
    if (s == NULL)
        return;
    struct row *w = row_of(region, slot, me);
    if (__atomic_load_n(&w->held, __ATOMIC_RELAXED) <= 0)
        return; /* never give back what this worker does not hold */
    __atomic_sub_fetch(&w->held, 1, __ATOMIC_RELAXED);
    __atomic_sub_fetch(&s->used, 1, __ATOMIC_ACQ_REL);
}

int pg_budget_cap(int slot)
{
    struct server *s = server_of(region, slot);
    return s ? s->cap : 0;
}

int pg_budget_used(int slot)
{
    struct server *s = server_of(region, slot);
    return s ? __atomic_load_n(&s->used, __ATOMIC_ACQUIRE) : 0;
}

int pg_budget_held(int slot)
{
    if (server_of(region, slot) == NULL)
        return 0;
    return __atomic_load_n(&row_of(region, slot, me)->held, __ATOMIC_RELAXED);
}

void pg_budget_publish(int slot, const struct pg_budget_demand *d)
{
    if (server_of(region, slot) == NULL)
        return;
    struct row *w = row_of(region, slot, me);
    __atomic_store_n(&w->busy, d->busy, __ATOMIC_RELAXED);
    __atomic_store_n(&w->starving, d->starving, __ATOMIC_RELAXED);
    __atomic_store_n(&w->oldest_us, d->starving > 0 ? (int64_t)(d->oldest * 1e6) : 0,
                     __ATOMIC_RELAXED);
}

void pg_budget_others(int slot, double since, struct pg_budget_others *o)
{
    memset(o, 0, sizeof *o);
    if (server_of(region, slot) == NULL)
        return;
    int64_t since_us = (int64_t)(since * 1e6), oldest_us = 0;
    for (int worker = 0; worker < region->workers; worker++) {
        if (worker == me)
            continue;
        const struct row *w = row_of(region, slot, worker);
        int starving = __atomic_load_n(&w->starving, __ATOMIC_RELAXED);
        int64_t at = __atomic_load_n(&w->oldest_us, __ATOMIC_RELAXED);
        o->busy += __atomic_load_n(&w->busy, __ATOMIC_RELAXED);
        if (starving <= 0 || at == 0)
            continue;
        o->starving += starving;
        if (at < since_us)
            o->older += starving;
        if (oldest_us == 0 || at < oldest_us)
            oldest_us = at;
    }
    o->oldest = (double)oldest_us / 1e6;
}

/* ---- the policy's rules -------------------------------------------------- */

int pg_policy_fair_share(int cap, int busy)
{
    return busy > 0 ? cap / busy : cap;
}

int pg_policy_should_grow(int nwait, int idle, int connecting, int active, double hold,
                          double connect_cost)
{
    if (nwait <= idle)
        return 0;
    /* waiters each busy connection serves while a new one would connect */
    double each = hold > 0 ? floor(connect_cost / hold) : 0;
    double covered = idle + connecting * (1 + each) + active * each;
    return (double)nwait > covered;
}

double pg_policy_linger(double gap, double connect_cost)
{
    double linger = 2 * connect_cost;
    return gap > 0 && gap <= linger ? linger : 0;
}

int pg_policy_may_evict(const struct pg_victim *v, int fair, double now)
{
    if (now - v->pool_last_used >= PG_HYSTERESIS_S || v->pool_conns > (fair > 0 ? fair : 1))
        return 1;
    return fair == 0 && now - v->idle_since >= v->linger;
}

int pg_policy_give_up(const struct pg_return *r, int fair, double preempt_s, double now)
{
    if (r->pool_conns > (fair > 0 ? fair : 1))
        return 1;
    if (fair > 0)
        return 0;
    return (r->pool_waiters == 0 && r->linger == 0) || now - r->oldest_waiting >= preempt_s;
}
