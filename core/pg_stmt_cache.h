/* pg_stmt_cache.h — the named statements prepared on one PostgreSQL
 * connection, found by their SQL text and parameter types. Free of Lua and
 * of libpq calls (the caller sends Parse and runs the statements).
 *
 * A statement is known by a number, unique on its connection and never
 * reused: it is prepared on the server under the name "s<number>". The
 * bound counts every statement the server holds: one dropped from the cache
 * (its cached plan went stale) stays on the server until the connection
 * closes, so it still takes its place. Once full, nothing more is prepared:
 * further statements run unprepared. */
#ifndef STEEPLE_PG_STMT_CACHE_H
#define STEEPLE_PG_STMT_CACHE_H

#include <postgres_ext.h>
#include <stddef.h>
#include <stdint.h>

struct pg_stmt_cache;

/* What a statement is found by. The pointers are the caller's. */
struct pg_stmt_key {
    const char *sql;
    size_t len;        /* bytes of sql */
    const Oid *types;  /* ntypes parameter types (0: the server infers) */
    int ntypes;
    uint64_t hash;     /* pg_stmt_hash of the above */
};

/* Room for "s" and any statement number, with the NUL. */
#define PG_STMT_NAME_LEN 16

/* An empty cache for at most max statements, or NULL (out of memory). */
struct pg_stmt_cache *pg_stmt_cache_new(int max) __attribute__((warn_unused_result));
void pg_stmt_cache_free(struct pg_stmt_cache *sc);

/* Fills k->hash (FNV-1a, 64 bits, over the text and then the types). */
void pg_stmt_hash(struct pg_stmt_key *k);

/* The number of the cached statement with exactly k's text and types, or 0.
 * Equal hashes alone never match: the text and the types are compared. */
unsigned pg_stmt_cache_find(const struct pg_stmt_cache *sc, const struct pg_stmt_key *k);

/* 1 when the server holds as many statements as the bound allows. */
int pg_stmt_cache_full(const struct pg_stmt_cache *sc);

/* The number the next pg_stmt_cache_add gives (to name the statement while
 * it is prepared). */
unsigned pg_stmt_cache_next(const struct pg_stmt_cache *sc);

/* Records that the statement k (not full, not cached) was prepared as number
 * pg_stmt_cache_next(); the text and types are copied. Returns that number,
 * or 0 when out of memory (it then counts toward the bound uncached). */
unsigned pg_stmt_cache_add(struct pg_stmt_cache *sc, const struct pg_stmt_key *k);

/* Drops statement id from the cache (nothing when it is not there); the
 * server still holds it, so it still counts toward the bound. */
void pg_stmt_cache_remove(struct pg_stmt_cache *sc, unsigned id);

/* Statements in the cache (not counting dropped ones). */
int pg_stmt_cache_count(const struct pg_stmt_cache *sc);

/* Writes "s<id>" into name. */
void pg_stmt_name(unsigned id, char name[PG_STMT_NAME_LEN]);

#endif
