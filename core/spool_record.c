/* spool_record.c — the spool's record format (see spool_record.h): CRC-32C,
 * the little-endian header fields, framing a record and reading one back.
 * Owns nothing but a constant table; safe from any thread. */
#include "spool_record.h"
#include "spool.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

static const unsigned char MAGIC[4] = {'S', 'T', 'P', 'L'};

static const char *const rec_state_text[] = {"ok", "torn record", "corrupt record",
                                             "read error"};

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[i] = c;
    }
}

uint32_t spool_crc32c(const void *data, size_t len)
{
    pthread_once(&crc_once, crc_init);
    const unsigned char *p = data;
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++)
        c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static void put_le32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

const char *spool_rec_state_text(enum spool_rec_state st)
{
    return rec_state_text[st];
}

void spool_frame_header(unsigned char h[SPOOL_HEADER_BYTES], const void *data, uint32_t len)
{
    memcpy(h, MAGIC, sizeof MAGIC);
    put_le32(h + 4, len);
    put_le32(h + 8, spool_crc32c(data, len));
}

/* 0: all n bytes read; 1: the file ended first; -1: error (errno). */
static int pread_all(int fd, void *buf, size_t n, uint64_t off)
{
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return r < 0 ? -1 : 1;
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

enum spool_rec_state spool_read_record(int fd, uint64_t off, uint64_t size, unsigned char *buf,
                                       size_t cap, uint32_t *len)
{
    unsigned char h[SPOOL_HEADER_BYTES];
    if (size - off < SPOOL_HEADER_BYTES)
        return REC_TORN;
    int rc = pread_all(fd, h, sizeof h, off);
    if (rc != 0)
        return rc < 0 ? REC_IO : REC_TORN;
    *len = get_le32(h + 4);
    if (memcmp(h, MAGIC, sizeof MAGIC) != 0 || *len > cap)
        return REC_CORRUPT;
    if (size - off - SPOOL_HEADER_BYTES < *len)
        return REC_TORN;
    rc = pread_all(fd, buf, *len, off + SPOOL_HEADER_BYTES);
    if (rc != 0)
        return rc < 0 ? REC_IO : REC_TORN;
    return spool_crc32c(buf, *len) == get_le32(h + 8) ? REC_OK : REC_CORRUPT;
}
