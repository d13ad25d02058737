/*
 * snapshot.c — see snapshot.h. Validation happens in one pass over the
 * records plus a pass over the two indexes, with jansson objects as the hash
 * sets (IDs are checked keys: no NUL, so they are safe object keys).
 */
#include "snapshot.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "record.h"
#include "registry/error.h"

static const char *const table_names[SNAP_TABLES] = {
    [SNAP_SERVICES] = "services",     [SNAP_CHECKS] = "checks", [SNAP_BY_NAME] = "by_name",
    [SNAP_SVC_CHECKS] = "svc_checks", [SNAP_NAMES] = "names",   [SNAP_META] = "meta",
};

static void put_le32(unsigned char *p, uint32_t x)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(x >> (8 * i));
}

static void put_le64(unsigned char *p, uint64_t x)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(x >> (8 * i));
}

static uint32_t get_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_le64(const unsigned char *p)
{
    return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

/* ---- CRC32C (reflected, polynomial 0x82F63B78), slicing by 8 ---- */

static uint32_t crc_table[8][256];
static int crc_ready;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
    __atomic_store_n(&crc_ready, 1, __ATOMIC_RELEASE);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
/* SSE4.2's crc32 instruction is CRC32C: 8 bytes in a few cycles, five to ten
 * times the tables' speed. It matters because a raft snapshot is checksummed
 * on the raft thread, which applies no write meanwhile (at a million
 * instances, hundreds of MB). */
__attribute__((target("sse4.2"))) static uint32_t crc32c_sse42(uint32_t crc, const unsigned char *p,
                                                               size_t len)
{
    uint64_t c = ~crc;
    for (; len >= 8; p += 8, len -= 8) {
        uint64_t v;
        memcpy(&v, p, 8); /* unaligned, little-endian as the instruction wants */
        c = __builtin_ia32_crc32di(c, v);
    }
    uint32_t c32 = (uint32_t)c;
    while (len--)
        c32 = __builtin_ia32_crc32qi(c32, *p++);
    return ~c32;
}
#define HAVE_CRC32C_SSE42 1
#endif

/* The portable path, also the reference the tests hold the fast one to. */
uint32_t snap_crc32c_sw(uint32_t crc, const void *data, size_t len)
{
    const unsigned char *p = data;
    if (!__atomic_load_n(&crc_ready, __ATOMIC_ACQUIRE))
        crc_init(); /* idempotent: racing threads compute the same table */
    crc = ~crc;
    while (len >= 8) {
        uint32_t lo = crc ^ get_le32(p), hi = get_le32(p + 4);
        crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
              crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^ crc_table[3][hi & 0xff] ^
              crc_table[2][(hi >> 8) & 0xff] ^ crc_table[1][(hi >> 16) & 0xff] ^
              crc_table[0][hi >> 24];
        p += 8;
        len -= 8;
    }
    while (len--)
        crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xff];
    return ~crc;
}

uint32_t snap_crc32c(uint32_t crc, const void *data, size_t len)
{
#ifdef HAVE_CRC32C_SSE42
    if (__builtin_cpu_supports("sse4.2"))
        return crc32c_sse42(crc, data, len);
#endif
    return snap_crc32c_sw(crc, data, len);
}

/* ---- writing ---- */

void snap_header(unsigned char out[SNAP_HEADER_LEN], uint64_t index, uint64_t records)
{
    memcpy(out, SNAP_MAGIC, 8);
    put_le32(out + 8, SNAP_VERSION);
    put_le32(out + 12, SNAP_HEADER_LEN);
    put_le64(out + 16, index);
    put_le64(out + 24, records);
    put_le64(out + 32, 0);
}

void snap_record_head(unsigned char out[SNAP_RECORD_HEAD_LEN], enum snap_table t, uint32_t klen,
                      uint32_t vlen)
{
    out[0] = (unsigned char)t;
    put_le32(out + 1, klen);
    put_le32(out + 5, vlen);
}

struct snap_rec snap_record_head_read(const unsigned char in[SNAP_RECORD_HEAD_LEN])
{
    return (struct snap_rec){in[0], get_le32(in + 1), get_le32(in + 5)};
}

uint64_t snap_header_records(const unsigned char head[SNAP_HEADER_LEN])
{
    return get_le64(head + 24);
}

void snap_trailer(unsigned char out[SNAP_TRAILER_LEN], uint64_t records, uint32_t crc)
{
    memcpy(out, SNAP_END_MAGIC, 8);
    put_le64(out + 8, records);
    put_le32(out + 16, crc);
}

/* ---- reading ---- */

struct frame {
    unsigned version;
    const unsigned char *p, *end; /* the records */
    uint64_t index, records;
};

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen)
        vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return REG_EINVAL;
}

static int frame(const void *buf, size_t len, unsigned flags, struct frame *f, char *err,
                 size_t errlen)
{
    const unsigned char *b = buf;
    memset(f, 0, sizeof(*f));
    if (len >= 8 && memcmp(b, SNAP_MAGIC_V1, 8) == 0) {
        if (!(flags & SNAP_LEGACY_OK))
            return fail(err, errlen,
                        "snapshot format 1 (no checksum) is no longer accepted for restore; "
                        "take a new one with GET /v1/snapshot");
        f->version = 1;
        f->p = b + 8;
        f->end = b + len;
        return 0;
    }
    if (len < 8 || memcmp(b, SNAP_MAGIC, 8) != 0)
        return fail(err, errlen,
                    "Not a registryd snapshot (bad magic; GET /v1/snapshot makes one)");
    if (len < SNAP_HEADER_LEN + SNAP_TRAILER_LEN)
        return fail(err, errlen, "snapshot truncated: %zu bytes, shorter than header and trailer",
                    len);
    if (get_le32(b + 8) != SNAP_VERSION)
        return fail(err, errlen, "snapshot format version %u not supported (this is %u)",
                    get_le32(b + 8), SNAP_VERSION);
    if (get_le32(b + 12) != SNAP_HEADER_LEN || get_le64(b + 32) != 0)
        return fail(err, errlen, "snapshot header malformed");
    const unsigned char *t = b + len - SNAP_TRAILER_LEN;
    if (memcmp(t, SNAP_END_MAGIC, 8) != 0)
        return fail(err, errlen, "snapshot truncated or damaged: no end marker");
    uint32_t want = get_le32(t + 16), got = snap_crc32c(0, b, len - 4);
    if (want != got)
        return fail(err, errlen,
                    "snapshot checksum mismatch (CRC32C %08x, expected %08x): "
                    "damaged or truncated",
                    got, want);
    f->version = 2;
    f->index = get_le64(b + 16);
    f->records = get_le64(b + 24);
    if (get_le64(t + 8) != f->records)
        return fail(err, errlen, "snapshot record count in header and trailer differ");
    if (f->index >= RECORD_INDEX_MAX)
        return fail(err, errlen, "snapshot index %llu is too large (limit %llu)",
                    (unsigned long long)f->index, (unsigned long long)RECORD_INDEX_MAX);
    f->p = b + SNAP_HEADER_LEN;
    f->end = t;
    return 0;
}

/* Next record of a frame: 1 and the fields, 0 at the end, REG_EINVAL. */
static int next_record(const unsigned char **pp, const unsigned char *end, unsigned *table,
                       const unsigned char **key, uint32_t *klen, const unsigned char **val,
                       uint32_t *vlen)
{
    const unsigned char *p = *pp;
    if (p == end)
        return 0;
    if ((size_t)(end - p) < SNAP_RECORD_HEAD_LEN)
        return REG_EINVAL;
    struct snap_rec h = snap_record_head_read(p);
    *table = h.table;
    *klen = h.klen;
    *vlen = h.vlen;
    p += SNAP_RECORD_HEAD_LEN;
    if ((size_t)(end - p) < (uint64_t)*klen + *vlen)
        return REG_EINVAL;
    *key = p;
    *val = p + *klen;
    *pp = p + *klen + *vlen;
    return 1;
}

struct vstate {
    json_t *services;   /* ID -> Service name */
    json_t *checks;     /* CheckID -> its owner: ServiceID, or "_node:<Node>" */
    json_t *by_name;    /* [[name, id], ...] */
    json_t *svc_checks; /* [[sid, cid], ...] */
    uint64_t meta_index;
    bool has_index;
    uint64_t max_name_index; /* no service name changed after the store's index */
};

static int check_record(struct vstate *s, unsigned table, const unsigned char *key, uint32_t klen,
                        const unsigned char *val, uint32_t vlen, char *err, size_t errlen)
{
    char k[RECORD_KEY_MAX + 1], v[RECORD_KEY_MAX + 1];
    json_t *rec = NULL;
    int rc = 0;
    if (table >= SNAP_TABLES)
        return fail(err, errlen, "unknown table %u", table);
    if (!record_valid_key(key, klen, RECORD_KEY_MAX))
        return fail(err, errlen, "invalid key (empty, too long or with control characters)");
    if (vlen > SNAP_VALUE_MAX)
        return fail(err, errlen, "value too large (%u bytes)", vlen);
    memcpy(k, key, klen);
    k[klen] = '\0';
    switch ((enum snap_table)table) {
    case SNAP_SERVICES:
    case SNAP_CHECKS: {
        bool svc = table == SNAP_SERVICES;
        const char *idf = svc ? "ID" : "CheckID";
        json_t *set = svc ? s->services : s->checks;
        if ((rc = record_decode(svc ? RECORD_INSTANCE : RECORD_CHECK, val, vlen, &rec, err,
                                errlen)) != 0)
            return rc;
        if (strcmp(json_string_value(json_object_get(rec, idf)), k) != 0)
            rc = fail(err, errlen, "key %.64s and %s differ", k, idf);
        else if (json_object_get(set, k) != NULL)
            rc = fail(err, errlen, "duplicate key %.64s", k);
        else if (svc)
            json_object_set(set, k, json_object_get(rec, "Service"));
        else { /* a check is filed under its instance, or its node ("_node:<name>") */
            const char *sid = json_string_value(json_object_get(rec, "ServiceID"));
            const char *node = json_string_value(json_object_get(rec, "Node"));
            char owner[RECORD_KEY_MAX + 8];
            snprintf(owner, sizeof(owner), "%s%s", *sid ? "" : "_node:",
                     *sid   ? sid
                     : node ? node
                            : "");
            json_object_set_new(set, k, json_string(owner));
        }
        break;
    }
    case SNAP_BY_NAME:
    case SNAP_SVC_CHECKS:
        if (!record_valid_key(val, vlen, RECORD_KEY_MAX))
            return fail(err, errlen, "invalid index value under %.64s", k);
        memcpy(v, val, vlen);
        v[vlen] = '\0';
        json_array_append_new(table == SNAP_BY_NAME ? s->by_name : s->svc_checks,
                              json_pack("[s, s]", k, v));
        break;
    case SNAP_NAMES:
        if (vlen != 8)
            return fail(err, errlen, "name index of %.64s is not 8 bytes", k);
        if (get_le64(val) >= RECORD_INDEX_MAX)
            return fail(err, errlen, "name index of %.64s too large", k);
        if (get_le64(val) > s->max_name_index)
            s->max_name_index = get_le64(val);
        break;
    case SNAP_META:
        if (strcmp(k, "index") == 0) {
            if (vlen != 8)
                return fail(err, errlen, "store index is not 8 bytes");
            s->meta_index = get_le64(val);
            s->has_index = true;
            if (s->meta_index >= RECORD_INDEX_MAX)
                return fail(err, errlen, "store index %llu is too large (limit %llu)",
                            (unsigned long long)s->meta_index,
                            (unsigned long long)RECORD_INDEX_MAX);
        } else if (strncmp(k, "node:", 5) == 0) {
            if ((rc = record_decode(RECORD_NODE, val, vlen, &rec, err, errlen)) != 0)
                return rc;
            if (strcmp(json_string_value(json_object_get(rec, "Node")), k + 5) != 0)
                rc = fail(err, errlen, "node key %.64s and Node differ", k);
        } else if (strncmp(k, "server:", 7) == 0) {
            if ((rc = record_decode(RECORD_SERVER, val, vlen, &rec, err, errlen)) != 0)
                return rc;
            if (strcmp(json_string_value(json_object_get(rec, "Raft")), k + 7) != 0)
                rc = fail(err, errlen, "server key %.64s and Raft differ", k);
        } else if (strncmp(k, "acl:token:", 10) == 0) {
            if ((rc = record_decode(RECORD_ACL_TOKEN, val, vlen, &rec, err, errlen)) != 0)
                return rc;
            if (strcmp(json_string_value(json_object_get(rec, "AccessorID")), k + 10) != 0)
                rc = fail(err, errlen, "ACL token key %.64s and AccessorID differ", k);
        } else if (strncmp(k, "acl:policy:", 11) == 0) {
            if ((rc = record_decode(RECORD_ACL_POLICY, val, vlen, &rec, err, errlen)) != 0)
                return rc;
            if (strcmp(json_string_value(json_object_get(rec, "ID")), k + 11) != 0)
                rc = fail(err, errlen, "ACL policy key %.64s and ID differ", k);
        } else if (strcmp(k, "acl:bootstrap") == 0) {
            if ((rc = record_decode(RECORD_ACL_BOOTSTRAP, val, vlen, &rec, err, errlen)) != 0)
                return rc;
        } else {
            return fail(err, errlen, "unknown meta key %.64s", k);
        }
        break;
    case SNAP_TABLES:
        break;
    }
    json_decref(rec);
    return rc;
}

/* The indexes must agree with the records, one entry per record. */
static int check_indexes(struct vstate *s, char *err, size_t errlen)
{
    size_t i, n_check_links = 0;
    json_t *pair;
    json_t *seen = json_object();
    int rc = 0;
    json_array_foreach(s->by_name, i, pair)
    {
        const char *name = json_string_value(json_array_get(pair, 0));
        const char *id = json_string_value(json_array_get(pair, 1));
        const char *has = json_string_value(json_object_get(s->services, id));
        if (has == NULL || strcmp(has, name) != 0 || json_object_get(seen, id)) {
            rc = fail(err, errlen, "index by_name: %.64s -> %.64s has no matching instance", name,
                      id);
            goto out;
        }
        json_object_set_new(seen, id, json_true());
    }
    if (json_object_size(seen) != json_object_size(s->services)) {
        rc = fail(err, errlen, "index by_name misses %zu instance(s)",
                  json_object_size(s->services) - json_object_size(seen));
        goto out;
    }
    json_object_clear(seen);
    json_array_foreach(s->svc_checks, i, pair)
    {
        const char *sid = json_string_value(json_array_get(pair, 0));
        const char *cid = json_string_value(json_array_get(pair, 1));
        const char *has = json_string_value(json_object_get(s->checks, cid));
        bool of_node = strncmp(sid, "_node:", 6) == 0;
        if (has == NULL || strcmp(has, sid) != 0 ||
            (!of_node && json_object_get(s->services, sid) == NULL)) {
            rc = fail(err, errlen, "index svc_checks: %.64s -> %.64s has no matching check", sid,
                      cid);
            goto out;
        }
        /* one link per check: a repeated pair would stand in for a missing
         * one and pass the count below */
        if (json_object_get(seen, cid) != NULL) {
            rc = fail(err, errlen, "index svc_checks: %.64s -> %.64s is repeated", sid, cid);
            goto out;
        }
        json_object_set_new(seen, cid, json_true());
        n_check_links++;
    }
    if (n_check_links != json_object_size(s->checks))
        rc = fail(err, errlen, "index svc_checks misses %zu check(s)",
                  json_object_size(s->checks) - n_check_links);
out:
    json_decref(seen);
    return rc;
}

int snap_validate(const void *buf, size_t len, unsigned flags, struct snap_info *info, char *err,
                  size_t errlen)
{
    struct frame f;
    int rc = frame(buf, len, flags, &f, err, errlen);
    if (rc != 0)
        return rc;
    struct vstate s = {json_object(), json_object(), json_array(), json_array(), 0, false, 0};
    if (!s.services || !s.checks || !s.by_name || !s.svc_checks) {
        rc = REG_ENOMEM;
        goto out;
    }
    const unsigned char *p = f.p, *key, *val;
    unsigned table;
    uint32_t klen, vlen;
    uint64_t n = 0;
    char why[256];
    for (;;) {
        int more = next_record(&p, f.end, &table, &key, &klen, &val, &vlen);
        if (more == 0)
            break;
        if (more < 0) {
            rc = fail(err, errlen, "record %llu: truncated", (unsigned long long)n);
            goto out;
        }
        if ((rc = check_record(&s, table, key, klen, val, vlen, why, sizeof(why))) != 0) {
            fail(err, errlen, "record %llu (%s): %s", (unsigned long long)n,
                 table < SNAP_TABLES ? table_names[table] : "?", why);
            goto out;
        }
        n++;
    }
    if (f.version == 2 && n != f.records) {
        rc = fail(err, errlen, "snapshot holds %llu records, its header says %llu",
                  (unsigned long long)n, (unsigned long long)f.records);
        goto out;
    }
    if (f.version == 2 && s.meta_index != f.index) {
        rc = fail(err, errlen, "store index %llu differs from the header's %llu",
                  (unsigned long long)s.meta_index, (unsigned long long)f.index);
        goto out;
    }
    if (s.max_name_index > s.meta_index) {
        rc = fail(err, errlen, "a service name's index %llu is above the store's %llu",
                  (unsigned long long)s.max_name_index, (unsigned long long)s.meta_index);
        goto out;
    }
    if ((rc = check_indexes(&s, why, sizeof(why))) != 0) {
        fail(err, errlen, "%s", why);
        goto out;
    }
    if (info) {
        info->version = f.version;
        info->index = f.version == 2 ? f.index : s.meta_index;
        info->records = n;
    }
out:
    json_decref(s.services);
    json_decref(s.checks);
    json_decref(s.by_name);
    json_decref(s.svc_checks);
    return rc;
}

int snap_each(const void *buf, size_t len, snap_record_cb cb, void *arg)
{
    struct frame f;
    int rc = frame(buf, len, SNAP_LEGACY_OK, &f, NULL, 0);
    if (rc != 0)
        return rc;
    const unsigned char *p = f.p, *key, *val;
    unsigned table;
    uint32_t klen, vlen;
    while ((rc = next_record(&p, f.end, &table, &key, &klen, &val, &vlen)) == 1) {
        if (table >= SNAP_TABLES)
            return REG_EINVAL;
        int stop = cb((enum snap_table)table, key, klen, val, vlen, arg);
        if (stop)
            return stop;
    }
    return rc;
}
