/* pg_stmt_cache.c — prepared statements of one connection (see
 * pg_stmt_cache.h). A few dozen entries per connection: a linear scan over
 * their hashes costs far less than the round trip it saves. */
#include "pg_stmt_cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct entry {
    uint64_t hash;
    unsigned id;
    int ntypes;
    size_t len;
    char *sql; /* len bytes, then the ntypes types; owned */
};

struct pg_stmt_cache {
    int max;      /* statements the server may hold */
    int held;     /* statements the server holds: cached or dropped */
    int n;        /* cached: entries[0..n) */
    unsigned next_id;
    struct entry entries[];
};

struct pg_stmt_cache *pg_stmt_cache_new(int max)
{
    struct pg_stmt_cache *sc = calloc(1, sizeof *sc + (size_t)max * sizeof sc->entries[0]);
    if (sc == NULL)
        return NULL;
    sc->max = max;
    sc->next_id = 1;
    return sc;
}

void pg_stmt_cache_free(struct pg_stmt_cache *sc)
{
    if (sc == NULL)
        return;
    for (int i = 0; i < sc->n; i++)
        free(sc->entries[i].sql);
    free(sc);
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

void pg_stmt_hash(struct pg_stmt_key *k)
{
    uint64_t h = fnv1a(0xcbf29ce484222325ULL, k->sql, k->len);
    k->hash = fnv1a(h, k->types, (size_t)k->ntypes * sizeof k->types[0]);
}

static int same(const struct entry *e, const struct pg_stmt_key *k)
{
    size_t types = (size_t)k->ntypes * sizeof k->types[0];
    return e->hash == k->hash && e->len == k->len && e->ntypes == k->ntypes &&
           memcmp(e->sql, k->sql, k->len) == 0 &&
           (types == 0 || memcmp(e->sql + e->len, k->types, types) == 0);
}

unsigned pg_stmt_cache_find(const struct pg_stmt_cache *sc, const struct pg_stmt_key *k)
{
    for (int i = 0; i < sc->n; i++)
        if (same(&sc->entries[i], k))
            return sc->entries[i].id;
    return 0;
}

int pg_stmt_cache_full(const struct pg_stmt_cache *sc) { return sc->held >= sc->max; }
unsigned pg_stmt_cache_next(const struct pg_stmt_cache *sc) { return sc->next_id; }
int pg_stmt_cache_count(const struct pg_stmt_cache *sc) { return sc->n; }

unsigned pg_stmt_cache_add(struct pg_stmt_cache *sc, const struct pg_stmt_key *k)
{
    if (sc->held >= sc->max)
        abort(); /* the caller checks pg_stmt_cache_full before preparing */
    unsigned id = sc->next_id++;
    sc->held++;
    size_t types = (size_t)k->ntypes * sizeof k->types[0];
    char *copy = malloc(k->len + types + 1);
    if (copy == NULL)
        return 0;
    memcpy(copy, k->sql, k->len);
    if (types > 0)
        memcpy(copy + k->len, k->types, types);
    sc->entries[sc->n++] = (struct entry){k->hash, id, k->ntypes, k->len, copy};
    return id;
}

void pg_stmt_cache_remove(struct pg_stmt_cache *sc, unsigned id)
{
    for (int i = 0; i < sc->n; i++) {
        if (sc->entries[i].id == id) {
            free(sc->entries[i].sql);
            sc->entries[i] = sc->entries[--sc->n];
            return;
        }
    }
}

void pg_stmt_name(unsigned id, char name[PG_STMT_NAME_LEN])
{
    snprintf(name, PG_STMT_NAME_LEN, "s%u", id);
}
