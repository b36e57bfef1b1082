/* test_pg_stmt_cache.c — the prepared statements of one connection
 * (core/pg_stmt_cache.c): hit, miss, the bound, equal hashes of different
 * statements, removal. */
#include "pg_stmt_cache.h"
#include "tap.h"

#include <string.h>

static const Oid UNTYPED[2] = {0, 0};
static const Oid BYTEA[2] = {17, 0};

static struct pg_stmt_key key(const char *sql, const Oid *types, int n)
{
    struct pg_stmt_key k = {sql, strlen(sql), types, n, 0};
    pg_stmt_hash(&k);
    return k;
}

static void hit_and_miss(void)
{
    struct pg_stmt_cache *sc = pg_stmt_cache_new(4);
    CHECK(sc != NULL);
    struct pg_stmt_key a = key("SELECT $1::int", UNTYPED, 1);
    CHECK(pg_stmt_cache_find(sc, &a) == 0);
    CHECK(pg_stmt_cache_next(sc) == 1);
    CHECK(pg_stmt_cache_add(sc, &a) == 1);
    CHECK(pg_stmt_cache_next(sc) == 2);
    /* the same text in another buffer is the same statement */
    char copy[32];
    strcpy(copy, "SELECT $1::int");
    struct pg_stmt_key same = key(copy, UNTYPED, 1);
    CHECK(pg_stmt_cache_find(sc, &same) == 1);
    /* a different text, a prefix, other types or another count are not */
    struct pg_stmt_key other = key("SELECT $1::text", UNTYPED, 1);
    struct pg_stmt_key prefix = key("SELECT $1::in", UNTYPED, 1);
    struct pg_stmt_key typed = key("SELECT $1::int", BYTEA, 1);
    struct pg_stmt_key two = key("SELECT $1::int", UNTYPED, 2);
    CHECK(pg_stmt_cache_find(sc, &other) == 0);
    CHECK(pg_stmt_cache_find(sc, &prefix) == 0);
    CHECK(pg_stmt_cache_find(sc, &typed) == 0);
    CHECK(pg_stmt_cache_find(sc, &two) == 0);
    CHECK(pg_stmt_cache_add(sc, &typed) == 2);
    CHECK(pg_stmt_cache_find(sc, &typed) == 2);
    CHECK(pg_stmt_cache_find(sc, &a) == 1);
    CHECK(pg_stmt_cache_count(sc) == 2);
    pg_stmt_cache_free(sc);
}

static void equal_hashes_never_match(void)
{
    struct pg_stmt_cache *sc = pg_stmt_cache_new(4);
    CHECK(sc != NULL);
    struct pg_stmt_key a = key("DELETE FROM t WHERE id = $1", UNTYPED, 1);
    CHECK(pg_stmt_cache_add(sc, &a) == 1);
    /* forced collisions: same hash (and length), other text or types */
    struct pg_stmt_key b = key("SELECT * FROM t WHERE id = $1", UNTYPED, 1);
    b.len = a.len;
    b.hash = a.hash;
    CHECK(pg_stmt_cache_find(sc, &b) == 0);
    struct pg_stmt_key c = key("DELETE FROM t WHERE id = $1", BYTEA, 1);
    c.hash = a.hash;
    CHECK(pg_stmt_cache_find(sc, &c) == 0);
    /* and a different hash of the same statement does not match either */
    struct pg_stmt_key d = a;
    d.hash ^= 1;
    CHECK(pg_stmt_cache_find(sc, &d) == 0);
    CHECK(pg_stmt_cache_find(sc, &a) == 1);
    pg_stmt_cache_free(sc);
}

static void hash_covers_text_and_types(void)
{
    struct pg_stmt_key a = key("SELECT $1", UNTYPED, 1);
    struct pg_stmt_key b = key("SELECT $2", UNTYPED, 1);
    struct pg_stmt_key c = key("SELECT $1", BYTEA, 1);
    struct pg_stmt_key a2 = key("SELECT $1", UNTYPED, 1);
    CHECK(a.hash != b.hash);
    CHECK(a.hash != c.hash);
    CHECK(a.hash == a2.hash);
}

static void bound_reached(void)
{
    struct pg_stmt_cache *sc = pg_stmt_cache_new(2);
    CHECK(sc != NULL);
    struct pg_stmt_key a = key("SELECT $1 AS a", UNTYPED, 1);
    struct pg_stmt_key b = key("SELECT $1 AS b", UNTYPED, 1);
    CHECK(!pg_stmt_cache_full(sc));
    CHECK(pg_stmt_cache_add(sc, &a) == 1);
    CHECK(!pg_stmt_cache_full(sc));
    CHECK(pg_stmt_cache_add(sc, &b) == 2);
    CHECK(pg_stmt_cache_full(sc));
    /* full: the cached ones are still found */
    CHECK(pg_stmt_cache_find(sc, &a) == 1);
    CHECK(pg_stmt_cache_find(sc, &b) == 2);
    pg_stmt_cache_free(sc);
}

static void removal(void)
{
    struct pg_stmt_cache *sc = pg_stmt_cache_new(3);
    CHECK(sc != NULL);
    struct pg_stmt_key a = key("SELECT $1 AS a", UNTYPED, 1);
    struct pg_stmt_key b = key("SELECT $1 AS b", UNTYPED, 1);
    struct pg_stmt_key c = key("SELECT $1 AS c", UNTYPED, 1);
    CHECK(pg_stmt_cache_add(sc, &a) == 1);
    CHECK(pg_stmt_cache_add(sc, &b) == 2);
    CHECK(pg_stmt_cache_add(sc, &c) == 3);
    pg_stmt_cache_remove(sc, 1);
    CHECK(pg_stmt_cache_find(sc, &a) == 0);
    CHECK(pg_stmt_cache_find(sc, &b) == 2);
    CHECK(pg_stmt_cache_find(sc, &c) == 3);
    CHECK(pg_stmt_cache_count(sc) == 2);
    pg_stmt_cache_remove(sc, 1); /* gone already: nothing */
    pg_stmt_cache_remove(sc, 99);
    CHECK(pg_stmt_cache_count(sc) == 2);
    /* the server still holds s1: the bound counts it */
    CHECK(pg_stmt_cache_full(sc));
    pg_stmt_cache_free(sc);

    /* prepared again after removal: a new number, never the old name */
    sc = pg_stmt_cache_new(3);
    CHECK(sc != NULL);
    CHECK(pg_stmt_cache_add(sc, &a) == 1);
    pg_stmt_cache_remove(sc, 1);
    CHECK(!pg_stmt_cache_full(sc));
    CHECK(pg_stmt_cache_next(sc) == 2);
    CHECK(pg_stmt_cache_add(sc, &a) == 2);
    CHECK(pg_stmt_cache_find(sc, &a) == 2);
    pg_stmt_cache_free(sc);
}

static void names(void)
{
    char name[PG_STMT_NAME_LEN];
    pg_stmt_name(1, name);
    CHECK(strcmp(name, "s1") == 0);
    pg_stmt_name(4294967295u, name);
    CHECK(strcmp(name, "s4294967295") == 0);
}

static const struct tap_case cases[] = {
    {"a cached statement is found by its text and types, others are not", hit_and_miss},
    {"equal hashes of different statements never match", equal_hashes_never_match},
    {"the hash covers the text and the parameter types", hash_covers_text_and_types},
    {"past the bound nothing more is prepared; the cached ones stay", bound_reached},
    {"a removed statement is not found and still counts toward the bound", removal},
    {"statements are named s<number>", names},
};

TAP_MAIN(cases)
