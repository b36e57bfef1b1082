/* config_load.h — reading the configuration (lua/conf.lua) into a struct
 * config (config.h). */
#ifndef STEEPLE_CONFIG_LOAD_H
#define STEEPLE_CONFIG_LOAD_H

#include "config.h"

#include <stddef.h>

struct lua_State;

/* Reads the validated configuration table at stack index `idx` into *out.
 * Returns 0, or -1 with a message in err (a key the core needs is missing or
 * of a type the schema should have refused). */
int config_read(struct lua_State *L, int idx, struct config *out, char *err,
                size_t errlen) __attribute__((warn_unused_result));

/* Runs lua/conf.lua on the file `path` (NULL: defaults and environment only)
 * in L, a throw-away state with steeple's libraries opened (lua_libs.h:
 * steeple_newstate; NULL: out of memory), which it closes, and fills *out.
 * Returns 0, or -1 with the loader's message (which names the bad key) in err. */
int config_load(struct lua_State *L, const char *path, struct config *out, char *err,
                size_t errlen) __attribute__((warn_unused_result));

/* Under a protected call: runs conf.load(path, os.getenv) and pushes the
 * configuration table, or raises the loader's message. */
void config_push(struct lua_State *L, const char *path);

/* Fills derived values (workers = number of cores when 0). */
void config_resolve(struct config *cfg);

#endif
