/* fuzz_util.h — helpers shared by the libFuzzer targets (spec/fuzz/fuzz_*.c).
 *
 * Header-only: every function is static inline, so a target that does not use
 * one pays nothing for it. Nothing here is part of the server. */
#ifndef STEEPLE_FUZZ_UTIL_H
#define STEEPLE_FUZZ_UTIL_H

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A broken invariant: print why and abort, which libFuzzer reports as a
 * crash and saves the input. */
__attribute__((noreturn, format(printf, 1, 2))) static inline void fuzz_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("\n*** fuzz invariant broken: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs("\n", stderr);
    va_end(ap);
    abort();
}

#define FUZZ_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fuzz_fail(__VA_ARGS__);                                                                \
    } while (0)

/* ---- taking typed values off the front of the input ----------------------- */

struct fuzz_in {
    const uint8_t *p;
    size_t n;
};

static inline uint8_t fuzz_u8(struct fuzz_in *in)
{
    if (in->n == 0)
        return 0;
    in->n--;
    return *in->p++;
}

static inline uint16_t fuzz_u16(struct fuzz_in *in)
{
    uint16_t hi = fuzz_u8(in);
    return (uint16_t)(hi << 8 | fuzz_u8(in));
}

/* Up to `want` bytes (fewer when the input runs out); *len gets the count. */
static inline const uint8_t *fuzz_bytes(struct fuzz_in *in, size_t want, size_t *len)
{
    const uint8_t *p = in->p;
    *len = want < in->n ? want : in->n;
    in->p += *len;
    in->n -= *len;
    return p;
}

/* A field of at most 255 bytes, its length in the byte before it. */
static inline const uint8_t *fuzz_field(struct fuzz_in *in, size_t *len)
{
    return fuzz_bytes(in, fuzz_u8(in), len);
}

/* ---- paths ----------------------------------------------------------------- */

/* The repository root: $STEEPLE_ROOT, else three levels above this binary
 * (build/fuzz/fuzz_x), else the current directory. */
static inline const char *fuzz_repo_root(void)
{
    static char root[PATH_MAX];
    if (root[0])
        return root;
    const char *env = getenv("STEEPLE_ROOT");
    if (env && *env) {
        snprintf(root, sizeof root, "%s", env);
        return root;
    }
    ssize_t n = readlink("/proc/self/exe", root, sizeof root - 1);
    if (n > 0) {
        root[n] = '\0';
        for (int up = 0; up < 3; up++) {
            char *slash = strrchr(root, '/');
            if (slash == NULL)
                break;
            *slash = '\0';
        }
        char probe[PATH_MAX + 16];
        snprintf(probe, sizeof probe, "%s/lua/app.lua", root);
        if (access(probe, R_OK) == 0)
            return root;
    }
    snprintf(root, sizeof root, ".");
    return root;
}

/* "<root>/lua" */
static inline const char *fuzz_lua_dir(void)
{
    static char dir[PATH_MAX + 8];
    if (!dir[0])
        snprintf(dir, sizeof dir, "%s/lua", fuzz_repo_root());
    return dir;
}

static inline int fuzz_rm_one(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)flag;
    (void)f;
    remove(path);
    return 0;
}

static char fuzz_tmp[64];

static inline void fuzz_tmp_cleanup(void)
{
    if (fuzz_tmp[0])
        nftw(fuzz_tmp, fuzz_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* A private directory (tmpfs when there is one), removed at exit. */
static inline const char *fuzz_tmpdir(void)
{
    if (fuzz_tmp[0])
        return fuzz_tmp;
    struct stat st;
    const char *base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp";
    snprintf(fuzz_tmp, sizeof fuzz_tmp, "%s/steeple-fuzz-XXXXXX", base);
    if (mkdtemp(fuzz_tmp) == NULL) {
        perror("mkdtemp");
        abort();
    }
    atexit(fuzz_tmp_cleanup);
    return fuzz_tmp;
}

/* Writes len bytes to path (replacing it). Aborts on failure: that is the
 * harness's problem, not a finding. */
static inline void fuzz_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL || (len && fwrite(data, 1, len, f) != len) || fclose(f) != 0) {
        perror(path);
        abort();
    }
}

/* ---- Lua states with limits ----------------------------------------------- */

struct fuzz_lua_budget {
    size_t used, cap;
};

/* An allocator that refuses to grow past cap bytes: Lua then raises a clean
 * "not enough memory" instead of the process blowing up. */
static inline void *fuzz_lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct fuzz_lua_budget *b = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        b->used -= old;
        free(ptr);
        return NULL;
    }
    if (nsize > old && b->used + (nsize - old) > b->cap)
        return NULL;
    void *p = realloc(ptr, nsize);
    if (p != NULL)
        b->used = b->used - old + nsize;
    return p;
}

/* ---- Lua coverage and instruction budget --------------------------------- *
 *
 * liblua5.4.a and liblua5.4-cjson.a are Debian's prebuilt libraries, built
 * without coverage instrumentation: libFuzzer sees none of the branches taken
 * in the Lua scripts. A line hook feeds it instead: every (previous line,
 * line) pair of Lua code bumps one of the extra counters below, which
 * libFuzzer reads like its own edge counters. The same hook enforces an
 * optional instruction budget (count events). */

#define FUZZ_LUA_EDGES 65536
__attribute__((section("__libfuzzer_extra_counters"), used)) static uint8_t
    fuzz_lua_edges[FUZZ_LUA_EDGES];

static uintptr_t fuzz_lua_prev; /* the previous line's location, shifted */
static int fuzz_lua_budget_count;   /* instructions per count event, 0: no budget */
static long fuzz_lua_budget_events; /* count events left before the budget is spent */

static inline void fuzz_lua_hook(lua_State *L, lua_Debug *ar)
{
    if (ar->event == LUA_HOOKCOUNT) {
        if (fuzz_lua_budget_count > 0 && --fuzz_lua_budget_events < 0) {
            /* then fire on every line, so a pcall in the script cannot
             * swallow the error */
            lua_sethook(L, fuzz_lua_hook, LUA_MASKCOUNT | LUA_MASKLINE, 1);
            luaL_error(L, "fuzz: instruction budget spent");
        }
        return;
    }
    if (fuzz_lua_budget_count > 0 && fuzz_lua_budget_events < 0)
        luaL_error(L, "fuzz: instruction budget spent");
    if (lua_getinfo(L, "S", ar) == 0)
        return;
    /* the chunk's name, hashed by content: its address changes between states */
    uintptr_t here = 2166136261u;
    for (const unsigned char *c = (const unsigned char *)ar->source; *c; c++)
        here = (here ^ *c) * 16777619u;
    here ^= (uintptr_t)ar->currentline * 2654435761u;
    uint8_t *c = &fuzz_lua_edges[(here ^ fuzz_lua_prev) % FUZZ_LUA_EDGES];
    *c = (uint8_t)(*c + 1);
    fuzz_lua_prev = here >> 1;
}

/* Arms the hook on L (a coroutine made later from L inherits it): line
 * coverage, plus, when instructions > 0, an error once about that many VM
 * instructions have run since this call. */
static inline void fuzz_lua_hook_on(lua_State *L, long instructions)
{
    fuzz_lua_budget_count = instructions > 0 ? 1000 : 0;
    fuzz_lua_budget_events = instructions / 1000;
    fuzz_lua_prev = 0;
    lua_sethook(L, fuzz_lua_hook, LUA_MASKLINE | (instructions > 0 ? LUA_MASKCOUNT : 0),
                fuzz_lua_budget_count);
}

/* Did the last run end because its budget was spent? */
static inline int fuzz_lua_budget_spent(void)
{
    return fuzz_lua_budget_count > 0 && fuzz_lua_budget_events < 0;
}

#endif
