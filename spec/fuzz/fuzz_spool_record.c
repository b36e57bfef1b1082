/* fuzz_spool_record.c — the spool's record format alone (core/spool_record.c,
 * the only file of the core it links).
 *
 * Feeds, from the head of the input:
 *   byte 0     bits 0-1: the payload cap spool_read_record is given
 *              (SPOOL_MAX_RECORD, 0, 16 or 300)
 *   bytes 1-2  where the file's valid part ends (capped at its size)
 *   bytes 3-4  where the framed record is cut and where one byte of it flips
 *   byte 5     the flip's mask (0 is taken as 0x5A)
 *   a field    (length byte + payload) that is framed with spool_frame_header
 *   the rest   the content of a file (a memfd) read with spool_read_record.
 * Asserts:
 *   - walking the file from offset 0 up to its valid end, spool_read_record
 *     finds exactly the records an independent parser (spool_oracle.h) finds,
 *     with the file's own bytes, and stops at the same offset with the same
 *     verdict (torn or corrupt); it never reports a read error;
 *   - a framed payload reads back intact, and the independent parser reads
 *     its header the same way (magic, little-endian length, CRC-32C);
 *   - the frame cut short anywhere is torn; one byte of it changed in the
 *     magic, the CRC or the payload is corrupt, and in the length field it is
 *     whatever the independent parser says (the CRC covers the payload only,
 *     so a shorter length may, rarely, frame a valid record). */
#include "fuzz_util.h"
#include "spool.h"
#include "spool_oracle.h"
#include "spool_record.h"

#include <sys/mman.h>

static int fd = -1;
static unsigned char buf[SPOOL_MAX_RECORD];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fd = memfd_create("spool-record", MFD_CLOEXEC);
    return fd >= 0 ? 0 : -1;
}

/* Replaces the memfd's content with p[0 .. n). */
static void put_file(const void *p, size_t n)
{
    FUZZ_CHECK(ftruncate(fd, 0) == 0 && (n == 0 || pwrite(fd, p, n, 0) == (ssize_t)n),
               "cannot write the memfd");
}

static enum spool_rec_state expected(enum oracle_verdict v)
{
    return v == ORACLE_OK ? REC_OK : v == ORACLE_TORN ? REC_TORN : REC_CORRUPT;
}

/* Walks file[0 .. end) with both readers. */
static void walk(const uint8_t *file, size_t end, size_t cap)
{
    size_t off = 0;
    while (off < end) {
        uint32_t len = 0, olen = 0;
        enum spool_rec_state st = spool_read_record(fd, off, end, buf, cap, &len);
        enum oracle_verdict ov = oracle_record(file, end, off, cap, &olen);
        FUZZ_CHECK(st == expected(ov), "at offset %zu: %s, want %s", off,
                   spool_rec_state_text(st), spool_rec_state_text(expected(ov)));
        if (st != REC_OK)
            return;
        FUZZ_CHECK(len == olen && memcmp(buf, file + off + ORACLE_HEADER, len) == 0,
                   "at offset %zu: the payload differs (len %u, want %u)", off, len, olen);
        off += ORACLE_HEADER + len;
    }
}

/* Frames p[0 .. n), reads it back, then cuts it at `at` and flips one byte
 * there. */
static void round_trip(const uint8_t *p, size_t n, size_t at, uint8_t mask)
{
    static uint8_t frame[ORACLE_HEADER + 256];
    size_t size = ORACLE_HEADER + n;
    uint32_t len = 0, olen = 0;
    spool_frame_header(frame, p, (uint32_t)n);
    memcpy(frame + ORACLE_HEADER, p, n);
    FUZZ_CHECK(oracle_record(frame, size, 0, SPOOL_MAX_RECORD, &olen) == ORACLE_OK && olen == n,
               "the independent parser rejects a framed record of %zu bytes", n);
    put_file(frame, size);
    FUZZ_CHECK(spool_read_record(fd, 0, size, buf, SPOOL_MAX_RECORD, &len) == REC_OK &&
                   len == n && memcmp(buf, p, n) == 0,
               "a framed record of %zu bytes does not read back", n);

    at %= size;
    FUZZ_CHECK(spool_read_record(fd, 0, at, buf, SPOOL_MAX_RECORD, &len) == REC_TORN,
               "a frame of %zu bytes cut at %zu is not torn", size, at);

    frame[at] ^= mask;
    put_file(frame, size);
    enum spool_rec_state st = spool_read_record(fd, 0, size, buf, SPOOL_MAX_RECORD, &len);
    if (at < 4 || at >= 8)
        FUZZ_CHECK(st == REC_CORRUPT, "a flip at %zu of %zu bytes reads as %s", at, size,
                   spool_rec_state_text(st));
    else
        FUZZ_CHECK(st == expected(oracle_record(frame, size, 0, SPOOL_MAX_RECORD, &olen)),
                   "a flip in the length field reads as %s", spool_rec_state_text(st));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t caps[] = {SPOOL_MAX_RECORD, 0, 16, 300};
    struct fuzz_in in = {data, size};
    uint8_t flags = fuzz_u8(&in);
    size_t end = fuzz_u16(&in), at = fuzz_u16(&in);
    uint8_t mask = fuzz_u8(&in);
    size_t plen;
    const uint8_t *payload = fuzz_field(&in, &plen);
    if (mask == 0)
        mask = 0x5A;

    put_file(in.p, in.n);
    walk(in.p, end < in.n ? end : in.n, caps[flags & 3]);
    round_trip(payload, plen, at, mask);
    return 0;
}
