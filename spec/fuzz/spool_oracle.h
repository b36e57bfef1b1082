/* spool_oracle.h — an independent reading of the spool's record format (the
 * framing in core/spool.h), for the spool's fuzz targets: CRC-32C bit by bit,
 * not table-driven, and the header taken apart by hand. Header-only; nothing
 * here is part of the server. */
#ifndef STEEPLE_SPOOL_ORACLE_H
#define STEEPLE_SPOOL_ORACLE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define ORACLE_HEADER 12u

enum oracle_verdict { ORACLE_OK, ORACLE_TORN, ORACLE_CORRUPT };

/* CRC-32C bit by bit, independent of spool_record.c's table. */
static inline uint32_t crc32c_bitwise(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
    }
    return ~c;
}

static inline uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The record at off (<= size) of file[0 .. size), with payloads of at most
 * cap bytes: torn when the file ends inside its header or payload, corrupt
 * when the magic is wrong, the length is over cap (either checked once the
 * whole header is there) or the CRC does not match. *len gets the length
 * field once the header is there. */
static inline enum oracle_verdict oracle_record(const uint8_t *file, size_t size, size_t off,
                                                size_t cap, uint32_t *len)
{
    if (size - off < ORACLE_HEADER)
        return ORACLE_TORN;
    *len = le32(file + off + 4);
    if (memcmp(file + off, "STPL", 4) != 0 || *len > cap)
        return ORACLE_CORRUPT;
    if (size - off - ORACLE_HEADER < *len)
        return ORACLE_TORN;
    return crc32c_bitwise(file + off + ORACLE_HEADER, *len) == le32(file + off + 8)
               ? ORACLE_OK
               : ORACLE_CORRUPT;
}

#endif
