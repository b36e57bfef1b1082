/* spool_record.h — the spool's on-disk record format, on its own.
 *
 * A record is a 12-byte header, "STPL", the u32le payload length and the
 * u32le CRC-32C of the payload, then the payload. This file knows nothing of
 * segments, threads or event loops: the writer frames with it, recovery and
 * spool_peek read with it, and a harness can link it alone. */
#ifndef STEEPLE_SPOOL_RECORD_H
#define STEEPLE_SPOOL_RECORD_H

#include <stddef.h>
#include <stdint.h>

#define SPOOL_HEADER_BYTES 12u

/* What reading one record found. */
enum spool_rec_state { REC_OK, REC_TORN, REC_CORRUPT, REC_IO };

/* "ok", "torn record", "corrupt record" or "read error". */
const char *spool_rec_state_text(enum spool_rec_state st);

/* Writes the header of a record of len payload bytes at data into h. */
void spool_frame_header(unsigned char h[SPOOL_HEADER_BYTES], const void *data, uint32_t len);

/* Reads and checks the record at off of a file whose valid part ends at
 * `size`: its payload goes to buf (room for cap bytes), its length to *len.
 * A length over cap counts as corrupt. REC_TORN: the file (or its valid
 * part) ends inside the record; REC_CORRUPT: bad magic, length or CRC;
 * REC_IO: a read error (errno). */
enum spool_rec_state spool_read_record(int fd, uint64_t off, uint64_t size, unsigned char *buf,
                                       size_t cap, uint32_t *len)
    __attribute__((warn_unused_result));

#endif
