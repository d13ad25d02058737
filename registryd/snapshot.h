/*
 * snapshot.h — registryd's snapshot format: what GET /v1/snapshot returns,
 * what PUT /v1/snapshot and raft restore, and what raft keeps on disk.
 *
 *   header   "RSNAP002" | u32 format version (2) | u32 header length (40)
 *            | u64 store index | u64 record count | u64 reserved (0)
 *   records  [u8 table][u32 key length][u32 value length][key][value]
 *   trailer  "RSNAPEND" | u64 record count | u32 CRC32C of every byte before it
 *
 * Integers are little-endian. The tables are the store's (snap_table); a
 * record's value is the JSON text of an instance, a check or a server, an
 * instance or check ID (the by_name and svc_checks indexes) or a u64.
 * snap_validate checks everything — framing, checksum, every record against
 * record.h's schema, and that the indexes agree with the records — before a
 * restore changes anything, so a restore is all or nothing.
 *
 * Format 1 ("RSNAP001" then records, nothing else) is still read where it
 * can have been written by an older registryd: raft snapshots and restores
 * already in the raft log (SNAP_LEGACY_OK). Its records are validated all the
 * same.
 */
#ifndef REGISTRYD_SNAPSHOT_H
#define REGISTRYD_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SNAP_MAGIC "RSNAP002"
#define SNAP_MAGIC_V1 "RSNAP001"
#define SNAP_END_MAGIC "RSNAPEND"
#define SNAP_VERSION 2
#define SNAP_HEADER_LEN 40
#define SNAP_RECORD_HEAD_LEN 9
#define SNAP_TRAILER_LEN 20
#define SNAP_VALUE_MAX (16u << 20) /* one record */

/* The store's tables, in the order the store dumps them. */
enum snap_table {
    SNAP_SERVICES,
    SNAP_CHECKS,
    SNAP_BY_NAME,
    SNAP_SVC_CHECKS,
    SNAP_NAMES,
    SNAP_META,
    SNAP_TABLES
};

/* Flags for snap_validate / snap_each. */
#define SNAP_LEGACY_OK 1u /* accept format 1 (no header, checksum or end) */

struct snap_info {
    unsigned version;
    uint64_t index;   /* the store index the snapshot was taken at */
    uint64_t records; /* how many records */
};

/* ---- writing ---- */
void snap_header(unsigned char out[SNAP_HEADER_LEN], uint64_t index, uint64_t records);
void snap_record_head(unsigned char out[SNAP_RECORD_HEAD_LEN], enum snap_table t, uint32_t klen,
                      uint32_t vlen);
/* A record's head, and a header's record count, read back. */
struct snap_rec {
    unsigned table;
    uint32_t klen, vlen;
};
struct snap_rec snap_record_head_read(const unsigned char in[SNAP_RECORD_HEAD_LEN]);
uint64_t snap_header_records(const unsigned char head[SNAP_HEADER_LEN]);
/* crc: CRC32C of every byte before it, the trailer's magic and count
 * included (snap_crc32c from 0). */
void snap_trailer(unsigned char out[SNAP_TRAILER_LEN], uint64_t records, uint32_t crc);
/* Running CRC32C (Castagnoli): start with crc = 0. */
uint32_t snap_crc32c(uint32_t crc, const void *data, size_t len);
/* The same without the CPU's CRC instruction (for tests). */
uint32_t snap_crc32c_sw(uint32_t crc, const void *data, size_t len);

/* ---- reading ---- */
/* Check all of buf (see above). Returns 0 with info filled, or REG_EINVAL
 * with the reason in err ("record 3 (checks): check record: field ServiceID
 * missing"), or REG_ENOMEM. */
int snap_validate(const void *buf, size_t len, unsigned flags, struct snap_info *info, char *err,
                  size_t errlen);

/* Call cb for every record of a buffer snap_validate accepted (it returns
 * non-zero to stop; that value is returned). */
typedef int (*snap_record_cb)(enum snap_table t, const void *key, uint32_t klen, const void *val,
                              uint32_t vlen, void *arg);
int snap_each(const void *buf, size_t len, snap_record_cb cb, void *arg);

#endif
