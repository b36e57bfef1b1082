/* devkeys.h — development keys: made once into a file, reused after. */
#ifndef STEEPLE_DEVKEYS_H
#define STEEPLE_DEVKEYS_H

#include <stddef.h>

/* The file development keys live in, relative to the working directory. */
#define DEVKEYS_PATH "var/dev-keys"

/* Makes sure STEEPLE_JWT_SECRET and STEEPLE_DATA_KEY are set in the
 * environment: a variable already set is kept; a missing one is taken from the
 * file at path, which is created (mode 0600, its directory 0700) with fresh
 * random keys when it does not exist. Safe against another process doing the
 * same at once. Returns 0, or -1 with a message in err. */
int devkeys_export(const char *path, char *err, size_t errlen) __attribute__((warn_unused_result));

#endif
