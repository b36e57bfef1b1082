/* devkeys.c — development keys (see devkeys.h). */
#include "devkeys.h"
#include "crypto.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define JWT_NAME "STEEPLE_JWT_SECRET"
#define DATA_NAME "STEEPLE_DATA_KEY"

/* Writes a fresh key file to a temporary name and links it into place, so a
 * reader never sees half a file. Losing the race to another process is fine. */
static int create(const char *path, char *err, size_t errlen)
{
    unsigned char jwt[48], data[32];
    char jwt64[sodium_base64_ENCODED_LEN(48, sodium_base64_VARIANT_URLSAFE_NO_PADDING)];
    char data64[sodium_base64_ENCODED_LEN(32, sodium_base64_VARIANT_ORIGINAL)];
    char text[256], tmp[4096];
    crypto_random(jwt, sizeof jwt);
    crypto_random(data, sizeof data);
    sodium_bin2base64(jwt64, sizeof jwt64, jwt, sizeof jwt, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_bin2base64(data64, sizeof data64, data, sizeof data, sodium_base64_VARIANT_ORIGINAL);
    int n = snprintf(text, sizeof text, "%s=%s\n%s=%s\n", JWT_NAME, jwt64, DATA_NAME, data64);
    snprintf(tmp, sizeof tmp, "%s.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int ok = fd >= 0 && write(fd, text, (size_t)n) == n && fsync(fd) == 0;
    if (fd >= 0 && close(fd) != 0)
        ok = 0;
    if (ok && link(tmp, path) != 0 && errno != EEXIST)
        ok = 0;
    int saved = errno;
    unlink(tmp);
    sodium_memzero(text, sizeof text);
    sodium_memzero(jwt64, sizeof jwt64);
    sodium_memzero(data64, sizeof data64);
    if (!ok)
        snprintf(err, errlen, "cannot write development keys to %s: %s", path, strerror(saved));
    return ok ? 0 : -1;
}

/* Sets name from a "NAME=value" line of text unless it is set already. */
static int export_line(const char *text, const char *name)
{
    if (getenv(name) && getenv(name)[0])
        return 0;
    size_t len = strlen(name);
    const char *line = text;
    while (line != NULL && *line != '\0') {
        if (strncmp(line, name, len) == 0 && line[len] == '=') {
            char value[256];
            const char *v = line + len + 1;
            size_t vlen = strcspn(v, "\n");
            if (vlen == 0 || vlen >= sizeof value)
                return -1;
            memcpy(value, v, vlen);
            value[vlen] = '\0';
            int rc = setenv(name, value, 1);
            sodium_memzero(value, sizeof value);
            return rc;
        }
        const char *nl = strchr(line, '\n');
        line = nl ? nl + 1 : NULL;
    }
    return -1;
}

/* Creates the file's directory (mode 0700) if it is missing. */
static void make_dir(const char *path)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash != NULL && slash != dir) {
        *slash = '\0';
        (void)mkdir(dir, 0700); /* an error shows when the file is written */
    }
}

int devkeys_export(const char *path, char *err, size_t errlen)
{
    if (access(path, F_OK) != 0) {
        make_dir(path);
        if (create(path, err, errlen) != 0)
            return -1;
    }
    char text[1024];
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
    if (f == NULL || ferror(f)) {
        snprintf(err, errlen, "cannot read development keys from %s", path);
        if (f)
            fclose(f);
        return -1;
    }
    fclose(f);
    text[n] = '\0';
    int rc = export_line(text, JWT_NAME) == 0 && export_line(text, DATA_NAME) == 0 ? 0 : -1;
    sodium_memzero(text, sizeof text);
    if (rc != 0)
        snprintf(err, errlen, "%s holds no valid keys: delete it to make new ones", path);
    return rc;
}
