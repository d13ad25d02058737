/*
 * store.c — LMDB-backed store (see store.h for the record layout and the
 * threading rules). Every LMDB return value is checked; a failed write
 * transaction is aborted so that a command applies entirely or not at all.
 */
#include "store.h"

#include <arpa/inet.h>
#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "command.h"
#include "duration.h"
#include "log.h"
#include "record.h"
#include "registry/error.h"
#include "snapshot.h"

/* The tables, numbered as snapshots number them (snapshot.h). */
enum store_db {
    DB_SERVICES = SNAP_SERVICES,
    DB_CHECKS = SNAP_CHECKS,
    DB_BY_NAME = SNAP_BY_NAME,
    DB_SVC_CHECKS = SNAP_SVC_CHECKS,
    DB_NAMES = SNAP_NAMES,
    DB_META = SNAP_META,
    DB_COUNT = SNAP_TABLES, /* the tables snapshots carry */
    /* derived from the tables above, rebuilt rather than carried (see
     * "derived indexes" below) */
    DB_BY_STATE = DB_COUNT, /* check Status -> CheckIDs (dupsort) */
    DB_NAME_TAGS,           /* name "\0" tag -> instance ID "\0" u32 position (dupsort) */
    DB_NODE_INSTS,          /* node -> IDs of the instances on it (dupsort) */
    DB_NAME_SUMMARY,        /* name -> its tags as a JSON array, in listing order */
    DB_ADDR_INSTS,          /* IP address (binary) -> IDs of the instances at it (dupsort) */
    DB_DERIVED,             /* "version" -> u32: what the two above were built as */
    DB_ALL
};

static const struct {
    const char *name;
    unsigned flags;
} store_dbs[DB_ALL] = {
    [DB_SERVICES] = {"services", 0},
    [DB_CHECKS] = {"checks", 0},
    [DB_BY_NAME] = {"by_name", MDB_DUPSORT},
    [DB_SVC_CHECKS] = {"svc_checks", MDB_DUPSORT},
    [DB_NAMES] = {"names", 0},
    [DB_META] = {"meta", 0},
    [DB_BY_STATE] = {"by_state", MDB_DUPSORT},
    [DB_NAME_TAGS] = {"name_tags", MDB_DUPSORT},
    [DB_NODE_INSTS] = {"node_insts", MDB_DUPSORT},
    [DB_NAME_SUMMARY] = {"name_summary", 0},
    [DB_ADDR_INSTS] = {"addr_insts", MDB_DUPSORT},
    [DB_DERIVED] = {"derived", 0},
};

struct store {
    MDB_env *env;
    MDB_dbi dbi[DB_ALL];
    /* disk space (raft thread, but space_ok is read by any thread) */
    char dir[4096];
    uint64_t reserved;      /* bytes of the data file backed by allocated blocks */
    uint64_t next_statvfs;  /* monotonic ms of the next free-space look */
    bool space_ok;          /* atomic: writes may be proposed */
    uint64_t reused_applied; /* kept from the last clean stop: its raft index; 0: rebuilt */
    void *map;      /* LMDB's map of the data file (store_release_map); NULL: not found */
    size_t map_len;
    bool services_touched; /* raft thread: this apply wrote a name's summary */
    bool instances_touched; /* raft thread: this apply wrote or removed an instance */
    bool nodes_touched;    /* raft thread: this apply added or removed a node */
};

/* DB_DERIVED key: the index of the last change to the service names or
 * their tags (what /v1/catalog/services answers); absent after a rebuild,
 * when store_services_index falls back to the store's own index. */
#define SERVICES_INDEX_KEY "services_index"
/* DB_META key (this file's own, left out of snapshots as the restart
 * record is): the index of the last write or removal of any instance; with
 * SERVICES_INDEX_KEY, what /v1/catalog/services answers (Consul's services
 * table index, which every instance's registration and removal moves). In
 * DB_META because its page, where "index" is, is written by every apply
 * anyway: in DB_DERIVED it cost a page more per write (4 KiB of store file
 * per write while a reader held old pages). Absent in a store restored or
 * written before it: SERVICES_INDEX_KEY alone. */
#define INSTANCES_INDEX_KEY "instances_index"
/* DB_DERIVED key: the index of the last change to the set of node names
 * (a node's first instance or catalog record, or its last one gone);
 * absent after a rebuild, as SERVICES_INDEX_KEY. */
#define NODES_INDEX_KEY "nodes_index"

/* Where LMDB mapped the data file: mdb_env_info names the address only
 * for MDB_FIXEDMAP, so /proc/self/maps is read for the mapping of the
 * file's inode at offset 0 (LMDB maps it once, whole, at open). */
static void find_map(struct store *s)
{
    int fd;
    struct stat st;
    s->map = NULL;
    if (mdb_env_get_fd(s->env, &fd) != 0 || fstat(fd, &st) != 0)
        return;
    FILE *f = fopen("/proc/self/maps", "r");
    if (f == NULL)
        return;
    char line[4608];
    while (fgets(line, sizeof(line), f) != NULL) {
        unsigned long lo, hi, off, ino;
        unsigned dmaj, dmin;
        if (sscanf(line, "%lx-%lx %*s %lx %x:%x %lu", &lo, &hi, &off, &dmaj, &dmin, &ino) == 6 &&
            ino == (unsigned long)st.st_ino && off == 0 && hi > lo &&
            makedev(dmaj, dmin) == st.st_dev) {
            s->map = (void *)lo;
            s->map_len = hi - lo;
            break;
        }
    }
    fclose(f);
}

/* LMDB writes through its map (MDB_WRITEMAP) into a sparse file: a page
 * landing on a hole when the file system is full is a SIGBUS, not an error.
 * So the file is kept allocated (fallocate) STORE_HEADROOM ahead of what
 * LMDB uses, and writes are refused (REG_ENOSPACE) while that cannot be done
 * or while the file system has less than STORE_MIN_FREE left for the raft
 * log (whose next segments are allocated ahead too). */
#define STORE_HEADROOM (32ULL << 20)
#define STORE_MIN_FREE (16ULL << 20)
#define STORE_STATVFS_MS 500

struct store_read {
    struct store *s;
    MDB_txn *txn;
    /* kept open for store_owner_checks_raw: a cursor still on the page of
     * the last key finds the next one there (LMDB compares with the page's
     * bounds first), and a render asks in key order */
    MDB_cursor *owner_cur, *check_cur;
};

#define STORE_MAP_SIZE (16ULL << 30) /* sparse; resizing needs all txns closed */

/* Our own REG_E* codes are small negatives; LMDB's are errno values or
 * MDB_* codes far below them. */
static int is_reg_error(int rc)
{
    return rc < 0 && rc > -1000;
}

static int lmdb_fail(const char *what, int rc)
{
    log_error("store", "msg=\"%s failed\" error=\"%s\"", what, mdb_strerror(rc));
    return REG_ESTORE;
}

/* ---- open / close ------------------------------------------------------ */

static uint64_t get_u64(MDB_txn *txn, MDB_dbi dbi, const char *key);
static MDB_val val_str(const char *str);
static int derived_ensure(struct store *s);
static int put_u64(MDB_txn *txn, MDB_dbi dbi, const char *key, uint64_t x);

/* Open the environment in dir and its tables (creating what is missing). */
static int env_open(struct store *s, const char *dir)
{
    MDB_txn *txn = NULL;
    int rc;
    if ((rc = mdb_env_create(&s->env)) != 0 || (rc = mdb_env_set_maxdbs(s->env, DB_ALL)) != 0 ||
        (rc = mdb_env_set_mapsize(s->env, STORE_MAP_SIZE)) != 0 ||
        (rc = mdb_env_set_maxreaders(s->env, 1024)) != 0 ||
        /* WRITEMAP: a commit is stores into the map, no write(2): durability
         * is the raft log's job (see "restart without a rebuild" below) */
        (rc = mdb_env_open(s->env, dir, MDB_NOSYNC | MDB_NOTLS | MDB_NORDAHEAD | MDB_WRITEMAP,
                           0600)) != 0)
        return rc;
    find_map(s);
    if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0)
        return rc;
    for (int i = 0; i < DB_ALL; i++) {
        if ((rc = mdb_dbi_open(txn, store_dbs[i].name, MDB_CREATE | store_dbs[i].flags,
                               &s->dbi[i])) != 0) {
            mdb_txn_abort(txn);
            return rc;
        }
    }
    return mdb_txn_commit(txn);
}

/*
 * ---- restart without a rebuild ----
 * The store is written without fsync, so after a crash only the raft log
 * can say what it holds, and it is rebuilt from raft's snapshot and log.
 * A clean stop leaves a record instead (meta "restart"): the raft index the
 * store had applied, a fingerprint of the raft directory as raft left it,
 * and the kernel's boot id. The next start keeps the file when all three
 * still hold: the same boot (so the page cache the store was written
 * through is the file's content) and the same raft files (nothing removed,
 * restored or replaced since); raft then skips what the store already has.
 * The record is deleted as the store opens: a crash from then on rebuilds.
 */
#define STORE_RESTART_KEY "restart"

/* DB_META keys of this file's own, which snapshots leave out: the restart
 * record and INSTANCES_INDEX_KEY. */
static const char *const local_keys[] = {STORE_RESTART_KEY, INSTANCES_INDEX_KEY};

static bool is_local_key(const MDB_val *k)
{
    for (size_t i = 0; i < sizeof(local_keys) / sizeof(local_keys[0]); i++)
        if (k->mv_size == strlen(local_keys[i]) &&
            memcmp(k->mv_data, local_keys[i], k->mv_size) == 0)
            return true;
    return false;
}

static void boot_id(char out[64])
{
    out[0] = '\0';
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (f == NULL)
        return;
    if (fgets(out, 64, f) == NULL)
        out[0] = '\0';
    out[strcspn(out, "\n")] = '\0';
    fclose(f);
}

/* The applied index of the restart record readable in txn when it matches
 * (fingerprint, boot), else 0. */
static uint64_t restart_record_applied(MDB_txn *txn, MDB_dbi meta, uint64_t fingerprint)
{
    MDB_val k = val_str(STORE_RESTART_KEY), v;
    if (mdb_get(txn, meta, &k, &v) != 0)
        return 0;
    char rec[160], now[64], id[64] = "";
    unsigned long long a = 0, fp = 0;
    size_t n = v.mv_size < sizeof(rec) - 1 ? v.mv_size : sizeof(rec) - 1;
    memcpy(rec, v.mv_data, n);
    rec[n] = '\0';
    boot_id(now);
    if (sscanf(rec, "%llu %llu %63s", &a, &fp, id) == 3 && fp == fingerprint &&
        now[0] != '\0' && strcmp(id, now) == 0)
        return a;
    return 0;
}

/* Read and delete the restart record; its applied index when it matches. */
static uint64_t take_restart_record(struct store *s, uint64_t fingerprint)
{
    MDB_txn *txn = NULL;
    MDB_val k = val_str(STORE_RESTART_KEY);
    if (mdb_txn_begin(s->env, NULL, 0, &txn) != 0)
        return 0;
    uint64_t applied = restart_record_applied(txn, s->dbi[DB_META], fingerprint);
    (void)mdb_del(txn, s->dbi[DB_META], &k, NULL);
    return mdb_txn_commit(txn) == 0 ? applied : 0;
}

/* Does the file reach the last page its meta page says is in use? A file
 * cut short (a full disk, a bad copy) would fault with SIGBUS at the first
 * read past its end; such a file is not kept (rebuilt from raft). LMDB has
 * no checksums: a page damaged inside the file is not seen here. */
static bool file_holds_its_pages(MDB_env *env, const char *file)
{
    MDB_envinfo info;
    MDB_stat st;
    struct stat fs;
    if (mdb_env_info(env, &info) != 0 || mdb_env_stat(env, &st) != 0 || stat(file, &fs) != 0)
        return false;
    uint64_t need = ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
    if ((uint64_t)fs.st_size >= need)
        return true;
    log_warn("store",
             "msg=\"store file shorter than its pages; rebuilding it from the raft log\" "
             "file=%s bytes=%lld needs=%llu",
             file, (long long)fs.st_size, (unsigned long long)need);
    return false;
}

bool store_restart_possible(const char *file, uint64_t fingerprint)
{
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi meta;
    uint64_t applied = 0;
    if (fingerprint == 0 || access(file, F_OK) != 0)
        return false;
    if (mdb_env_create(&env) == 0 && mdb_env_set_maxdbs(env, DB_COUNT) == 0 &&
        mdb_env_set_mapsize(env, STORE_MAP_SIZE) == 0 &&
        mdb_env_open(env, file, MDB_RDONLY | MDB_NOSUBDIR | MDB_NOLOCK, 0600) == 0 &&
        file_holds_its_pages(env, file) && mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) == 0) {
        if (mdb_dbi_open(txn, store_dbs[DB_META].name, 0, &meta) == 0)
            applied = restart_record_applied(txn, meta, fingerprint);
        mdb_txn_abort(txn);
    }
    if (env)
        mdb_env_close(env);
    return applied > 0;
}

int store_mark_clean(struct store *s, uint64_t applied, uint64_t fingerprint)
{
    char rec[160], id[64];
    MDB_txn *txn = NULL;
    boot_id(id);
    if (id[0] == '\0' || applied == 0 || fingerprint == 0)
        return REG_EINVAL;
    snprintf(rec, sizeof(rec), "%llu %llu %s", (unsigned long long)applied,
             (unsigned long long)fingerprint, id);
    MDB_val k = val_str(STORE_RESTART_KEY), v = val_str(rec);
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    /* the derived indexes are as of this index: an older registryd that
     * keeps the file and writes to it (without them) moves the index on */
    if (rc == 0 && ((rc = mdb_put(txn, s->dbi[DB_META], &k, &v, 0)) != 0 ||
                    (rc = put_u64(txn, s->dbi[DB_DERIVED], "index",
                                  get_u64(txn, s->dbi[DB_META], "index"))) != 0))
        mdb_txn_abort(txn);
    else if (rc == 0)
        rc = mdb_txn_commit(txn);
    return rc == 0 ? 0 : lmdb_fail("restart record", rc);
}

uint64_t store_reused_applied(const struct store *s)
{
    return s->reused_applied;
}

int store_open(const char *dir, uint64_t raft_fingerprint, struct store **out, char *err,
               size_t errlen)
{
    struct store *s = calloc(1, sizeof(*s));
    int rc;
    char path[4096];

    if (s == NULL)
        return REG_ENOMEM;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        goto fail;
    }
    snprintf(path, sizeof(path), "%s/data.mdb", dir);
    if (raft_fingerprint != 0 && access(path, F_OK) == 0 && env_open(s, dir) == 0)
        s->reused_applied = take_restart_record(s, raft_fingerprint);
    if (s->reused_applied != 0 && derived_ensure(s) != 0) {
        /* a file from before the indexes it should have, which cannot
         * be indexed now: rebuilt from raft like any file not kept */
        log_warn("store",
                 "msg=\"kept store file could not be indexed; rebuilding it from the "
                 "raft log\" dir=%s",
                 dir);
        s->reused_applied = 0;
    }
    if (s->reused_applied == 0) {
        /* the Raft log is the durable record: start from an empty store */
        if (s->env) {
            mdb_env_close(s->env);
            s->env = NULL;
        }
        if (unlink(path) != 0 && errno != ENOENT) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            goto fail;
        }
        snprintf(path, sizeof(path), "%s/lock.mdb", dir);
        (void)unlink(path);
        if ((rc = env_open(s, dir)) != 0)
            goto fail_rc;
        if (derived_ensure(s) != 0) {
            snprintf(err, errlen, "%s: cannot write the store's indexes", dir);
            goto fail;
        }
    }
    snprintf(s->dir, sizeof(s->dir), "%s", dir);
    s->space_ok = true;
    if (store_reserve(s, 0) != 0)
        log_error("store", "msg=\"no space on the data disk at start; writes refused until there "
                           "is\" dir=%s", dir);
    *out = s;
    return 0;

fail_rc:
    snprintf(err, errlen, "%s: lmdb: %s", dir, mdb_strerror(rc));
fail:
    store_free(s);
    return REG_ESTORE;
}

int store_peek(const char *file, uint64_t *index, uint64_t *instances, void **snap, size_t *len)
{
    struct store *s = calloc(1, sizeof(*s));
    MDB_txn *txn = NULL;
    int rc;
    *index = *instances = 0;
    if (snap)
        *snap = NULL;
    if (s == NULL)
        return REG_ENOMEM;
    if (access(file, F_OK) != 0) {
        free(s);
        return REG_ENOTFOUND;
    }
    if ((rc = mdb_env_create(&s->env)) != 0 || (rc = mdb_env_set_maxdbs(s->env, DB_COUNT)) != 0 ||
        (rc = mdb_env_set_mapsize(s->env, STORE_MAP_SIZE)) != 0 ||
        (rc = mdb_env_open(s->env, file, MDB_RDONLY | MDB_NOSUBDIR | MDB_NOLOCK, 0600)) != 0 ||
        (rc = file_holds_its_pages(s->env, file) ? 0 : MDB_CORRUPTED) != 0 ||
        (rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn)) != 0)
        goto out;
    for (int i = 0; i < DB_COUNT && rc == 0; i++)
        rc = mdb_dbi_open(txn, store_dbs[i].name, store_dbs[i].flags, &s->dbi[i]);
    if (rc == 0) {
        MDB_stat st;
        *index = get_u64(txn, s->dbi[DB_META], "index");
        *instances = mdb_stat(txn, s->dbi[DB_SERVICES], &st) == 0 ? st.ms_entries : 0;
    }
    if (rc == 0)
        rc = mdb_txn_commit(txn); /* keeps the table handles (an abort drops them) */
    else
        mdb_txn_abort(txn);
    if (rc == 0 && snap)
        rc = store_snapshot(s, snap, len);
out:
    store_free(s);
    return rc == 0 ? 0 : rc == MDB_NOTFOUND ? REG_ENOTFOUND : REG_ESTORE;
}

int store_reserve(struct store *s, uint64_t extra)
{
    MDB_envinfo info;
    MDB_stat st;
    int fd = -1, rc = 0;
    uint64_t now = mono_ms();
    bool was = __atomic_load_n(&s->space_ok, __ATOMIC_ACQUIRE), ok = true;
    uint64_t avail = UINT64_MAX;
    if (mdb_env_info(s->env, &info) != 0 || mdb_env_stat(s->env, &st) != 0 ||
        mdb_env_get_fd(s->env, &fd) != 0)
        return 0; /* cannot tell: do not block writes on it */
    uint64_t used = (uint64_t)(info.me_last_pgno + 1) * st.ms_psize;
    uint64_t want = used + STORE_HEADROOM + extra;
    if (want > info.me_mapsize)
        want = info.me_mapsize;
    if (want > s->reserved && (extra > 0 || used + STORE_HEADROOM / 2 > s->reserved || !was)) {
        int e = posix_fallocate(fd, (off_t)s->reserved, (off_t)(want - s->reserved));
        if (e == 0)
            s->reserved = want;
        else
            ok = false, rc = e;
    }
    if (ok && (now >= s->next_statvfs || !was)) {
        struct statvfs vfs;
        s->next_statvfs = now + STORE_STATVFS_MS;
        if (statvfs(s->dir, &vfs) == 0) {
            avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
            ok = avail >= STORE_MIN_FREE;
        }
    } else if (ok && extra == 0) {
        return 0; /* nothing looked at changed */
    }
    if (ok != was) {
        __atomic_store_n(&s->space_ok, ok, __ATOMIC_RELEASE);
        if (ok)
            log_warn("store", "msg=\"space on the data disk again; writes resume\" dir=%s", s->dir);
        else
            log_error("store",
                      "msg=\"data disk full: writes refused (reads go on) until space is freed\" "
                      "dir=%s error=\"%s\" available_bytes=%llu",
                      s->dir, rc ? strerror(rc) : "below the reserve",
                      (unsigned long long)(avail == UINT64_MAX ? 0 : avail));
    }
    return ok ? 0 : REG_ENOSPACE;
}

bool store_space_ok(struct store *s)
{
    return __atomic_load_n(&s->space_ok, __ATOMIC_ACQUIRE);
}

void store_free(struct store *s)
{
    if (s == NULL)
        return;
    if (s->env)
        mdb_env_close(s->env);
    free(s);
}

/* ---- small helpers ----------------------------------------------------- */

static MDB_val val_str(const char *str)
{
    MDB_val v = {strlen(str), (void *)str};
    return v;
}

static uint64_t get_u64(MDB_txn *txn, MDB_dbi dbi, const char *key)
{
    MDB_val k = val_str(key), v;
    uint64_t x = 0;
    if (mdb_get(txn, dbi, &k, &v) == 0 && v.mv_size == sizeof(x))
        memcpy(&x, v.mv_data, sizeof(x));
    return x;
}

static int put_u64(MDB_txn *txn, MDB_dbi dbi, const char *key, uint64_t x)
{
    MDB_val k = val_str(key), v = {sizeof(x), &x};
    return mdb_put(txn, dbi, &k, &v, 0);
}

/* Which record kind a table holds; meta holds servers ("server:..."), nodes
 * ("node:...") and ACL records ("acl:..."), the only JSON there. */
static enum record_kind kind_of(struct store *s, MDB_dbi dbi, const void *key, size_t klen)
{
    if (dbi == s->dbi[DB_SERVICES])
        return RECORD_INSTANCE;
    if (dbi == s->dbi[DB_CHECKS])
        return RECORD_CHECK;
    if (klen >= 10 && memcmp(key, "acl:token:", 10) == 0)
        return RECORD_ACL_TOKEN;
    if (klen >= 11 && memcmp(key, "acl:policy:", 11) == 0)
        return RECORD_ACL_POLICY;
    if (klen == 13 && memcmp(key, "acl:bootstrap", 13) == 0)
        return RECORD_ACL_BOOTSTRAP;
    return klen >= 5 && memcmp(key, "node:", 5) == 0 ? RECORD_NODE : RECORD_SERVER;
}

/* A record read back from LMDB is checked like any other input: a damaged
 * one is reported (rate-limited) and treated as absent, never handed on. */
static json_t *load_record(struct store *s, MDB_dbi dbi, const MDB_val *k, const MDB_val *v)
{
    char why[256];
    json_t *obj;
    if (record_decode(kind_of(s, dbi, k->mv_data, k->mv_size), v->mv_data, v->mv_size, &obj, why,
                      sizeof(why)) != 0) {
        log_limited(LOG_ERROR, "store", "msg=\"damaged record skipped\" error=\"%s\"", why);
        return NULL;
    }
    return obj;
}

static int get_json_s(struct store *s, MDB_txn *txn, MDB_dbi dbi, const char *key, json_t **out)
{
    if (key == NULL || *key == '\0')
        return REG_ENOTFOUND; /* no record has an empty key (LMDB: MDB_BAD_VALSIZE) */
    MDB_val k = val_str(key), v;
    int rc = mdb_get(txn, dbi, &k, &v);
    if (rc == MDB_NOTFOUND)
        return REG_ENOTFOUND;
    if (rc != 0)
        return lmdb_fail("mdb_get", rc);
    *out = load_record(s, dbi, &k, &v);
    return *out ? 0 : REG_ESTORE;
}

/* Instances and checks are stored packed (record.h); other records plain. */
static bool packs(struct store *s, MDB_dbi dbi)
{
    return dbi == s->dbi[DB_SERVICES] || dbi == s->dbi[DB_CHECKS];
}

/* Put len bytes of JSON text at key: packed where packs(). */
static int put_text(struct store *s, MDB_txn *txn, MDB_dbi dbi, const MDB_val *k, const char *text,
                    size_t len)
{
    char small[2048], *packed = (char *)text;
    if (packs(s, dbi)) {
        packed = len <= sizeof(small) ? small : malloc(len);
        if (packed == NULL)
            return REG_ENOMEM;
        len = record_pack(text, len, packed);
    }
    MDB_val v = {len, packed};
    int rc = mdb_put(txn, dbi, (MDB_val *)k, &v, 0);
    if (packed != text && packed != small)
        free(packed);
    return rc;
}

/* Write a record; one that does not match the schema is refused (a command
 * from the raft log is input like any other). */
static int put_json_s(struct store *s, MDB_txn *txn, MDB_dbi dbi, const char *key, json_t *obj)
{
    char why[256];
    if (record_check(kind_of(s, dbi, key, strlen(key)), obj, why, sizeof(why)) != 0) {
        log_limited(LOG_WARN, "store", "msg=\"command refused\" error=\"%s\"", why);
        return REG_EINVAL;
    }
    char *text = json_dumps(obj, JSON_COMPACT);
    if (text == NULL)
        return REG_ENOMEM;
    MDB_val k = val_str(key);
    int rc = put_text(s, txn, dbi, &k, text, strlen(text));
    free(text);
    return rc;
}

static int del_key(MDB_txn *txn, MDB_dbi dbi, const char *key, const char *dupval)
{
    MDB_val k = val_str(key), v;
    if (dupval)
        v = val_str(dupval);
    int rc = mdb_del(txn, dbi, &k, dupval ? &v : NULL);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static const char *jstr(json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : "";
}

static void change_add(struct store_change *chg, const char *name)
{
    for (int i = 0; i < chg->n; i++)
        if (strcmp(chg->names[i], name) == 0)
            return;
    if (chg->n < 2)
        snprintf(chg->names[chg->n++], sizeof(chg->names[0]), "%s", name);
}

struct growbuf {
    unsigned char *p;
    size_t len, cap;
};

static int gb_put(struct growbuf *g, const void *data, size_t n)
{
    if (g->len + n > g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 65536;
        while (cap < g->len + n)
            cap *= 2;
        unsigned char *p = realloc(g->p, cap);
        if (p == NULL)
            return REG_ENOMEM;
        g->p = p;
        g->cap = cap;
    }
    memcpy(g->p + g->len, data, n);
    g->len += n;
    return 0;
}

/* One (name, tag) entry of name_tags: the tag (in the key) and where a
 * walk of the name's instances meets it first (the key's first value). */
struct tag_first {
    struct store_str tag;
    const unsigned char *id;
    size_t idlen;
    uint32_t pos;
};

static int cmp_tag_first(const void *pa, const void *pb)
{
    const struct tag_first *a = pa, *b = pb;
    size_t n = a->idlen < b->idlen ? a->idlen : b->idlen;
    int c = memcmp(a->id, b->id, n);
    if (c != 0)
        return c;
    if (a->idlen != b->idlen)
        return a->idlen < b->idlen ? -1 : 1;
    return a->pos < b->pos ? -1 : a->pos > b->pos;
}

/* ---- derived indexes --------------------------------------------------------
 * What listings read instead of every record (issue 16: a listing costs
 * what it returns):
 *   by_state   a check's Status -> its CheckID (GET /v1/health/state/:state)
 *   name_tags  name "\0" tag -> ID "\0" position, for every instance of name
 *              carrying tag at that position (its first) of its Tags; a
 *              key's first value is then the instance in which a walk of
 *              name's instances by ID meets the tag first, and where in its
 *              Tags, which is all that GET /v1/catalog/services needs to
 *              list a name's distinct tags in the order such a walk would.
 *              A tag too long for a key (LMDB's 511 bytes with the name) is
 *              filed as name "\0\xff" (no UTF-8 tag starts with 0xff) -> ID:
 *              that name is listed by walking its instances.
 *   name_summary name -> the JSON text GET /v1/catalog/services shows for
 *              it (its tags in the order name_tags gives), rewritten when
 *              a write changes name's entries there or the name comes or
 *              goes in by_name; TAG_OVERFLOW alone for a name to walk; "[]"
 *              for a name without tags. Exactly the names with instances
 *              have one: a listing reads one record per name and nothing
 *              else (not by_name, which has a record per instance).
 *   node_insts node -> the IDs of the instances registered on it; a key's
 *              first value is the smallest, the instance a walk of every
 *              instance by ID meets first on that node (GET
 *              /v1/catalog/nodes and the node routes show nodes through it).
 *   addr_insts an IP address (a family byte, 4 or 6, then its 4 or 16
 *              bytes) -> the IDs of the instances whose Address or
 *              NodeAddress is it, as inet_pton reads them (reverse DNS).
 * Every write path keeps them in the same transaction as the records. They
 * are not in snapshots (snapshot.h's tables): a restore rebuilds them, and
 * so does store_open for a kept file built without them (derived "version"
 * absent or older) or written to since they were last right (derived
 * "index", set at a clean stop, is not the store's index: an older
 * registryd kept the file and wrote to it). */
#define STORE_DERIVED_VERSION 5
#define TAG_OVERFLOW '\xff'

static const char *const check_states[] = {"passing", "warning", "critical"};

static int state_add(struct store *s, MDB_txn *txn, const char *status, const char *cid)
{
    MDB_val k = val_str(status), v = val_str(cid);
    int rc = mdb_put(txn, s->dbi[DB_BY_STATE], &k, &v, MDB_NODUPDATA);
    return rc == MDB_KEYEXIST ? 0 : rc;
}

/* status: where cid should be filed; NULL (a check about to go whose
 * record is not at hand), or not found there: wherever it is. */
static int state_del(struct store *s, MDB_txn *txn, const char *status, const char *cid)
{
    MDB_val v = val_str(cid);
    if (status != NULL) {
        MDB_val k = val_str(status);
        int rc = mdb_del(txn, s->dbi[DB_BY_STATE], &k, &v);
        if (rc != MDB_NOTFOUND)
            return rc;
    }
    for (size_t i = 0; i < sizeof(check_states) / sizeof(check_states[0]); i++) {
        MDB_val k = val_str(check_states[i]);
        int rc = mdb_del(txn, s->dbi[DB_BY_STATE], &k, &v);
        if (rc == 0 || rc != MDB_NOTFOUND)
            return rc;
    }
    return 0;
}

/* A check's record changed from old_status (NULL: it is new) to its
 * Status now. */
static int state_move(struct store *s, MDB_txn *txn, const char *old_status, json_t *check,
                      const char *cid)
{
    const char *now = json_string_value(json_object_get(check, "Status"));
    if (now == NULL)
        return REG_EINVAL;
    if (old_status != NULL && strcmp(old_status, now) == 0)
        return 0;
    int rc = old_status != NULL ? state_del(s, txn, old_status, cid) : 0;
    return rc == 0 ? state_add(s, txn, now, cid) : rc;
}

/* File (add) or unfile instance id of name under each of its distinct
 * tags (n strings). *first (may be NULL) is set when the entry was or
 * became a key's first (its summary may change). */
static int tags_file(struct store *s, MDB_txn *txn, const char *name, size_t nlen, const char *id,
                     size_t idlen, const struct store_str *tags, size_t n, bool add, bool *first)
{
    if (n == 0)
        return 0;
    size_t maxkey = (size_t)mdb_env_get_maxkeysize(s->env);
    unsigned char val[RECORD_KEY_MAX + 8], key[1024];
    if (idlen > RECORD_KEY_MAX || nlen + 2 > maxkey || nlen + 2 > sizeof(key))
        return REG_EINVAL; /* record.c refuses such names and IDs */
    memcpy(val, id, idlen);
    val[idlen] = '\0';
    memcpy(key, name, nlen);
    key[nlen] = '\0';
    int rc = 0;
    MDB_cursor *cur = NULL;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct store_str *t = &tags[i];
        bool again = false; /* a tag's first place is its place */
        for (size_t j = 0; j < i && !again; j++)
            again = tags[j].len == t->len && memcmp(tags[j].p, t->p, t->len) == 0;
        if (again)
            continue;
        size_t klen = nlen + 1 + t->len;
        uint32_t pos = (uint32_t)i;
        if (klen > maxkey || klen > sizeof(key)) {
            key[nlen + 1] = (unsigned char)TAG_OVERFLOW;
            klen = nlen + 2;
            pos = 0;
        } else {
            memcpy(key + nlen + 1, t->p, t->len);
        }
        val[idlen + 1] = (unsigned char)(pos >> 24);
        val[idlen + 2] = (unsigned char)(pos >> 16);
        val[idlen + 3] = (unsigned char)(pos >> 8);
        val[idlen + 4] = (unsigned char)pos;
        MDB_val k = {klen, key}, v = {idlen + 5, val}, fv;
        if (add && (rc = mdb_put(txn, s->dbi[DB_NAME_TAGS], &k, &v, MDB_NODUPDATA)) != 0) {
            rc = rc == MDB_KEYEXIST ? 0 : rc;
            continue;
        }
        if (first != NULL && !*first) { /* is (or was) it the key's first value? */
            if (cur == NULL && (rc = mdb_cursor_open(txn, s->dbi[DB_NAME_TAGS], &cur)) != 0)
                break;
            MDB_val ck = k;
            int got = mdb_cursor_get(cur, &ck, &fv, MDB_SET_KEY);
            if (got != 0 && got != MDB_NOTFOUND) {
                rc = got;
                break;
            }
            *first = got == 0 && fv.mv_size == v.mv_size && memcmp(fv.mv_data, val, v.mv_size) == 0;
        }
        if (!add) {
            rc = mdb_del(txn, s->dbi[DB_NAME_TAGS], &k, &v);
            rc = rc == MDB_NOTFOUND ? 0 : rc;
        }
    }
    if (cur != NULL)
        mdb_cursor_close(cur);
    return rc;
}

/* The same for an instance record's tree. */
static int tags_file_json(struct store *s, MDB_txn *txn, json_t *inst, bool add, bool *first)
{
    struct store_str few[16], *tags = few;
    json_t *arr = json_object_get(inst, "Tags"), *name = json_object_get(inst, "Service"),
           *id = json_object_get(inst, "ID");
    size_t n = json_array_size(arr), k = 0;
    if (!json_is_string(name) || !json_is_string(id))
        return REG_EINVAL;
    if (n > 16 && (tags = malloc(n * sizeof(*tags))) == NULL)
        return REG_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_array_get(arr, i);
        if (json_is_string(x))
            tags[k++] = (struct store_str){json_string_value(x), json_string_length(x)};
    }
    int rc = tags_file(s, txn, json_string_value(name), json_string_length(name),
                       json_string_value(id), json_string_length(id), tags, k, add, first);
    if (tags != few)
        free(tags);
    return rc;
}

static int summary_put(struct store *s, MDB_txn *txn, const char *name, size_t nlen);

/* An instance's tags change from old (NULL: it is new) to inst (NULL: it
 * goes). */
static int tags_move(struct store *s, MDB_txn *txn, json_t *old, json_t *inst)
{
    int rc = 0;
    if (old != NULL && inst != NULL && strcmp(jstr(old, "Service"), jstr(inst, "Service")) == 0 &&
        strcmp(jstr(old, "ID"), jstr(inst, "ID")) == 0 &&
        json_equal(json_object_get(old, "Tags"), json_object_get(inst, "Tags")))
        return 0; /* the common re-registration: nothing to do */
    /* a name's summary is written again only when a key's first entry
     * (what the summary is made of) came or went */
    bool old_first = false, new_first = false;
    json_t *on = old ? json_object_get(old, "Service") : NULL,
           *nn = inst ? json_object_get(inst, "Service") : NULL;
    if (old != NULL)
        rc = tags_file_json(s, txn, old, false, &old_first);
    if (rc == 0 && inst != NULL)
        rc = tags_file_json(s, txn, inst, true, &new_first);
    if (json_equal(on, nn))
        old_first = new_first = old_first || new_first;
    if (rc == 0 && old_first && json_is_string(on))
        rc = summary_put(s, txn, json_string_value(on), json_string_length(on));
    if (rc == 0 && new_first && json_is_string(nn) && !json_equal(on, nn))
        rc = summary_put(s, txn, json_string_value(nn), json_string_length(nn));
    return rc;
}

/* s (n bytes) as a JSON string, escaped as json_dumps escapes it. */
static int json_str_put(struct growbuf *g, const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && (unsigned char)s[i] >= 0x20 && s[i] != '"' && s[i] != '\\')
        i++;
    if (i == n) { /* nothing to escape: the common case */
        int rc = gb_put(g, "\"", 1);
        if (rc == 0)
            rc = gb_put(g, s, n);
        return rc == 0 ? gb_put(g, "\"", 1) : rc;
    }
    json_t *js = json_stringn(s, n);
    char *t = js ? json_dumps(js, JSON_ENCODE_ANY) : NULL;
    int rc = t ? gb_put(g, t, strlen(t)) : REG_ENOMEM;
    free(t);
    json_decref(js);
    return rc;
}

/* Write name's summary again from its name_tags entries (see above);
 * unchanged text is not written. */
static int summary_put(struct store *s, MDB_txn *txn, const char *name, size_t nlen)
{
    unsigned char prefix[STORE_NAME_MAX + 2 > RECORD_KEY_MAX + 2 ? STORE_NAME_MAX + 2
                                                                  : RECORD_KEY_MAX + 2];
    struct tag_first few[16], *firsts = few;
    size_t n = 0, cap = 16;
    bool walk = false;
    struct growbuf g = {NULL, 0, 0};
    MDB_cursor *cur;
    if (nlen + 1 > sizeof(prefix))
        return REG_EINVAL;
    memcpy(prefix, name, nlen);
    prefix[nlen] = '\0';
    MDB_val k = {nlen + 1, prefix}, v;
    int rc = mdb_cursor_open(txn, s->dbi[DB_NAME_TAGS], &cur);
    if (rc != 0)
        return rc;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_NODUP)) {
        const unsigned char *kp = k.mv_data, *vp = v.mv_data;
        const unsigned char *vz = memchr(vp, '\0', v.mv_size);
        if (k.mv_size < nlen + 1 || memcmp(kp, prefix, nlen + 1) != 0)
            break;
        if (vz == NULL || v.mv_size != (size_t)(vz - vp) + 5)
            continue; /* damaged */
        if (k.mv_size == nlen + 2 && kp[nlen + 1] == (unsigned char)TAG_OVERFLOW) {
            walk = true;
            continue;
        }
        if (n == cap) {
            struct tag_first *f = malloc(cap * 2 * sizeof(*f));
            if (f == NULL) {
                rc = REG_ENOMEM;
                break;
            }
            memcpy(f, firsts, n * sizeof(*f));
            if (firsts != few)
                free(firsts);
            firsts = f;
            cap *= 2;
        }
        firsts[n].tag = (struct store_str){(const char *)kp + nlen + 1, k.mv_size - nlen - 1};
        firsts[n].id = vp;
        firsts[n].idlen = (size_t)(vz - vp);
        firsts[n].pos =
            (uint32_t)vz[1] << 24 | (uint32_t)vz[2] << 16 | (uint32_t)vz[3] << 8 | vz[4];
        n++;
    }
    mdb_cursor_close(cur);
    if (rc == MDB_NOTFOUND)
        rc = 0;
    if (rc == 0 && walk) {
        /* the listing walks this name's instances: any tag change may show */
        s->services_touched = true;
        rc = gb_put(&g, (const char[]){TAG_OVERFLOW}, 1);
    } else if (rc == 0 && n > 0) {
        if (n > 1)
            qsort(firsts, n, sizeof(*firsts), cmp_tag_first);
        rc = gb_put(&g, "[", 1);
        for (size_t i = 0; i < n && rc == 0; i++)
            if ((rc = i ? gb_put(&g, ",", 1) : 0) == 0)
                rc = json_str_put(&g, firsts[i].tag.p, firsts[i].tag.len);
        if (rc == 0)
            rc = gb_put(&g, "]", 1);
    }
    if (firsts != few)
        free(firsts);
    MDB_val nk = {nlen, (void *)name}, old;
    if (rc == 0 && g.len == 0) {
        /* no tags: "[]" while the name has instances, else nothing */
        MDB_val any;
        rc = mdb_get(txn, s->dbi[DB_BY_NAME], &nk, &any);
        if (rc == 0)
            rc = gb_put(&g, "[]", 2);
        else if (rc == MDB_NOTFOUND && (rc = mdb_del(txn, s->dbi[DB_NAME_SUMMARY], &nk, NULL)) == 0)
            s->services_touched = true;
        rc = rc == MDB_NOTFOUND ? 0 : rc;
    }
    if (rc == 0 && g.len > 0) {
        int got = mdb_get(txn, s->dbi[DB_NAME_SUMMARY], &nk, &old);
        if (got != 0 || old.mv_size != g.len || memcmp(old.mv_data, g.p, g.len) != 0) {
            MDB_val nv = {g.len, g.p};
            rc = mdb_put(txn, s->dbi[DB_NAME_SUMMARY], &nk, &nv, 0);
            s->services_touched = true;
        }
    }
    free(g.p);
    return rc;
}

/* File (add) or unfile instance id under name in by_name. A name that
 * comes or goes there gets its summary written or dropped (summary_put), so
 * that name_summary holds exactly the names with instances. */
static int name_file(struct store *s, MDB_txn *txn, const char *name, const char *id, bool add)
{
    MDB_val k = val_str(name), v = val_str(id), sv;
    int rc = add ? mdb_put(txn, s->dbi[DB_BY_NAME], &k, &v, MDB_NODUPDATA)
                 : mdb_del(txn, s->dbi[DB_BY_NAME], &k, &v);
    if (rc == MDB_KEYEXIST || rc == MDB_NOTFOUND)
        return 0;
    if (rc != 0)
        return rc;
    bool listed = mdb_get(txn, s->dbi[DB_NAME_SUMMARY], &k, &sv) == 0;
    bool present = add || mdb_get(txn, s->dbi[DB_BY_NAME], &k, &sv) == 0;
    return listed == present ? 0 : summary_put(s, txn, name, strlen(name));
}

/* File (add) or unfile instance id under node (nothing when it has none). */
static int node_file(struct store *s, MDB_txn *txn, const char *node, size_t nlen, const char *id,
                     size_t idlen, bool add)
{
    if (nlen == 0)
        return 0;
    MDB_val k = {nlen, (void *)node}, v = {idlen, (void *)id}, any;
    bool had = mdb_get(txn, s->dbi[DB_NODE_INSTS], &k, &any) == 0;
    int rc = add ? mdb_put(txn, s->dbi[DB_NODE_INSTS], &k, &v, MDB_NODUPDATA)
                 : mdb_del(txn, s->dbi[DB_NODE_INSTS], &k, &v);
    if (rc == 0 && (add ? !had : mdb_get(txn, s->dbi[DB_NODE_INSTS], &k, &any) != 0))
        s->nodes_touched = true; /* a node came or went */
    return rc == MDB_KEYEXIST || rc == MDB_NOTFOUND ? 0 : rc;
}

/* The addr_insts key of an address as text (len bytes): its size, 0 when
 * it is not an IP address. */
static size_t addr_key(const char *text, size_t len, unsigned char key[17])
{
    char buf[INET6_ADDRSTRLEN];
    if (len == 0 || len >= sizeof(buf))
        return 0;
    memcpy(buf, text, len);
    buf[len] = '\0';
    if (inet_pton(AF_INET, buf, key + 1) == 1) {
        key[0] = 4;
        return 5;
    }
    if (inet_pton(AF_INET6, buf, key + 1) == 1) {
        key[0] = 6;
        return 17;
    }
    return 0;
}

/* File (add) or unfile instance id under an address (nothing when it is
 * not an IP address). */
static int addr_file(struct store *s, MDB_txn *txn, const char *addr, size_t alen, const char *id,
                     size_t idlen, bool add)
{
    unsigned char key[17];
    size_t klen = addr_key(addr, alen, key);
    if (klen == 0)
        return 0;
    MDB_val k = {klen, key}, v = {idlen, (void *)id};
    int rc = add ? mdb_put(txn, s->dbi[DB_ADDR_INSTS], &k, &v, MDB_NODUPDATA)
                 : mdb_del(txn, s->dbi[DB_ADDR_INSTS], &k, &v);
    return rc == MDB_KEYEXIST || rc == MDB_NOTFOUND ? 0 : rc;
}

/* An instance's addresses change from old's to inst's (either NULL):
 * every old one unfiled first, then every new one filed (an address that
 * is both the Address and the NodeAddress is one entry). */
static int addrs_move(struct store *s, MDB_txn *txn, json_t *old, json_t *inst)
{
    static const char *const fields[] = {"Address", "NodeAddress"};
    const char *oid = old ? jstr(old, "ID") : "", *nid = inst ? jstr(inst, "ID") : "";
    if (old != NULL && inst != NULL && strcmp(oid, nid) == 0 &&
        strcmp(jstr(old, fields[0]), jstr(inst, fields[0])) == 0 &&
        strcmp(jstr(old, fields[1]), jstr(inst, fields[1])) == 0)
        return 0; /* the common re-registration */
    int rc = 0;
    for (int i = 0; i < 2 && rc == 0 && old != NULL; i++) {
        const char *a = jstr(old, fields[i]);
        rc = addr_file(s, txn, a, strlen(a), oid, strlen(oid), false);
    }
    for (int i = 0; i < 2 && rc == 0 && inst != NULL; i++) {
        const char *a = jstr(inst, fields[i]);
        rc = addr_file(s, txn, a, strlen(a), nid, strlen(nid), true);
    }
    return rc;
}

/* An instance changes from old (NULL: it is new) to inst (NULL: it goes):
 * its tags, node and addresses in the derived indexes. */
static int inst_move(struct store *s, MDB_txn *txn, json_t *old, json_t *inst)
{
    s->instances_touched = true; /* store_catalog_services_index */
    int rc = tags_move(s, txn, old, inst);
    if (rc == 0)
        rc = addrs_move(s, txn, old, inst);
    const char *on = old ? jstr(old, "Node") : "", *nn = inst ? jstr(inst, "Node") : "";
    const char *oid = old ? jstr(old, "ID") : "", *nid = inst ? jstr(inst, "ID") : "";
    if (rc != 0 || (strcmp(on, nn) == 0 && strcmp(oid, nid) == 0))
        return rc;
    if ((rc = node_file(s, txn, on, strlen(on), oid, strlen(oid), false)) != 0)
        return rc;
    return node_file(s, txn, nn, strlen(nn), nid, strlen(nid), true);
}

/* ---- reading a record's few indexed fields without a tree ----
 * A restore rebuilds the indexes from up to millions of records that the
 * snapshot's validation has just decoded once; decoding each again would
 * double that. Records are the compact JSON put_json_s wrote, so a small
 * scanner finds the fields; anything it is unsure of (an escape, an
 * unexpected shape) sends that record through jansson instead. */
struct scan {
    const unsigned char *p, *end;
};

static void scan_ws(struct scan *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\n' || *c->p == '\t' || *c->p == '\r'))
        c->p++;
}

static bool scan_char(struct scan *c, unsigned char ch)
{
    scan_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return true;
    }
    return false;
}

/* A string at p: its bytes between the quotes; *plain: no escape in it. */
static bool scan_string(struct scan *c, struct store_str *out, bool *plain)
{
    scan_ws(c);
    if (c->p >= c->end || *c->p != '"')
        return false;
    const unsigned char *b = ++c->p;
    *plain = true;
    while (c->p < c->end && *c->p != '"') {
        if (*c->p == '\\') {
            *plain = false;
            c->p++;
        }
        c->p++;
    }
    if (c->p >= c->end)
        return false;
    *out = (struct store_str){(const char *)b, (size_t)(c->p - b)};
    c->p++;
    return true;
}

/* Past one value of any kind. */
static bool scan_skip(struct scan *c)
{
    struct store_str str;
    bool plain;
    scan_ws(c);
    if (c->p >= c->end)
        return false;
    if (*c->p == '"')
        return scan_string(c, &str, &plain);
    if (*c->p == '{' || *c->p == '[') {
        int depth = 0;
        while (c->p < c->end) {
            unsigned char ch = *c->p;
            if (ch == '"') {
                if (!scan_string(c, &str, &plain))
                    return false;
                continue;
            }
            if (ch == '{' || ch == '[')
                depth++;
            else if ((ch == '}' || ch == ']') && --depth == 0) {
                c->p++;
                return true;
            }
            c->p++;
        }
        return false;
    }
    const unsigned char *b = c->p; /* a number or a literal */
    while (c->p < c->end && *c->p != ',' && *c->p != '}' && *c->p != ']' && *c->p != ' ')
        c->p++;
    return c->p > b;
}

struct scanned {
    struct store_str service, status, node, addr, node_addr;
    struct store_str tags[32];
    size_t ntags;
    bool has_service, has_status, has_tags, has_node, has_addr, has_node_addr;
};

/* The top-level Service, Status and Tags of a record, when plain. */
static bool scan_record(const void *buf, size_t len, struct scanned *out)
{
    struct scan c = {buf, (const unsigned char *)buf + len};
    memset(out, 0, sizeof(*out));
    if (!scan_char(&c, '{'))
        return false;
    if (scan_char(&c, '}'))
        return true;
    do {
        struct store_str key;
        bool plain;
        if (!scan_string(&c, &key, &plain) || !plain || !scan_char(&c, ':'))
            return false;
        scan_ws(&c);
        bool is_service = key.len == 7 && memcmp(key.p, "Service", 7) == 0;
        bool is_status = key.len == 6 && memcmp(key.p, "Status", 6) == 0;
        bool is_node = key.len == 4 && memcmp(key.p, "Node", 4) == 0;
        bool is_addr = key.len == 7 && memcmp(key.p, "Address", 7) == 0;
        bool is_naddr = key.len == 11 && memcmp(key.p, "NodeAddress", 11) == 0;
        if (key.len == 4 && memcmp(key.p, "Tags", 4) == 0) {
            if (out->has_tags || !scan_char(&c, '['))
                return false;
            out->has_tags = true;
            if (!scan_char(&c, ']')) {
                do {
                    if (out->ntags == sizeof(out->tags) / sizeof(out->tags[0]) ||
                        !scan_string(&c, &out->tags[out->ntags++], &plain) || !plain)
                        return false;
                } while (scan_char(&c, ','));
                if (!scan_char(&c, ']'))
                    return false;
            }
        } else if (is_service || is_status || is_node || is_addr || is_naddr) {
            struct store_str *v = is_service  ? &out->service
                                  : is_status ? &out->status
                                  : is_node   ? &out->node
                                  : is_addr   ? &out->addr
                                              : &out->node_addr;
            bool *has = is_service  ? &out->has_service
                        : is_status ? &out->has_status
                        : is_node   ? &out->has_node
                        : is_addr   ? &out->has_addr
                                    : &out->has_node_addr;
            if (*has || !scan_string(&c, v, &plain) || !plain)
                return false;
            *has = true;
        } else if (!scan_skip(&c)) {
            return false;
        }
    } while (scan_char(&c, ','));
    return scan_char(&c, '}');
}

/* The Status of check cid as stored ("" when it cannot be told without
 * decoding: state_del then looks under every state). 0 or an LMDB error. */
static int check_status_raw(struct store *s, MDB_txn *txn, const char *cid, char *out, size_t cap)
{
    MDB_val k = val_str(cid), v;
    struct scanned sc;
    out[0] = '\0';
    int rc = mdb_get(txn, s->dbi[DB_CHECKS], &k, &v);
    if (rc != 0)
        return rc == MDB_NOTFOUND ? 0 : rc;
    struct record_plain u;
    const char *text = record_plain_view(&u, v.mv_data, v.mv_size);
    if (text && scan_record(text, u.len, &sc) && sc.has_status && sc.status.len < cap) {
        memcpy(out, sc.status.p, sc.status.len);
        out[sc.status.len] = '\0';
    }
    record_plain_free(&u);
    return 0;
}

/* Every name's summary: one per name with instances (by_name), made from
 * name_tags as it is. */
static int summaries_rebuild(struct store *s, MDB_txn *txn)
{
    MDB_cursor *cur;
    MDB_val k, v;
    char name[RECORD_KEY_MAX + 1];
    int rc = mdb_cursor_open(txn, s->dbi[DB_BY_NAME], &cur);
    if (rc != 0)
        return rc;
    /* summary_put writes another table, so this cursor stays valid */
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_NODUP)) {
        if (k.mv_size > RECORD_KEY_MAX || memchr(k.mv_data, '\0', k.mv_size) != NULL)
            continue;
        memcpy(name, k.mv_data, k.mv_size);
        name[k.mv_size] = '\0';
        if ((rc = summary_put(s, txn, name, k.mv_size)) != 0)
            break;
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Build the derived indexes from the records, in txn (whose records may
 * be a restore's or an older file's). Damaged records are skipped, as
 * every reader skips them. validated: every record was just checked (a
 * restore's): read the few fields without decoding where that is sure. */
static int derived_rebuild(struct store *s, MDB_txn *txn, bool validated)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int rc;
    if ((rc = mdb_drop(txn, s->dbi[DB_BY_STATE], 0)) != 0 ||
        (rc = mdb_drop(txn, s->dbi[DB_NAME_TAGS], 0)) != 0 ||
        (rc = mdb_drop(txn, s->dbi[DB_NODE_INSTS], 0)) != 0 ||
        (rc = mdb_drop(txn, s->dbi[DB_NAME_SUMMARY], 0)) != 0 ||
        (rc = mdb_drop(txn, s->dbi[DB_ADDR_INSTS], 0)) != 0)
        return rc;
    for (int db = DB_SERVICES; db <= DB_CHECKS; db++) {
        if ((rc = mdb_cursor_open(txn, s->dbi[db], &cur)) != 0)
            return rc;
        int crc;
        for (crc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); crc == 0 && rc == 0;
             crc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            char key[RECORD_KEY_MAX + 1];
            struct scanned sc;
            if (k.mv_size > RECORD_KEY_MAX)
                continue;
            memcpy(key, k.mv_data, k.mv_size);
            key[k.mv_size] = '\0';
            struct record_plain u;
            u.heap = NULL;
            const char *text = validated ? record_plain_view(&u, v.mv_data, v.mv_size) : NULL;
            if (text != NULL && scan_record(text, u.len, &sc) &&
                (db == DB_SERVICES ? sc.has_service && sc.has_tags : sc.has_status)) {
                char status[16];
                if (db == DB_SERVICES) {
                    rc = tags_file(s, txn, sc.service.p, sc.service.len, key, k.mv_size, sc.tags,
                                   sc.ntags, true, NULL);
                    if (rc == 0 && sc.has_node)
                        rc = node_file(s, txn, sc.node.p, sc.node.len, key, k.mv_size, true);
                    if (rc == 0 && sc.has_addr)
                        rc = addr_file(s, txn, sc.addr.p, sc.addr.len, key, k.mv_size, true);
                    if (rc == 0 && sc.has_node_addr)
                        rc = addr_file(s, txn, sc.node_addr.p, sc.node_addr.len, key, k.mv_size,
                                       true);
                } else if (sc.status.len < sizeof(status)) {
                    memcpy(status, sc.status.p, sc.status.len);
                    status[sc.status.len] = '\0';
                    rc = state_add(s, txn, status, key);
                }
                record_plain_free(&u);
                continue;
            }
            record_plain_free(&u);
            json_t *obj = load_record(s, s->dbi[db], &k, &v);
            if (obj == NULL)
                continue;
            if (db == DB_SERVICES)
                rc = inst_move(s, txn, NULL, obj);
            else
                rc = state_add(s, txn, jstr(obj, "Status"), key);
            json_decref(obj);
        }
        mdb_cursor_close(cur);
        if (rc == 0 && crc != MDB_NOTFOUND)
            rc = crc;
        if (rc != 0)
            return rc;
    }
    if ((rc = summaries_rebuild(s, txn)) != 0)
        return rc;
    uint32_t version = STORE_DERIVED_VERSION;
    MDB_val vk = val_str("version"), vv = {sizeof(version), &version};
    return mdb_put(txn, s->dbi[DB_DERIVED], &vk, &vv, 0);
}

/* At open: rebuild the derived indexes unless they are the current kind. */
static int derived_ensure(struct store *s)
{
    MDB_txn *txn;
    MDB_val k = val_str("version"), v;
    uint32_t version = 0;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc != 0)
        return lmdb_fail("mdb_txn_begin", rc);
    if (mdb_get(txn, s->dbi[DB_DERIVED], &k, &v) == 0 && v.mv_size == sizeof(version))
        memcpy(&version, v.mv_data, sizeof(version));
    uint64_t at = get_u64(txn, s->dbi[DB_DERIVED], "index"),
             index = get_u64(txn, s->dbi[DB_META], "index");
    if (version == STORE_DERIVED_VERSION && at == index) {
        mdb_txn_abort(txn);
        return 0;
    }
    uint64_t t0 = mono_ms();
    if ((rc = derived_rebuild(s, txn, false)) != 0) {
        mdb_txn_abort(txn);
        return is_reg_error(rc) ? rc : lmdb_fail("rebuilding the indexes", rc);
    }
    if ((rc = mdb_txn_commit(txn)) != 0)
        return lmdb_fail("mdb_txn_commit", rc);
    if (index != 0)
        log_info("store", "msg=\"indexes rebuilt\" from_version=%u at_index=%llu index=%llu ms=%llu",
                 version, (unsigned long long)at, (unsigned long long)index,
                 (unsigned long long)(mono_ms() - t0));
    return 0;
}

/* ---- apply ------------------------------------------------------------- */

struct apply_ctx {
    struct store *s;
    MDB_txn *txn;
    uint64_t index; /* the index this command writes with */
    struct store_change *chg;
};

static int touch_name(struct apply_ctx *a, const char *name);

/* The instance `id` of service `name` changed: both go into the change. */
static int touch_instance(struct apply_ctx *a, const char *name, const char *id)
{
    snprintf(a->chg->service_id, sizeof(a->chg->service_id), "%s", id);
    return touch_name(a, name);
}

static int touch_name(struct apply_ctx *a, const char *name)
{
    change_add(a->chg, name);
    return put_u64(a->txn, a->s->dbi[DB_NAMES], name, a->index);
}

/* Delete every check of service `id` except those kept by keep(check). */
/* The check IDs svc_checks files under instance id, but those in skip
 * (NULL: none), into *out (a new array). */
static int instance_check_ids(struct apply_ctx *a, const char *id, json_t *skip, json_t **out)
{
    MDB_cursor *cur;
    MDB_val k = val_str(id), v;
    int rc = mdb_cursor_open(a->txn, a->s->dbi[DB_SVC_CHECKS], &cur);
    if (rc != 0)
        return rc;
    json_t *ids = json_array();
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_DUP)) {
        json_t *cid = json_stringn(v.mv_data, v.mv_size);
        if (skip == NULL || json_object_get(skip, json_string_value(cid)) == NULL)
            json_array_append(ids, cid);
        json_decref(cid);
    }
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND) {
        json_decref(ids);
        return rc;
    }
    *out = ids;
    return 0;
}

static int drop_checks(struct apply_ctx *a, const char *id, json_t *keep_ids)
{
    json_t *doomed;
    int rc = instance_check_ids(a, id, keep_ids, &doomed);
    if (rc != 0)
        return rc;
    size_t i;
    json_t *cid;
    json_array_foreach(doomed, i, cid)
    {
        const char *c = json_string_value(cid);
        char status[16];
        if ((rc = check_status_raw(a->s, a->txn, c, status, sizeof(status))) != 0 ||
            (rc = del_key(a->txn, a->s->dbi[DB_CHECKS], c, NULL)) != 0 ||
            (rc = state_del(a->s, a->txn, *status ? status : NULL, c)) != 0 ||
            (rc = del_key(a->txn, a->s->dbi[DB_SVC_CHECKS], id, c)) != 0)
            break;
    }
    json_decref(doomed);
    return rc;
}

static int put_check_as(struct apply_ctx *a, json_t *check, const char *service_id,
                        bool keep_status);

/* An instance renamed keeps the checks its registration did not replace:
 * they take its new name (ServiceName), as Consul's do. */
static int rename_checks(struct apply_ctx *a, const char *id, const char *name)
{
    json_t *ids;
    int rc = instance_check_ids(a, id, NULL, &ids);
    if (rc != 0)
        return rc;
    size_t i;
    json_t *cid;
    json_array_foreach(ids, i, cid)
    {
        json_t *check = NULL;
        if (rc != 0 || get_json_s(a->s, a->txn, a->s->dbi[DB_CHECKS], json_string_value(cid),
                                  &check) != 0)
            continue;
        if (strcmp(jstr(check, "ServiceName"), name) != 0) {
            json_object_set_new(check, "ServiceName", json_string(name));
            json_object_set_new(check, "ModifyIndex", json_integer((json_int_t)a->index));
            rc = put_json_s(a->s, a->txn, a->s->dbi[DB_CHECKS], json_string_value(cid), check);
        }
        json_decref(check);
    }
    json_decref(ids);
    return rc;
}


static int put_check(struct apply_ctx *a, json_t *check, const char *service_id)
{
    return put_check_as(a, check, service_id, true);
}

#define NODE_KEY_MAX STORE_OWNER_MAX

/* The svc_checks key a check is filed under: its ServiceID, or
 * "_node:<Node>" for a node-level check. */
void store_check_owner(json_t *check, char out[STORE_OWNER_MAX])
{
    const char *sid = jstr(check, "ServiceID");
    if (*sid)
        snprintf(out, STORE_OWNER_MAX, "%s", sid);
    else
        snprintf(out, STORE_OWNER_MAX, STORE_NODE_OWNER "%s", jstr(check, "Node"));
}

bool store_is_node_owner(const void *p, size_t n)
{
    return n >= STORE_NODE_OWNER_LEN && memcmp(p, STORE_NODE_OWNER, STORE_NODE_OWNER_LEN) == 0;
}

/* keep_status: an agent re-registration keeps what the check last observed;
 * a catalog registration sets the status it gives. */
static int put_check_as(struct apply_ctx *a, json_t *check, const char *service_id,
                        bool keep_status)
{
    const char *cid = jstr(check, "CheckID");
    json_t *old = NULL;
    char old_status[16] = "";
    int rc = 0;
    if (get_json_s(a->s, a->txn, a->s->dbi[DB_CHECKS], cid, &old) == 0) {
        snprintf(old_status, sizeof(old_status), "%s", jstr(old, "Status"));
        /* the check moves to another instance (or node): its old owner's
         * link goes, else both would list it (and a snapshot of that
         * store would not restore) */
        char owner[NODE_KEY_MAX];
        store_check_owner(old, owner);
        if (strcmp(owner, service_id) != 0) {
            rc = del_key(a->txn, a->s->dbi[DB_SVC_CHECKS], owner, cid);
            if (rc == MDB_NOTFOUND)
                rc = 0;
            json_t *inst = NULL;
            if (rc == 0 && *jstr(old, "ServiceID") &&
                get_json_s(a->s, a->txn, a->s->dbi[DB_SERVICES], jstr(old, "ServiceID"),
                           &inst) == 0) {
                rc = touch_name(a, jstr(inst, "Service"));
                json_decref(inst);
            }
        }
        if (keep_status) {
            json_object_set(check, "Status", json_object_get(old, "Status"));
            json_object_set(check, "Output", json_object_get(old, "Output"));
        }
        json_object_set(check, "CreateIndex", json_object_get(old, "CreateIndex"));
        json_decref(old);
    } else {
        json_object_set_new(check, "CreateIndex", json_integer((json_int_t)a->index));
    }
    json_object_set_new(check, "ModifyIndex", json_integer((json_int_t)a->index));
    if (rc == 0)
        rc = put_json_s(a->s, a->txn, a->s->dbi[DB_CHECKS], cid, check);
    if (rc == 0)
        rc = state_move(a->s, a->txn, *old_status ? old_status : NULL, check, cid);
    if (rc == 0) {
        MDB_val k = val_str(service_id), v = val_str(cid);
        rc = mdb_put(a->txn, a->s->dbi[DB_SVC_CHECKS], &k, &v, 0);
        if (rc == MDB_KEYEXIST)
            rc = 0;
    }
    return rc;
}

/* ---- nodes: catalog-registered nodes and node-level checks ----------------
 * A node record lives in meta under "node:<name>". A check without a
 * ServiceID belongs to its node: svc_checks key "_node:<name>"; every
 * instance on the node reports it (store_instance_checks), so a change to
 * a node touches every service name with an instance there. */

static void node_key(char *out, const char *prefix, const char *node)
{
    snprintf(out, NODE_KEY_MAX, "%s%s", prefix, node);
}

/* The node's fields every instance there carries a copy of (what the
 * health and catalog answers show of its node). */
static const char *const node_fields[] = {"NodeAddress", "NodeMeta", "NodeTaggedAddresses"};

/* Whether inst's copy of its node's fields differs from the node's record
 * rec (an empty object counts as absent: instances leave those out). */
static bool node_fields_differ(json_t *inst, json_t *rec)
{
    for (size_t i = 0; i < sizeof(node_fields) / sizeof(node_fields[0]); i++) {
        json_t *x = json_object_get(inst, node_fields[i]), *y = json_object_get(rec, node_fields[i]);
        bool xe = x == NULL || (json_is_object(x) && json_object_size(x) == 0);
        bool ye = y == NULL || (json_is_object(y) && json_object_size(y) == 0);
        if (xe != ye || (!xe && !json_equal(x, y)))
            return true;
    }
    return false;
}

/* inst's copies of its node's fields become rec's (an empty object is left
 * out, as instances leave it). */
static void node_fields_take(json_t *inst, json_t *rec)
{
    for (size_t f = 0; f < sizeof(node_fields) / sizeof(node_fields[0]); f++) {
        json_t *y = json_object_get(rec, node_fields[f]);
        if (y != NULL && !(json_is_object(y) && json_object_size(y) == 0))
            json_object_set(inst, node_fields[f], y);
        else
            json_object_del(inst, node_fields[f]);
    }
}

/* Every service with an instance on node changed. With deregister those
 * instances go; with rec (the node's new record) each takes its node's
 * fields from it, as Consul's answers join the node's current row (its
 * ModifyIndex stays: the instance itself did not change). The instances
 * are found through node_insts, not by a walk of every instance. */
static int touch_node(struct apply_ctx *a, const char *node, bool deregister, json_t *rec)
{
    MDB_cursor *cur;
    MDB_val k = val_str(node), v;
    json_t *ids = json_array(), *names = json_object();
    int rc = ids && names ? mdb_cursor_open(a->txn, a->s->dbi[DB_NODE_INSTS], &cur) : REG_ENOMEM;
    if (rc == 0) {
        for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY); rc == 0;
             rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_DUP))
            json_array_append_new(ids, json_stringn(v.mv_data, v.mv_size));
        mdb_cursor_close(cur);
        rc = rc == MDB_NOTFOUND ? 0 : rc;
    }
    size_t i;
    json_t *x;
    json_array_foreach(ids, i, x)
    {
        const char *id = json_string_value(x);
        json_t *inst = NULL;
        if (rc != 0)
            break;
        if (id == NULL || get_json_s(a->s, a->txn, a->s->dbi[DB_SERVICES], id, &inst) != 0)
            continue;
        if (strcmp(jstr(inst, "Node"), node) == 0) {
            const char *name = jstr(inst, "Service");
            json_object_set_new(names, name, json_true());
            if (deregister) {
                if ((rc = drop_checks(a, id, NULL)) == 0 &&
                    (rc = del_key(a->txn, a->s->dbi[DB_SERVICES], id, NULL)) == 0 &&
                    (rc = inst_move(a->s, a->txn, inst, NULL)) == 0)
                    rc = name_file(a->s, a->txn, name, id, false);
            } else if (rec != NULL && node_fields_differ(inst, rec)) {
                json_t *upd = json_deep_copy(inst);
                if (upd)
                    node_fields_take(upd, rec);
                rc = upd ? put_json_s(a->s, a->txn, a->s->dbi[DB_SERVICES], id, upd) : REG_ENOMEM;
                if (rc == 0)
                    rc = inst_move(a->s, a->txn, inst, upd);
                json_decref(upd);
            }
        }
        json_decref(inst);
    }
    const char *name;
    json_object_foreach(names, name, x) if (rc == 0) rc = touch_name(a, name);
    json_decref(ids);
    json_decref(names);
    change_add(a->chg, ""); /* the global index moves even with no instance there */
    a->chg->many = true;
    return rc;
}

/* {Node, Record?: {...}, Put?: [checks], Delete?: [check ids], Deregister?} */
static int apply_node(struct apply_ctx *a, json_t *args)
{
    const char *node = jstr(args, "Node");
    char rkey[NODE_KEY_MAX], ckey[NODE_KEY_MAX];
    int rc = 0;
    if (*node == '\0')
        return REG_EINVAL;
    node_key(rkey, "node:", node);
    node_key(ckey, STORE_NODE_OWNER, node);
    json_t *rec = json_object_get(args, "Record");
    MDB_val nk = val_str(rkey), nv;
    bool known = mdb_get(a->txn, a->s->dbi[DB_META], &nk, &nv) == 0;
    /* SkipNodeUpdate: a node already known keeps what it has (Consul) */
    if (json_is_object(rec) && json_is_true(json_object_get(args, "SkipNodeUpdate")) && known)
        rec = NULL;
    if (json_is_object(rec) && !known)
        a->s->nodes_touched = true; /* a catalog node that was not */
    if (json_is_object(rec) && (rc = put_json_s(a->s, a->txn, a->s->dbi[DB_META], rkey, rec)) != 0)
        return rc;
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(args, "Delete"), i, x)
    {
        json_t *check = NULL;
        const char *cid = json_string_value(x);
        if (cid == NULL || get_json_s(a->s, a->txn, a->s->dbi[DB_CHECKS], cid, &check) != 0)
            continue;
        const char *sid = jstr(check, "ServiceID");
        char owner[NODE_KEY_MAX];
        store_check_owner(check, owner);
        if ((rc = del_key(a->txn, a->s->dbi[DB_CHECKS], cid, NULL)) == 0 &&
            (rc = state_del(a->s, a->txn, jstr(check, "Status"), cid)) == 0)
            rc = del_key(a->txn, a->s->dbi[DB_SVC_CHECKS], owner, cid);
        json_t *inst = NULL;
        if (rc == 0 && *sid && get_json_s(a->s, a->txn, a->s->dbi[DB_SERVICES], sid, &inst) == 0)
            rc = touch_name(a, jstr(inst, "Service"));
        /* the checker re-reads the owner's checks (an instance's, or the
         * node's own) */
        snprintf(a->chg->service_id, sizeof(a->chg->service_id), "%s", owner);
        json_decref(inst);
        json_decref(check);
        if (rc != 0)
            return rc;
    }
    json_array_foreach(json_object_get(args, "Put"), i, x)
    {
        if (!json_is_object(x))
            return REG_EINVAL;
        json_object_set_new(x, "ServiceID", json_string(""));
        json_object_set_new(x, "Node", json_string(node));
        if ((rc = put_check_as(a, x, ckey, !json_is_true(json_object_get(args, "SetStatus")))) !=
            0)
            return rc;
        snprintf(a->chg->service_id, sizeof(a->chg->service_id), "%s", ckey);
    }
    if (json_is_true(json_object_get(args, "Deregister"))) {
        a->s->nodes_touched = true;
        snprintf(a->chg->service_id, sizeof(a->chg->service_id), "%s", ckey);
        if ((rc = drop_checks(a, ckey, NULL)) != 0 ||
            (rc = del_key(a->txn, a->s->dbi[DB_META], rkey, NULL)) != 0)
            return rc;
    }
    bool gone = json_is_true(json_object_get(args, "Deregister"));
    return touch_node(a, node, gone, gone || !json_is_object(rec) ? NULL : rec);
}

/* ---- a registration of what is already stored ------------------------
 * Consul writes nothing for a service or check registered again as it is
 * (state store ensureServiceTxn / ensureCheckTxn: IsSame), so that agents
 * and registrators that register on a timer move no index and wake no
 * blocking query. These say whether a command would change any record:
 * each compares what apply_register / apply_node would store with what is
 * stored, indexes aside. Anything they cannot vouch for is a change. */

/* x equal to the stored rec once x takes rec's CreateIndex and ModifyIndex. */
static bool same_but_indexes(json_t *x, json_t *rec)
{
    json_t *copy = json_copy(x);
    if (copy == NULL)
        return false;
    json_object_set(copy, "CreateIndex", json_object_get(rec, "CreateIndex"));
    json_object_set(copy, "ModifyIndex", json_object_get(rec, "ModifyIndex"));
    bool same = json_equal(copy, rec);
    json_decref(copy);
    return same;
}

/* put_check_as(check, owner, keep_status) would store what is stored. */
static bool check_unchanged(struct apply_ctx *a, json_t *check, const char *owner,
                            bool keep_status)
{
    json_t *old = NULL, *copy = NULL;
    char was[NODE_KEY_MAX];
    bool same = false;
    if (!json_is_object(check) ||
        get_json_s(a->s, a->txn, a->s->dbi[DB_CHECKS], jstr(check, "CheckID"), &old) != 0)
        return false;
    store_check_owner(old, was);
    if (strcmp(was, owner) == 0 && (copy = json_copy(check)) != NULL) {
        if (keep_status) {
            json_object_set(copy, "Status", json_object_get(old, "Status"));
            json_object_set(copy, "Output", json_object_get(old, "Output"));
        }
        same = same_but_indexes(copy, old);
    }
    json_decref(copy);
    json_decref(old);
    return same;
}

/* apply_node(node_ops) would change nothing: the node record as stored (or
 * kept by SkipNodeUpdate), no check deleted, every check put as stored. */
static bool node_ops_unchanged(struct apply_ctx *a, json_t *ops)
{
    const char *node = jstr(ops, "Node");
    char rkey[NODE_KEY_MAX], ckey[NODE_KEY_MAX];
    json_t *rec = json_object_get(ops, "Record"), *stored = NULL;
    if (!*node || json_is_true(json_object_get(ops, "Deregister")) ||
        json_array_size(json_object_get(ops, "Delete")) > 0)
        return false;
    node_key(rkey, "node:", node);
    node_key(ckey, STORE_NODE_OWNER, node);
    bool have = get_json_s(a->s, a->txn, a->s->dbi[DB_META], rkey, &stored) == 0;
    bool same = !json_is_object(rec) ||
                (have && (json_is_true(json_object_get(ops, "SkipNodeUpdate")) ||
                          json_equal(rec, stored)));
    json_decref(stored);
    bool keep_status = !json_is_true(json_object_get(ops, "SetStatus"));
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(ops, "Put"), i, x)
    {
        json_t *c = same ? json_copy(x) : NULL;
        if (c != NULL) { /* as apply_node puts it */
            json_object_set_new(c, "ServiceID", json_string(""));
            json_object_set_new(c, "Node", json_string(node));
        }
        same = c != NULL && check_unchanged(a, c, ckey, keep_status);
        json_decref(c);
    }
    return same;
}

/* apply_register(args) would change nothing: svc (as it would be stored)
 * is old, its checks are stored as they would be put, none would be
 * dropped, and its node is as stored. */
static bool register_unchanged(struct apply_ctx *a, json_t *args, json_t *svc, json_t *old)
{
    const char *id = jstr(svc, "ID");
    json_t *checks = json_object_get(args, "Checks"), *replace = json_object_get(args, "ReplaceChecks");
    json_t *node_ops = json_object_get(args, "NodeOps");
    if (!same_but_indexes(svc, old) || (node_ops != NULL && !node_ops_unchanged(a, node_ops)))
        return false;
    bool keep_status = !json_is_true(json_object_get(args, "SetStatus"));
    size_t i;
    json_t *check;
    json_array_foreach(checks, i, check) if (!check_unchanged(a, check, id, keep_status)) return false;
    if (replace != NULL && !json_is_true(replace))
        return true;
    /* replacing: no stored check of the instance is left out of the new set */
    json_t *keep = json_object(), *dropped = NULL;
    char maint[STORE_NAME_MAX + 32];
    snprintf(maint, sizeof(maint), "_service_maintenance:%s", id);
    json_object_set_new(keep, maint, json_true());
    json_array_foreach(checks, i, check) json_object_set_new(keep, jstr(check, "CheckID"), json_true());
    bool same = instance_check_ids(a, id, keep, &dropped) == 0 && json_array_size(dropped) == 0;
    json_decref(dropped);
    json_decref(keep);
    return same;
}

/* A registration with ChecksOnly: checks of an instance already stored,
 * which the command names (Service.ID, on Service.Node) but does not
 * rewrite, as Consul's ensureCheckTxn leaves the service alone. The
 * command carries the instance as it was read when it was built, and an
 * older server applies it as a registration; here the instance as stored
 * now stands (a registration applied in between is not undone). */
static int apply_service_checks(struct apply_ctx *a, json_t *args)
{
    json_t *svc = json_object_get(args, "Service"), *checks = json_object_get(args, "Checks");
    json_t *node_ops = json_object_get(args, "NodeOps"), *old = NULL;
    const char *id = jstr(svc, "ID");
    int rc = get_json_s(a->s, a->txn, a->s->dbi[DB_SERVICES], id, &old);
    if (rc != 0)
        return rc == REG_ENOTFOUND ? REG_ENOTFOUND : rc;
    if (strcmp(jstr(old, "Node"), jstr(svc, "Node")) != 0) {
        json_decref(old); /* it moved to another node since */
        return REG_ENOTFOUND;
    }
    bool keep_status = !json_is_true(json_object_get(args, "SetStatus"));
    bool same = node_ops == NULL || node_ops_unchanged(a, node_ops);
    size_t i;
    json_t *check;
    json_array_foreach(checks, i, check) same = same && check_unchanged(a, check, id, keep_status);
    if (!same) {
        json_array_foreach(checks, i, check)
        {
            if (rc != 0)
                break;
            if (!json_is_object(check))
                rc = REG_EINVAL;
            else
                rc = put_check_as(a, check, id, keep_status);
        }
        if (rc == 0)
            rc = touch_instance(a, jstr(old, "Service"), id);
        if (rc == 0 && json_is_object(node_ops))
            rc = apply_node(a, node_ops);
    }
    json_decref(old);
    return rc;
}

static int apply_register(struct apply_ctx *a, json_t *args)
{
    if (json_is_true(json_object_get(args, "ChecksOnly")))
        return apply_service_checks(a, args);
    json_t *svc = json_object_get(args, "Service");
    json_t *checks = json_object_get(args, "Checks");
    const char *id = jstr(svc, "ID"), *name = jstr(svc, "Service");
    json_t *old = NULL;
    int rc;

    if (!json_is_object(svc) || !*id || !*name)
        return REG_EINVAL;
    json_t *node_ops = json_object_get(args, "NodeOps"); /* a catalog registration's node */
    if (json_is_object(node_ops) && json_is_true(json_object_get(node_ops, "SkipNodeUpdate"))) {
        /* the node is kept as it is: the instance takes its fields */
        char rkey[NODE_KEY_MAX];
        json_t *stored = NULL;
        node_key(rkey, "node:", jstr(node_ops, "Node"));
        if (get_json_s(a->s, a->txn, a->s->dbi[DB_META], rkey, &stored) == 0)
            node_fields_take(svc, stored);
        json_decref(stored);
    }
    json_object_set_new(svc, "CreateIndex", json_integer((json_int_t)a->index));
    if (get_json_s(a->s, a->txn, a->s->dbi[DB_SERVICES], id, &old) == 0)
        json_object_set(svc, "CreateIndex", json_object_get(old, "CreateIndex"));
    if (old != NULL && json_is_true(json_object_get(args, "OneNode")) &&
        strcmp(jstr(old, "Node"), jstr(svc, "Node")) != 0) {
        /* IDs are one key here, not one per node as in Consul: another
         * node's instance is not taken over by a catalog registration, nor
         * by an agent's when the catalog registered it (an agent's moves
         * with the server its client reaches). Commands from before the
         * flag moved it always. */
        char okey[NODE_KEY_MAX];
        json_t *orec = NULL;
        node_key(okey, "node:", jstr(old, "Node"));
        bool catalog_node =
            get_json_s(a->s, a->txn, a->s->dbi[DB_META], okey, &orec) == 0;
        json_decref(orec);
        if (json_is_object(node_ops) || catalog_node) {
            json_decref(old);
            return REG_ECONFLICT;
        }
    }
    if (old != NULL && register_unchanged(a, args, svc, old)) {
        json_decref(old);
        return 0; /* the same again: no write, no index, no watcher woken */
    }
    json_object_set_new(svc, "ModifyIndex", json_integer((json_int_t)a->index));
    if ((rc = put_json_s(a->s, a->txn, a->s->dbi[DB_SERVICES], id, svc)) == 0)
        rc = inst_move(a->s, a->txn, old, svc);
    bool renamed = old != NULL && strcmp(jstr(old, "Service"), name) != 0;
    if (rc == 0 && renamed && (rc = name_file(a->s, a->txn, jstr(old, "Service"), id, false)) == 0)
        rc = touch_name(a, jstr(old, "Service")); /* renamed: the old name loses it */
    json_decref(old);
    if (rc == 0)
        rc = name_file(a->s, a->txn, name, id, true);
    if (rc != 0)
        return rc;

    /* With ReplaceChecks (?replace-existing-checks; commands written before
     * the flag existed replace too) the new definition replaces the old
     * checks; maintenance survives either way. */
    json_t *replace = json_object_get(args, "ReplaceChecks");
    json_t *keep = json_object();
    char maint[STORE_NAME_MAX + 32];
    snprintf(maint, sizeof(maint), "_service_maintenance:%s", id);
    json_object_set_new(keep, maint, json_true());
    size_t i;
    json_t *check;
    json_array_foreach(checks, i, check) json_object_set_new(keep, jstr(check, "CheckID"), json_true());
    rc = replace == NULL || json_is_true(replace) ? drop_checks(a, id, keep) : 0;
    json_decref(keep);
    bool keep_status = !json_is_true(json_object_get(args, "SetStatus"));
    json_array_foreach(checks, i, check)
    {
        if (rc != 0)
            break;
        rc = put_check_as(a, check, id, keep_status);
    }
    if (rc == 0 && renamed)
        rc = rename_checks(a, id, name);
    if (rc == 0)
        rc = touch_instance(a, name, id);
    if (rc == 0 && json_is_object(node_ops))
        rc = apply_node(a, node_ops);
    return rc;
}

static int apply_deregister(struct apply_ctx *a, json_t *args)
{
    const char *id = jstr(args, "ServiceID");
    json_t *old = NULL;
    int rc = get_json_s(a->s, a->txn, a->s->dbi[DB_SERVICES], id, &old);
    if (rc != 0)
        return rc;
    const char *name = jstr(old, "Service");
    if ((rc = drop_checks(a, id, NULL)) == 0 &&
        (rc = del_key(a->txn, a->s->dbi[DB_SERVICES], id, NULL)) == 0 &&
        (rc = inst_move(a->s, a->txn, old, NULL)) == 0 &&
        (rc = name_file(a->s, a->txn, name, id, false)) == 0)
        rc = touch_instance(a, name, id);
    json_decref(old);
    return rc;
}

static int apply_check_update(struct apply_ctx *a, json_t *args)
{
    const char *cid = jstr(args, "CheckID");
    json_t *check = NULL, *svc = NULL;
    int rc = get_json_s(a->s, a->txn, a->s->dbi[DB_CHECKS], cid, &check);
    if (rc != 0)
        return rc;
    json_t *status = json_object_get(args, "Status"), *output = json_object_get(args, "Output");
    if (json_equal(status, json_object_get(check, "Status")) &&
        json_equal(output, json_object_get(check, "Output"))) {
        json_decref(check); /* a heartbeat that changes nothing changes nothing */
        return 0;
    }
    char old_status[16];
    snprintf(old_status, sizeof(old_status), "%s", jstr(check, "Status"));
    json_object_set(check, "Status", status);
    json_object_set(check, "Output", output);
    json_object_set_new(check, "ModifyIndex", json_integer((json_int_t)a->index));
    rc = put_json_s(a->s, a->txn, a->s->dbi[DB_CHECKS], cid, check);
    if (rc == 0)
        rc = state_move(a->s, a->txn, old_status, check, cid);
    char owner[NODE_KEY_MAX];
    store_check_owner(check, owner);
    snprintf(a->chg->service_id, sizeof(a->chg->service_id), "%s", owner);
    if (rc == 0 && get_json_s(a->s, a->txn, a->s->dbi[DB_SERVICES], jstr(check, "ServiceID"), &svc) == 0)
        rc = touch_name(a, jstr(svc, "Service"));
    else if (rc == 0 && *jstr(check, "Node") && !*jstr(check, "ServiceID"))
        rc = touch_node(a, jstr(check, "Node"), false, NULL); /* a node-level check */
    else if (rc == 0)
        change_add(a->chg, ""); /* no service of its own: only the global index moves */
    json_decref(svc);
    json_decref(check);
    return rc;
}

static int apply_maintenance(struct apply_ctx *a, json_t *args)
{
    const char *id = jstr(args, "ServiceID");
    json_t *svc = NULL;
    int rc = get_json_s(a->s, a->txn, a->s->dbi[DB_SERVICES], id, &svc);
    if (rc != 0)
        return rc;
    char cid[STORE_NAME_MAX + 32];
    snprintf(cid, sizeof(cid), "_service_maintenance:%s", id);
    if (json_is_true(json_object_get(args, "Enable"))) {
        const char *reason = jstr(args, "Reason");
        json_t *check = json_pack(
            "{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:{}}", "CheckID", cid, "Name",
            "Service Maintenance Mode", "Status", "critical", "Notes",
            *reason ? reason
                    : "Maintenance mode is enabled for this service, but no reason was "
                      "provided. This is a default message.",
            "Output", "", "ServiceID", id, "ServiceName", jstr(svc, "Service"), "Type",
            "maintenance", "Definition");
        json_object_set(check, "Node", json_object_get(svc, "Node"));
        rc = put_check(a, check, id);
        json_decref(check);
    } else {
        json_t *gone = NULL;
        if (get_json_s(a->s, a->txn, a->s->dbi[DB_CHECKS], cid, &gone) != 0) {
            json_decref(svc);
            return 0; /* already off: no change */
        }
        if ((rc = del_key(a->txn, a->s->dbi[DB_CHECKS], cid, NULL)) == 0 &&
            (rc = state_del(a->s, a->txn, jstr(gone, "Status"), cid)) == 0)
            rc = del_key(a->txn, a->s->dbi[DB_SVC_CHECKS], id, cid);
        json_decref(gone);
    }
    if (rc == 0)
        rc = touch_instance(a, jstr(svc, "Service"), id);
    json_decref(svc);
    return rc;
}

/* A server's HTTP address, kept so that followers can reach the leader:
 * meta "server:<raft address>" -> {ID, Raft, HTTP}. Changes no service. */
static int apply_server(struct apply_ctx *a, json_t *args)
{
    const char *raft = jstr(args, "Raft");
    char key[STORE_NAME_MAX + 16];
    if (*raft == '\0' || !json_is_string(json_object_get(args, "HTTP")))
        return REG_EINVAL;
    snprintf(key, sizeof(key), "server:%s", raft);
    json_t *old = NULL;
    bool same = get_json_s(a->s, a->txn, a->s->dbi[DB_META], key, &old) == 0 &&
                json_equal(old, args);
    json_decref(old);
    if (same)
        return 0;
    /* a server's node is listed by the catalog (and answered by DNS) from
     * this record: the index moves, or an answer kept at the index before
     * it would be served on (http_cache.c) and watchers left asleep */
    change_add(a->chg, "");
    a->s->nodes_touched = true;
    return put_json_s(a->s, a->txn, a->s->dbi[DB_META], key, args);
}

/* CMD_ACL {Op: set|delete|bootstrap, Kind: token|policy, ID, Record}:
 * ACL records live in meta under "acl:<kind>:<id>". bootstrap stores its
 * token only once (REG_EINVAL afterwards: the HTTP side answers 403). */
static int apply_acl(struct apply_ctx *a, json_t *args)
{
    const char *op = jstr(args, "Op"), *kind = jstr(args, "Kind"), *id = jstr(args, "ID");
    json_t *rec = json_object_get(args, "Record"), *old = NULL;
    char key[STORE_NAME_MAX + 32];
    int rc;
    if ((strcmp(kind, "token") != 0 && strcmp(kind, "policy") != 0) || *id == '\0' ||
        strlen(id) > STORE_NAME_MAX)
        return REG_EINVAL;
    snprintf(key, sizeof(key), "acl:%s:%s", kind, id);
    if (strcmp(op, "delete") == 0) {
        if ((rc = get_json_s(a->s, a->txn, a->s->dbi[DB_META], key, &old)) != 0)
            return rc;
        json_decref(old);
        if ((rc = del_key(a->txn, a->s->dbi[DB_META], key, NULL)) != 0)
            return rc;
        change_add(a->chg, "");
        return 0;
    }
    if (!json_is_object(rec) || (strcmp(op, "set") != 0 && strcmp(op, "bootstrap") != 0))
        return REG_EINVAL;
    if (strcmp(op, "bootstrap") == 0) {
        if (get_json_s(a->s, a->txn, a->s->dbi[DB_META], "acl:bootstrap", &old) == 0) {
            json_decref(old);
            return REG_EINVAL;
        }
        json_t *mark = json_pack("{s:I}", "Index", (json_int_t)a->index);
        rc = mark ? put_json_s(a->s, a->txn, a->s->dbi[DB_META], "acl:bootstrap", mark) : REG_ENOMEM;
        json_decref(mark);
        if (rc != 0)
            return rc;
    }
    json_t *copy = json_deep_copy(rec);
    if (copy == NULL)
        return REG_ENOMEM;
    json_object_set_new(copy, "CreateIndex", json_integer((json_int_t)a->index));
    if (get_json_s(a->s, a->txn, a->s->dbi[DB_META], key, &old) == 0) {
        json_object_set(copy, "CreateIndex", json_object_get(old, "CreateIndex"));
        json_decref(old);
    }
    json_object_set_new(copy, "ModifyIndex", json_integer((json_int_t)a->index));
    rc = put_json_s(a->s, a->txn, a->s->dbi[DB_META], key, copy);
    json_decref(copy);
    if (rc == 0)
        change_add(a->chg, "");
    return rc;
}

int store_acl_get(struct store_read *r, const char *kind, const char *id, json_t **out)
{
    char key[STORE_NAME_MAX + 32];
    if (strlen(id) > STORE_NAME_MAX)
        return REG_ENOTFOUND;
    snprintf(key, sizeof(key), "acl:%s:%s", kind, id);
    return get_json_s(r->s, r->txn, r->s->dbi[DB_META], key, out);
}

bool store_acl_bootstrapped(struct store_read *r, uint64_t *index)
{
    MDB_val k = val_str("acl:bootstrap"), v;
    json_t *mark = NULL;
    if (index != NULL)
        *index = 0;
    if (mdb_get(r->txn, r->s->dbi[DB_META], &k, &v) != 0)
        return false;
    if (index != NULL && get_json_s(r->s, r->txn, r->s->dbi[DB_META], "acl:bootstrap", &mark) == 0) {
        json_int_t i = json_integer_value(json_object_get(mark, "Index"));
        *index = i > 0 ? (uint64_t)i : 0;
        json_decref(mark);
    }
    return true;
}

int store_acl_each(struct store_read *r, const char *kind, store_json_cb cb, void *arg)
{
    char prefix[32];
    snprintf(prefix, sizeof(prefix), "acl:%s:", kind);
    size_t plen = strlen(prefix);
    MDB_cursor *cur;
    MDB_val k = val_str(prefix), v;
    int rc = mdb_cursor_open(r->txn, r->s->dbi[DB_META], &cur), stop = 0;
    if (rc != 0)
        return lmdb_fail("mdb_cursor_open", rc);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0 && !stop;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0)
            break;
        json_t *obj = load_record(r->s, r->s->dbi[DB_META], &k, &v);
        if (obj == NULL)
            continue;
        stop = cb(obj, arg);
        json_decref(obj);
    }
    mdb_cursor_close(cur);
    if (stop)
        return stop;
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : lmdb_fail("mdb_cursor_get", rc);
}

static int restore_bytes(struct store *s, const void *buf, size_t len, unsigned flags);

/* Replace everything with a snapshot (PUT /v1/snapshot). The index never
 * goes backwards, so that blocking queries see the change. A restore in the
 * raft log may predate the checksummed format (SNAP_LEGACY_OK); its records
 * are validated all the same, and a refused one changes nothing. */
/* Every service name changed at index (a restore): the snapshot's own
 * indexes may equal, or fall below, what readers saw of a name before it,
 * and a reader that keeps an answer while the name's index stands (DNS)
 * would keep the old one, a blocking query park again. */
static int names_all_changed(struct store *s, MDB_txn *txn, uint64_t index)
{
    MDB_cursor *cur;
    MDB_val k, v = {sizeof(index), &index};
    int rc = mdb_cursor_open(txn, s->dbi[DB_NAMES], &cur);
    if (rc != 0)
        return rc;
    for (rc = mdb_cursor_get(cur, &k, NULL, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, NULL, MDB_NEXT))
        if ((rc = mdb_cursor_put(cur, &k, &v, MDB_CURRENT)) != 0)
            break;
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int apply_restore(struct store *s, const void *data, size_t len,
                         struct store_change *chg)
{
    struct store_read *rd;
    uint64_t before = 0;
    if (store_read_begin(s, &rd) == 0) {
        before = store_index(rd);
        store_read_end(rd);
    }
    /* a restore writes about its own size in one transaction (twice, with
     * the pages it replaces): make sure the blocks are there first */
    int rc = store_reserve(s, (uint64_t)len * 2);
    if (rc == 0)
        rc = restore_bytes(s, data, len, SNAP_LEGACY_OK);
    if (rc != 0)
        return rc;
    MDB_txn *txn;
    if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0)
        return lmdb_fail("mdb_txn_begin", rc);
    uint64_t after = get_u64(txn, s->dbi[DB_META], "index");
    uint64_t index = after > before ? after : before + 1;
    if ((rc = put_u64(txn, s->dbi[DB_META], "index", index)) != 0 ||
        (rc = put_u64(txn, s->dbi[DB_DERIVED], SERVICES_INDEX_KEY, index)) != 0 ||
        (rc = put_u64(txn, s->dbi[DB_DERIVED], NODES_INDEX_KEY, index)) != 0 ||
        (rc = names_all_changed(s, txn, index)) != 0) {
        mdb_txn_abort(txn);
        return lmdb_fail("put index", rc);
    }
    if ((rc = mdb_txn_commit(txn)) != 0)
        return lmdb_fail("mdb_txn_commit", rc);
    chg->n = 1;
    chg->index = UINT64_MAX; /* everything may have changed */
    return 0;
}

int store_get_server(struct store_read *r, const char *raft_addr, json_t **out)
{
    char key[STORE_NAME_MAX + 16];
    snprintf(key, sizeof(key), "server:%s", raft_addr);
    return get_json_s(r->s, r->txn, r->s->dbi[DB_META], key, out);
}

int store_apply(struct store *s, const void *buf, size_t len, struct store_change *chg)
{
    struct command cmd;
    MDB_txn *txn;
    int rc;

    memset(chg, 0, sizeof(*chg));
    (void)store_reserve(s, 0); /* keeps the next writes off unallocated blocks */
    const void *snap;
    size_t snap_len;
    if (cmd_restore_raw_view(buf, len, &snap, &snap_len) == 0)
        return apply_restore(s, snap, snap_len, chg);
    if (cmd_decode(buf, len, &cmd) != 0) {
        log_error("store", "msg=\"undecodable command skipped\" bytes=%zu", len);
        return REG_EINVAL;
    }
    if (cmd.op == CMD_RESTORE) { /* written by an older registryd: base64 */
        void *data;
        size_t dlen;
        const char *text = json_string_value(json_object_get(cmd.args, "Data"));
        rc = text && cmd_base64_decode(text, &data, &dlen) == 0 ? 0 : REG_EINVAL;
        cmd_fini(&cmd);
        if (rc == 0) {
            rc = apply_restore(s, data, dlen, chg);
            free(data);
        }
        return rc;
    }
    if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0) {
        cmd_fini(&cmd);
        return lmdb_fail("mdb_txn_begin", rc);
    }
    struct apply_ctx a = {s, txn, get_u64(txn, s->dbi[DB_META], "index") + 1, chg};
    s->services_touched = false;
    s->instances_touched = false;
    s->nodes_touched = false;
    /* An empty registry answers X-Consul-Index 1 (never 0, as Consul): the
     * first write is 2, so that a query blocked at ?index=1 wakes for it. */
    if (a.index < STORE_FIRST_INDEX)
        a.index = STORE_FIRST_INDEX;
    if (a.index >= RECORD_INDEX_MAX) { /* never wraps: refuse rather than go round */
        mdb_txn_abort(txn);
        cmd_fini(&cmd);
        log_limited(LOG_ERROR, "store", "msg=\"store index at its limit; write refused\" index=%llu",
                    (unsigned long long)a.index);
        return REG_ESTORE;
    }
    switch (cmd.op) {
    case CMD_REGISTER:
        rc = apply_register(&a, cmd.args);
        break;
    case CMD_DEREGISTER:
        rc = apply_deregister(&a, cmd.args);
        break;
    case CMD_CHECK_UPDATE:
        rc = apply_check_update(&a, cmd.args);
        break;
    case CMD_MAINTENANCE:
        rc = apply_maintenance(&a, cmd.args);
        break;
    case CMD_SERVER:
        rc = apply_server(&a, cmd.args);
        break;
    case CMD_NODE: /* the same node and checks again: nothing (register_unchanged) */
        rc = node_ops_unchanged(&a, cmd.args) ? 0 : apply_node(&a, cmd.args);
        break;
    case CMD_ACL:
        rc = apply_acl(&a, cmd.args);
        break;
    case CMD_RESTORE: /* handled above, outside this transaction */
    case CMD_RESTORE_RAW:
        rc = REG_EINVAL;
        break;
    }
    cmd_fini(&cmd);
    if (rc == 0 && chg->n > 0)
        rc = put_u64(txn, s->dbi[DB_META], "index", a.index);
    if (rc == 0 && chg->n > 0 && s->services_touched)
        rc = put_u64(txn, s->dbi[DB_DERIVED], SERVICES_INDEX_KEY, a.index);
    if (rc == 0 && chg->n > 0 && s->instances_touched)
        rc = put_u64(txn, s->dbi[DB_META], INSTANCES_INDEX_KEY, a.index);
    if (rc == 0 && chg->n > 0 && s->nodes_touched)
        rc = put_u64(txn, s->dbi[DB_DERIVED], NODES_INDEX_KEY, a.index);
    if (rc != 0) {
        mdb_txn_abort(txn);
        memset(chg, 0, sizeof(*chg));
        if (is_reg_error(rc))
            return rc; /* the command's own outcome (REG_ENOTFOUND, ...) */
        return lmdb_fail("apply", rc);
    }
    if ((rc = mdb_txn_commit(txn)) != 0) {
        memset(chg, 0, sizeof(*chg));
        return lmdb_fail("mdb_txn_commit", rc);
    }
    if (chg->n > 0) {
        chg->index = a.index;
        chg->services = s->services_touched || s->instances_touched;
    }
    return 0;
}

/* ---- snapshot / restore -------------------------------------------------
 * Format: snapshot.h. */


int store_snapshot(struct store *s, void **buf, size_t *len)
{
    size_t cap = 0;
    *buf = NULL;
    int rc = store_snapshot_into(s, buf, &cap, len);
    if (rc != 0) {
        free(*buf);
        *buf = NULL;
    }
    return rc;
}

int store_snapshot_into(struct store *s, void **buf, size_t *cap, size_t *len)
{
    struct store_read *r;
    int rc = store_read_begin(s, &r);
    if (rc != 0)
        return rc;
    rc = store_snapshot_copy(r, buf, cap, len);
    store_read_end(r);
    return rc == 0 ? store_snapshot_finish(buf, cap, len) : rc;
}

/*
 * A whole-store walk (a raft snapshot's copy, GET /v1/snapshot) maps every
 * page of the store into this process: at a million instances the resident
 * size grew by the whole file (875 MiB -> 1.6 GiB) after each snapshot and
 * stayed there. Once a raft snapshot's copy is done (the streamed
 * GET /v1/snapshot does not release: that would be on a worker's loop, and
 * releasing more often costs the writer its pages, see README), the map's
 * pages leave this process's page tables (MADV_DONTNEED on a shared file
 * mapping: not from the page cache, and dirty pages stay dirty there, so
 * nothing is lost and nothing is read again from disk); those still used
 * fault back in, a minor fault each. Readers and the writer may be in the
 * map meanwhile: the addresses stay valid.
 */
void store_release_map(struct store *s)
{
    MDB_envinfo info;
    MDB_stat st;
    if (s->map == NULL || mdb_env_info(s->env, &info) != 0 || mdb_env_stat(s->env, &st) != 0)
        return;
    size_t used = (size_t)(info.me_last_pgno + 1) * st.ms_psize;
    if (used > s->map_len)
        used = s->map_len;
    if (madvise(s->map, used, MADV_DONTNEED) != 0)
        log_debug("store", "msg=\"map pages kept\" error=\"%s\"", strerror(errno));
}

/* The header and every record as stored: no more work than a cursor walk
 * and a memcpy while the read is open. The header's index and count are
 * final; instance and check values may still be packed. */
int store_snapshot_copy(struct store_read *r, void **buf, size_t *cap, size_t *len)
{
    struct growbuf g = {*buf, 0, *buf ? *cap : 0};
    struct store *s = r->s;
    MDB_txn *txn = r->txn;
    unsigned char head[SNAP_HEADER_LEN];
    uint64_t records = 0;
    snap_header(head, 0, 0); /* filled in below, once the count is known */
    int rc = gb_put(&g, head, sizeof(head));
    for (int db = 0; db < DB_COUNT && rc == 0; db++) {
        MDB_cursor *cur;
        MDB_val k, v;
        if ((rc = mdb_cursor_open(txn, s->dbi[db], &cur)) != 0) {
            rc = lmdb_fail("mdb_cursor_open", rc);
            break;
        }
        int crc;
        for (crc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); crc == 0 && rc == 0;
             crc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            if (db == DB_META && is_local_key(&k))
                continue; /* this file's own, not registry data */
            if (v.mv_size > SNAP_VALUE_MAX) {
                rc = REG_ESTORE;
                break;
            }
            unsigned char rh[SNAP_RECORD_HEAD_LEN];
            snap_record_head(rh, (enum snap_table)db, (uint32_t)k.mv_size, (uint32_t)v.mv_size);
            if ((rc = gb_put(&g, rh, sizeof(rh))) == 0 &&
                (rc = gb_put(&g, k.mv_data, k.mv_size)) == 0)
                rc = gb_put(&g, v.mv_data, v.mv_size);
            records++;
        }
        mdb_cursor_close(cur);
        if (rc == 0 && crc != MDB_NOTFOUND)
            rc = lmdb_fail("mdb_cursor_get", crc);
    }
    if (rc == 0)
        snap_header(g.p, get_u64(txn, s->dbi[DB_META], "index"), records);
    *buf = g.p;
    *cap = g.cap;
    *len = g.len;
    return rc;
}

static bool snap_table_packs(unsigned t)
{
    return t == SNAP_SERVICES || t == SNAP_CHECKS;
}

/*
 * What snapshot_copy wrote, made a snapshot in the same buffer: packed
 * values unpacked (snapshots carry plain text), the trailer and its
 * checksum. The stored records move to the end of the snapshot's record
 * area and are rewritten from the front: a record never shrinks when
 * unpacked, so the write position never passes the next record still to
 * read.
 */
int store_snapshot_finish(void **buf, size_t *cap, size_t *len)
{
    unsigned char *p = *buf;
    size_t stored = *len, end = SNAP_HEADER_LEN;
    if (stored < SNAP_HEADER_LEN)
        return REG_ESTORE;
    for (size_t at = SNAP_HEADER_LEN; at < stored;) {
        if (stored - at < SNAP_RECORD_HEAD_LEN)
            return REG_ESTORE;
        struct snap_rec h = snap_record_head_read(p + at);
        if (stored - at - SNAP_RECORD_HEAD_LEN < (size_t)h.klen + h.vlen)
            return REG_ESTORE;
        const unsigned char *v = p + at + SNAP_RECORD_HEAD_LEN + h.klen;
        size_t plain = snap_table_packs(h.table) ? record_unpacked_len(v, h.vlen) : h.vlen;
        if (plain > SNAP_VALUE_MAX)
            return REG_ESTORE;
        end += SNAP_RECORD_HEAD_LEN + h.klen + plain;
        at += SNAP_RECORD_HEAD_LEN + h.klen + h.vlen;
    }
    size_t total = end + SNAP_TRAILER_LEN;
    if (total > *cap) {
        if ((p = realloc(p, total)) == NULL)
            return REG_ENOMEM; /* *buf is still the caller's */
        *buf = p;
        *cap = total;
    }
    size_t r = end - (stored - SNAP_HEADER_LEN), w = SNAP_HEADER_LEN;
    memmove(p + r, p + SNAP_HEADER_LEN, stored - SNAP_HEADER_LEN);
    while (r < end) {
        struct snap_rec h = snap_record_head_read(p + r);
        size_t kv = SNAP_RECORD_HEAD_LEN + h.klen;
        const unsigned char *v = p + r + kv;
        struct record_plain u;
        u.heap = NULL;
        u.len = h.vlen;
        const char *val = (const char *)v;
        if (snap_table_packs(h.table) && (val = record_plain_view(&u, v, h.vlen)) == NULL)
            return REG_ENOMEM; /* its length was checked above */
        if (val == (const char *)v) { /* nothing packed: moves as it is */
            memmove(p + w, p + r, kv + h.vlen);
        } else { /* the value is in u: the head, the key, then the value */
            snap_record_head(p + w, (enum snap_table)h.table, h.klen, (uint32_t)u.len);
            memmove(p + w + SNAP_RECORD_HEAD_LEN, p + r + SNAP_RECORD_HEAD_LEN, h.klen);
            memcpy(p + w + kv, val, u.len);
        }
        record_plain_free(&u);
        r += kv + h.vlen;
        w += kv + u.len;
    }
    /* the checksum covers every byte before it, the trailer's first ones too */
    snap_trailer(p + end, snap_header_records(p), 0);
    snap_trailer(p + end, snap_header_records(p), snap_crc32c(0, p, total - 4));
    *len = total;
    return 0;
}

/* ---- a snapshot piece by piece ------------------------------------------ */

struct store_snap_stream {
    struct store_read *rd;
    MDB_cursor *cur;
    int db;             /* table being walked; DB_COUNT: the trailer is next */
    bool started;       /* the cursor of db has been positioned */
    bool done;
    uint64_t announced; /* the header's record count */
    uint64_t records;   /* records emitted */
    uint32_t crc;       /* of every byte emitted so far */
    unsigned char head[SNAP_HEADER_LEN]; /* the header, a record's head or the trailer */
    /* what is still to go out of the current piece: up to three spans (a
     * record's head, key and value, all in the map or in head[]) */
    const unsigned char *span[3];
    size_t span_len[3];
    int nspan;
    char *plain; /* a packed value unpacked, for span[2] (record.h) */
    size_t plain_cap;
};

int store_snap_stream_begin(struct store *s, struct store_snap_stream **out)
{
    struct store_snap_stream *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return REG_ENOMEM;
    int rc = store_read_begin(s, &st->rd);
    if (rc != 0) {
        free(st);
        return rc;
    }
    for (int db = 0; db < DB_COUNT; db++) {
        MDB_stat stat;
        if ((rc = mdb_stat(st->rd->txn, s->dbi[db], &stat)) != 0) {
            store_snap_stream_end(st);
            return lmdb_fail("mdb_stat", rc);
        }
        st->announced += stat.ms_entries;
    }
    for (size_t i = 0; i < sizeof(local_keys) / sizeof(local_keys[0]); i++) {
        MDB_val k = val_str(local_keys[i]), v;
        if (mdb_get(st->rd->txn, s->dbi[DB_META], &k, &v) == 0)
            st->announced--; /* left out (is_local_key) */
    }
    snap_header(st->head, get_u64(st->rd->txn, s->dbi[DB_META], "index"), st->announced);
    st->span[0] = st->head;
    st->span_len[0] = SNAP_HEADER_LEN;
    st->nspan = 1;
    *out = st;
    return 0;
}

/* Queue the next piece: a record, or the trailer. */
static int snap_stream_next_piece(struct store_snap_stream *st)
{
    struct store *s = st->rd->s;
    while (st->db < DB_COUNT) {
        MDB_val k, v;
        int rc;
        if (st->cur == NULL && (rc = mdb_cursor_open(st->rd->txn, s->dbi[st->db], &st->cur)) != 0)
            return lmdb_fail("mdb_cursor_open", rc);
        rc = mdb_cursor_get(st->cur, &k, &v, st->started ? MDB_NEXT : MDB_FIRST);
        st->started = true;
        if (rc == MDB_NOTFOUND) {
            mdb_cursor_close(st->cur);
            st->cur = NULL;
            st->started = false;
            st->db++;
            continue;
        }
        if (rc != 0)
            return lmdb_fail("mdb_cursor_get", rc);
        if (st->db == DB_META && is_local_key(&k))
            continue;
        const void *val = v.mv_data;
        size_t vlen = v.mv_size;
        if (packs(s, s->dbi[st->db]) && (vlen = record_unpacked_len(val, vlen)) != v.mv_size) {
            if (vlen == SIZE_MAX)
                return REG_ESTORE;
            if (vlen > st->plain_cap) {
                char *p = realloc(st->plain, vlen);
                if (p == NULL)
                    return REG_ENOMEM;
                st->plain = p;
                st->plain_cap = vlen;
            }
            record_unpack(v.mv_data, v.mv_size, st->plain);
            val = st->plain; /* snapshots carry plain text */
        }
        snap_record_head(st->head, (enum snap_table)st->db, (uint32_t)k.mv_size, (uint32_t)vlen);
        st->span[0] = st->head;
        st->span_len[0] = SNAP_RECORD_HEAD_LEN;
        st->span[1] = k.mv_data; /* valid while the read transaction is */
        st->span_len[1] = k.mv_size;
        st->span[2] = val;
        st->span_len[2] = vlen;
        st->nspan = 3;
        st->records++;
        return 0;
    }
    if (st->records != st->announced) /* one transaction: cannot happen */
        return REG_ESTORE;
    unsigned char trailer[SNAP_TRAILER_LEN];
    snap_trailer(trailer, st->records, 0);
    st->crc = snap_crc32c(st->crc, trailer, SNAP_TRAILER_LEN - 4);
    snap_trailer(st->head, st->records, st->crc);
    st->span[0] = st->head;
    st->span_len[0] = SNAP_TRAILER_LEN;
    st->nspan = 1;
    st->done = true;
    return 0;
}

int store_snap_stream_read(struct store_snap_stream *st, void *buf, size_t cap, size_t *len)
{
    unsigned char *out = buf;
    size_t n = 0;
    while (n < cap) {
        if (st->nspan == 0) {
            if (st->done)
                break;
            int rc = snap_stream_next_piece(st);
            if (rc != 0)
                return rc;
            continue;
        }
        size_t take = st->span_len[0] < cap - n ? st->span_len[0] : cap - n;
        memcpy(out + n, st->span[0], take);
        /* the trailer's own CRC is not part of what it covers */
        bool crc_tail = st->done && st->nspan == 1;
        if (!crc_tail)
            st->crc = snap_crc32c(st->crc, st->span[0], take);
        n += take;
        st->span[0] += take;
        st->span_len[0] -= take;
        if (st->span_len[0] == 0) {
            for (int i = 1; i < st->nspan; i++) {
                st->span[i - 1] = st->span[i];
                st->span_len[i - 1] = st->span_len[i];
            }
            st->nspan--;
        }
    }
    *len = n;
    return 0;
}

void store_snap_stream_end(struct store_snap_stream *st)
{
    if (st == NULL)
        return;
    if (st->cur)
        mdb_cursor_close(st->cur);
    store_read_end(st->rd);
    free(st->plain);
    free(st);
}

int store_restore(struct store *s, const void *buf, size_t len)
{
    return restore_bytes(s, buf, len, SNAP_LEGACY_OK);
}

struct restore_ctx {
    struct store *s;
    MDB_txn *txn;
};

static int restore_record(enum snap_table t, const void *key, uint32_t klen, const void *val,
                          uint32_t vlen, void *arg)
{
    struct restore_ctx *c = arg;
    MDB_val k = {klen, (void *)key};
    return put_text(c->s, c->txn, c->s->dbi[t], &k, val, vlen);
}

/* Every service name with instances has an index (names): a snapshot
 * without one for a name (edited, or written by an older registryd) would
 * give readers index 0, "no such name" (DNS answered NXDOMAIN for a name
 * the catalog listed). Such a name takes the store's index. */
static int names_fill_missing(struct store *s, MDB_txn *txn)
{
    MDB_cursor *cur;
    MDB_val k, v, have;
    uint64_t index = get_u64(txn, s->dbi[DB_META], "index");
    if (index < STORE_FIRST_INDEX)
        index = STORE_FIRST_INDEX;
    int rc = mdb_cursor_open(txn, s->dbi[DB_BY_NAME], &cur);
    if (rc != 0)
        return rc;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_NODUP)) {
        char name[STORE_NAME_MAX];
        if (k.mv_size == 0 || k.mv_size > sizeof(name) ||
            (mdb_get(txn, s->dbi[DB_NAMES], &k, &have) == 0 && have.mv_size == sizeof(index)))
            continue;
        memcpy(name, k.mv_data, k.mv_size); /* a key of its own for the put */
        MDB_val nk = {k.mv_size, name}, iv = {sizeof(index), &index};
        if ((rc = mdb_put(txn, s->dbi[DB_NAMES], &nk, &iv, 0)) != 0)
            break;
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Validate all of it first, then replace everything in one transaction: a
 * refused or failed restore leaves the data as it was. */
static int restore_bytes(struct store *s, const void *buf, size_t len, unsigned flags)
{
    MDB_txn *txn;
    char why[512];
    int rc = snap_validate(buf, len, flags, NULL, why, sizeof(why));
    if (rc != 0) {
        log_error("store", "msg=\"snapshot refused; data unchanged\" error=\"%s\"", why);
        return rc;
    }
    if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0)
        return lmdb_fail("mdb_txn_begin", rc);
    for (int db = 0; db < DB_COUNT && rc == 0; db++)
        rc = mdb_drop(txn, s->dbi[db], 0);
    struct restore_ctx c = {s, txn};
    if (rc == 0)
        rc = snap_each(buf, len, restore_record, &c);
    if (rc == 0)
        rc = derived_rebuild(s, txn, true);
    if (rc == 0)
        rc = names_fill_missing(s, txn);
    /* the names and nodes may all have changed: they take the store's own
     * index (which a raft snapshot ties to one history), set, so that later
     * writes do not move them (readers rebuild what they keep of them) */
    uint64_t now = rc == 0 ? get_u64(txn, s->dbi[DB_META], "index") : 0;
    if (rc == 0 && now != 0 &&
        (rc = put_u64(txn, s->dbi[DB_DERIVED], SERVICES_INDEX_KEY, now)) == 0)
        rc = put_u64(txn, s->dbi[DB_DERIVED], NODES_INDEX_KEY, now);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return is_reg_error(rc) ? rc : lmdb_fail("restore", rc);
    }
    if ((rc = mdb_txn_commit(txn)) != 0)
        return lmdb_fail("mdb_txn_commit", rc);
    return 0;
}

/* ---- read side --------------------------------------------------------- */

int store_read_begin(struct store *s, struct store_read **out)
{
    struct store_read *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return REG_ENOMEM;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &r->txn);
    if (rc != 0) {
        free(r);
        return lmdb_fail("mdb_txn_begin(read)", rc);
    }
    r->s = s;
    *out = r;
    return 0;
}

static void read_cursors_close(struct store_read *r)
{
    mdb_cursor_close(r->owner_cur);
    mdb_cursor_close(r->check_cur);
    r->owner_cur = r->check_cur = NULL;
}

void store_read_end(struct store_read *r)
{
    if (r == NULL)
        return;
    read_cursors_close(r);
    mdb_txn_abort(r->txn);
    free(r);
}

void store_read_reset(struct store_read *r)
{
    read_cursors_close(r);
    mdb_txn_reset(r->txn);
}

int store_read_renew(struct store_read *r)
{
    int rc = mdb_txn_renew(r->txn);
    return rc == 0 ? 0 : lmdb_fail("mdb_txn_renew", rc);
}

uint64_t store_index(struct store_read *r)
{
    return get_u64(r->txn, r->s->dbi[DB_META], "index");
}

uint64_t store_services_index(struct store_read *r)
{
    uint64_t v = get_u64(r->txn, r->s->dbi[DB_DERIVED], SERVICES_INDEX_KEY);
    return v != 0 ? v : store_index(r);
}

uint64_t store_catalog_services_index(struct store_read *r)
{
    uint64_t names = store_services_index(r);
    uint64_t v = get_u64(r->txn, r->s->dbi[DB_META], INSTANCES_INDEX_KEY);
    return v > names ? v : names;
}

uint64_t store_nodes_index(struct store_read *r)
{
    uint64_t v = get_u64(r->txn, r->s->dbi[DB_DERIVED], NODES_INDEX_KEY);
    return v != 0 ? v : store_index(r);
}

uint64_t store_name_index(struct store_read *r, const char *name)
{
    return get_u64(r->txn, r->s->dbi[DB_NAMES], name);
}

int store_get_instance(struct store_read *r, const char *id, json_t **out)
{
    return get_json_s(r->s, r->txn, r->s->dbi[DB_SERVICES], id, out);
}

int store_get_check(struct store_read *r, const char *id, json_t **out)
{
    return get_json_s(r->s, r->txn, r->s->dbi[DB_CHECKS], id, out);
}

static int each_json(struct store_read *r, MDB_dbi dbi, store_json_cb cb, void *arg)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = mdb_cursor_open(r->txn, dbi, &cur), stop = 0;
    if (rc != 0)
        return lmdb_fail("mdb_cursor_open", rc);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && !stop;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        json_t *obj = load_record(r->s, dbi, &k, &v);
        if (obj == NULL)
            continue;
        stop = cb(obj, arg);
        json_decref(obj);
    }
    mdb_cursor_close(cur);
    if (stop)
        return stop;
    return rc == MDB_NOTFOUND ? 0 : lmdb_fail("mdb_cursor_get", rc);
}

/* The records of table rec whose keys index (dupsort) files under key
 * (klen bytes). */
static int each_indexed_bin(struct store_read *r, enum store_db index, const void *key,
                            size_t klen, enum store_db rec, store_json_cb cb, void *arg)
{
    MDB_cursor *cur;
    MDB_val k = {klen, (void *)key}, v;
    int rc = mdb_cursor_open(r->txn, r->s->dbi[index], &cur), stop = 0;
    if (rc != 0)
        return lmdb_fail("mdb_cursor_open", rc);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY); rc == 0 && !stop;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_DUP)) {
        MDB_val sk = v, sv;
        if (mdb_get(r->txn, r->s->dbi[rec], &sk, &sv) != 0)
            continue;
        json_t *obj = load_record(r->s, r->s->dbi[rec], &sk, &sv);
        if (obj == NULL)
            continue;
        stop = cb(obj, arg);
        json_decref(obj);
    }
    mdb_cursor_close(cur);
    if (stop)
        return stop;
    return rc == MDB_NOTFOUND ? 0 : lmdb_fail("mdb_cursor_get", rc);
}

/* The same for a text key. */
static int each_indexed(struct store_read *r, enum store_db index, const char *key,
                        enum store_db rec, store_json_cb cb, void *arg)
{
    return each_indexed_bin(r, index, key, strlen(key), rec, cb, arg);
}

int store_each_instance(struct store_read *r, const char *name, store_json_cb cb, void *arg)
{
    if (name == NULL)
        return each_json(r, r->s->dbi[DB_SERVICES], cb, arg);
    return each_indexed(r, DB_BY_NAME, name, DB_SERVICES, cb, arg);
}

int store_each_instance_id(struct store_read *r, const char *name, store_id_cb cb, void *arg)
{
    MDB_cursor *cur;
    MDB_val k = val_str(name), v;
    char id[STORE_NAME_MAX + 1];
    int rc = mdb_cursor_open(r->txn, r->s->dbi[DB_BY_NAME], &cur), stop = 0;
    if (rc != 0)
        return lmdb_fail("mdb_cursor_open", rc);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY); rc == 0 && !stop;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_DUP)) {
        if (v.mv_size == 0 || v.mv_size > STORE_NAME_MAX || memchr(v.mv_data, '\0', v.mv_size))
            continue; /* damaged: no instance has that ID */
        memcpy(id, v.mv_data, v.mv_size);
        id[v.mv_size] = '\0';
        stop = cb(id, arg);
    }
    mdb_cursor_close(cur);
    if (stop)
        return stop;
    return rc == MDB_NOTFOUND ? 0 : lmdb_fail("mdb_cursor_get", rc);
}

int store_each_check(struct store_read *r, store_json_cb cb, void *arg)
{
    return each_json(r, r->s->dbi[DB_CHECKS], cb, arg);
}

int store_each_check_state(struct store_read *r, const char *state, store_json_cb cb, void *arg)
{
    return each_indexed(r, DB_BY_STATE, state, DB_CHECKS, cb, arg);
}

int store_each_instance_at(struct store_read *r, const char *addr, store_json_cb cb, void *arg)
{
    unsigned char key[17];
    size_t klen = addr_key(addr, strlen(addr), key);
    return klen == 0 ? 0 : each_indexed_bin(r, DB_ADDR_INSTS, key, klen, DB_SERVICES, cb, arg);
}

int store_each_node_check(struct store_read *r, const char *node, store_json_cb cb, void *arg)
{
    char key[NODE_KEY_MAX];
    node_key(key, STORE_NODE_OWNER, node);
    return each_indexed(r, DB_SVC_CHECKS, key, DB_CHECKS, cb, arg);
}

static int owner_checks(struct store_read *r, const char *owner, json_t *arr);

int store_owner_checks(struct store_read *r, const char *owner, json_t **out)
{
    json_t *arr = json_array();
    int rc = arr ? owner_checks(r, owner, arr) : REG_ENOMEM;
    if (rc != 0) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

int store_each_check_node(struct store_read *r, store_name_cb cb, void *arg)
{
    MDB_cursor *cur;
    MDB_val k = val_str(STORE_NODE_OWNER), v;
    char node[NODE_KEY_MAX];
    int rc = mdb_cursor_open(r->txn, r->s->dbi[DB_SVC_CHECKS], &cur);
    if (rc != 0)
        return lmdb_fail("mdb_cursor_open", rc);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_NODUP)) {
        if (!store_is_node_owner(k.mv_data, k.mv_size))
            break;
        size_t n = k.mv_size - STORE_NODE_OWNER_LEN;
        if (n == 0 || n >= sizeof(node) || memchr(k.mv_data, '\0', k.mv_size) != NULL)
            continue;
        memcpy(node, (const char *)k.mv_data + STORE_NODE_OWNER_LEN, n);
        node[n] = '\0';
        if ((rc = cb(node, arg)) != 0)
            break;
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int store_each_instance_on(struct store_read *r, const char *node, store_json_cb cb, void *arg)
{
    return each_indexed(r, DB_NODE_INSTS, node, DB_SERVICES, cb, arg);
}

/* The Node of instance service_id into key as "_node:<Node>" (key[0] '\0':
 * none, or no such instance), read by the scanner without decoding the
 * record; a record the scanner is unsure of is decoded. */
static void instance_node_key(struct store_read *r, const char *service_id,
                              char key[NODE_KEY_MAX])
{
    MDB_val k = val_str(service_id), v;
    struct scanned sc;
    key[0] = '\0';
    if (mdb_get(r->txn, r->s->dbi[DB_SERVICES], &k, &v) != 0)
        return;
    struct record_plain u;
    const char *text = record_plain_view(&u, v.mv_data, v.mv_size);
    if (text && scan_record(text, u.len, &sc)) {
        if (sc.has_node && sc.node.len > 0 && sc.node.len < NODE_KEY_MAX - 6)
            snprintf(key, NODE_KEY_MAX, "_node:%.*s", (int)sc.node.len, sc.node.p);
    } else {
        json_t *inst = load_record(r->s, r->s->dbi[DB_SERVICES], &k, &v);
        if (inst && *jstr(inst, "Node"))
            node_key(key, STORE_NODE_OWNER, jstr(inst, "Node"));
        json_decref(inst);
    }
    record_plain_free(&u);
}

int store_instance_checks(struct store_read *r, const char *service_id, json_t **out)
{
    json_t *arr = json_array();
    char key[NODE_KEY_MAX];
    int rc = owner_checks(r, service_id, arr);
    if (rc == 0) {
        instance_node_key(r, service_id, key);
        if (key[0] != '\0')
            rc = owner_checks(r, key, arr); /* the node's own checks count for it too */
    }
    if (rc != 0) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

bool store_instance_may_have_checks(struct store_read *r, const char *service_id)
{
    MDB_cursor *cur;
    if (mdb_cursor_open(r->txn, r->s->dbi[DB_SVC_CHECKS], &cur) != 0)
        return true;
    MDB_val k = val_str(service_id), v;
    int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY);
    bool may = rc != MDB_NOTFOUND;
    if (!may) { /* any node's checks: keys "_node:..." */
        k = val_str(STORE_NODE_OWNER);
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        may = rc != MDB_NOTFOUND && (rc != 0 || store_is_node_owner(k.mv_data, k.mv_size));
    }
    mdb_cursor_close(cur);
    return may;
}

/* The records of meta whose keys begin with prefix, in key order; pre
 * (NULL: none) sees each raw value first and may skip it. */
static int each_meta(struct store_read *r, const char *prefix,
                     bool (*pre)(const char *text, size_t len, void *arg), store_json_cb cb,
                     void *arg)
{
    MDB_cursor *cur;
    size_t plen = strlen(prefix);
    MDB_val k = val_str(prefix), v;
    int rc = mdb_cursor_open(r->txn, r->s->dbi[DB_META], &cur), stop = 0;
    if (rc != 0)
        return lmdb_fail("mdb_cursor_open", rc);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
         rc == 0 && !stop && k.mv_size >= plen && memcmp(k.mv_data, prefix, plen) == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (pre != NULL && !pre(v.mv_data, v.mv_size, arg))
            continue;
        json_t *obj = load_record(r->s, r->s->dbi[DB_META], &k, &v);
        if (obj != NULL)
            stop = cb(obj, arg);
        json_decref(obj);
    }
    mdb_cursor_close(cur);
    if (stop)
        return stop;
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : lmdb_fail("mdb_cursor_get", rc);
}

int store_each_node_pre(struct store_read *r, bool (*pre)(const char *text, size_t len, void *arg),
                        store_json_cb cb, void *arg)
{
    return each_meta(r, "node:", pre, cb, arg); /* node records are plain text */
}

int store_each_server(struct store_read *r, store_json_cb cb, void *arg)
{
    return each_meta(r, "server:", NULL, cb, arg);
}

int store_each_node(struct store_read *r, store_json_cb cb, void *arg)
{
    return store_each_node_pre(r, NULL, cb, arg);
}

int store_get_node(struct store_read *r, const char *name, json_t **out)
{
    char key[NODE_KEY_MAX];
    size_t n = strlen(name);
    if (n == 0 || n > STORE_NAME_MAX)
        return REG_ENOTFOUND;
    node_key(key, "node:", name);
    return get_json_s(r->s, r->txn, r->s->dbi[DB_META], key, out);
}

int store_find_node(struct store_read *r, const char *name, json_t **out)
{
    size_t n = strlen(name);
    int rc = store_get_node(r, name, out); /* the name as given: one lookup */
    if (rc != REG_ENOTFOUND || n == 0 || n > STORE_NAME_MAX)
        return rc;
    MDB_cursor *cur;
    MDB_val k = val_str("node:"), v;
    if ((rc = mdb_cursor_open(r->txn, r->s->dbi[DB_META], &cur)) != 0)
        return lmdb_fail("mdb_cursor_open", rc);
    *out = NULL;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
         rc == 0 && k.mv_size >= 5 && memcmp(k.mv_data, "node:", 5) == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size == 5 + n && strncasecmp((const char *)k.mv_data + 5, name, n) == 0) {
            *out = load_record(r->s, r->s->dbi[DB_META], &k, &v);
            break;
        }
    }
    mdb_cursor_close(cur);
    if (*out != NULL)
        return 0;
    return rc == 0 || rc == MDB_NOTFOUND ? REG_ENOTFOUND : lmdb_fail("mdb_cursor_get", rc);
}

/* Append the checks filed under owner (an instance ID or "_node:<name>"). */
static int owner_checks(struct store_read *r, const char *owner, json_t *arr)
{
    MDB_cursor *cur;
    MDB_val k = val_str(owner), v;
    int rc = mdb_cursor_open(r->txn, r->s->dbi[DB_SVC_CHECKS], &cur);
    if (rc != 0)
        return lmdb_fail("mdb_cursor_open", rc);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_DUP)) {
        MDB_val ck = v, cv;
        if (mdb_get(r->txn, r->s->dbi[DB_CHECKS], &ck, &cv) != 0)
            continue;
        json_t *obj = load_record(r->s, r->s->dbi[DB_CHECKS], &ck, &cv);
        if (obj)
            json_array_append_new(arr, obj);
    }
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND)
        return lmdb_fail("mdb_cursor_get", rc);
    return 0;
}

/* cb for each distinct key of the dupsort table db, as a name (cut to
 * STORE_NAME_MAX); 0, cb's nonzero, or REG_ESTORE. */
static int each_key_name(struct store_read *r, int db, store_name_cb cb, void *arg)
{
    MDB_cursor *cur;
    MDB_val k, v;
    char name[STORE_NAME_MAX + 1];
    int rc = mdb_cursor_open(r->txn, r->s->dbi[db], &cur), stop = 0;
    if (rc != 0)
        return lmdb_fail("mdb_cursor_open", rc);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && !stop;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_NODUP)) {
        size_t n = k.mv_size < STORE_NAME_MAX ? k.mv_size : STORE_NAME_MAX;
        memcpy(name, k.mv_data, n);
        name[n] = '\0';
        stop = cb(name, arg);
    }
    mdb_cursor_close(cur);
    if (stop)
        return stop;
    return rc == MDB_NOTFOUND ? 0 : lmdb_fail("mdb_cursor_get", rc);
}

int store_each_name(struct store_read *r, store_name_cb cb, void *arg)
{
    return each_key_name(r, DB_BY_NAME, cb, arg);
}

int store_each_node_name(struct store_read *r, store_name_cb cb, void *arg)
{
    MDB_cursor *cur;
    MDB_val k, v;
    char name[STORE_NAME_MAX + 1];
    int rc = each_key_name(r, DB_NODE_INSTS, cb, arg), stop = 0;
    if (rc != 0)
        return rc;
    if ((rc = mdb_cursor_open(r->txn, r->s->dbi[DB_META], &cur)) != 0)
        return lmdb_fail("mdb_cursor_open", rc);
    k = val_str("node:");
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
         rc == 0 && !stop && k.mv_size >= 5 && memcmp(k.mv_data, "node:", 5) == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size == 5)
            continue; /* no name (never written): not a node */
        size_t n = k.mv_size - 5 < STORE_NAME_MAX ? k.mv_size - 5 : STORE_NAME_MAX;
        memcpy(name, (const char *)k.mv_data + 5, n);
        name[n] = '\0';
        stop = cb(name, arg);
    }
    mdb_cursor_close(cur);
    if (stop)
        return stop;
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : lmdb_fail("mdb_cursor_get", rc);
}

struct walk_tags {
    json_t *seen; /* tag -> true, in order of first appearance */
};

static int walk_tags_add(json_t *inst, void *arg)
{
    struct walk_tags *w = arg;
    size_t i;
    json_t *tag;
    json_array_foreach(json_object_get(inst, "Tags"), i, tag)
        json_object_set_new(w->seen, json_string_value(tag), json_true());
    return 0;
}

/* A name with a tag too long for the index: its instances walked. */
static int name_tags_walked(struct store_read *r, const char *name, store_name_tags_cb cb,
                            void *arg)
{
    struct walk_tags w = {json_object()};
    if (w.seen == NULL)
        return REG_ENOMEM;
    int rc = store_each_instance(r, name, walk_tags_add, &w);
    size_t n = json_object_size(w.seen), i = 0;
    struct store_str *tags = malloc((n ? n : 1) * sizeof(*tags));
    if (rc == 0 && tags == NULL)
        rc = REG_ENOMEM;
    if (rc == 0) {
        const char *t;
        json_t *x;
        json_object_foreach(w.seen, t, x) tags[i++] = (struct store_str){t, strlen(t)};
        rc = cb(name, tags, n, arg);
    }
    free(tags);
    json_decref(w.seen);
    return rc;
}

/* memcmp order with the shorter first, as LMDB orders keys. */
static int cmp_bytes(const void *a, size_t alen, const void *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    return c != 0 ? c : alen < blen ? -1 : alen > blen;
}

/* A name whose summary says walk: its tags as text, from its instances. */
static int name_json_walked(struct store_read *r, const char *name, store_name_json_cb cb,
                            void *arg)
{
    struct walk_tags w = {json_object()};
    json_t *arr = json_array();
    char *text = NULL;
    int rc = w.seen && arr ? store_each_instance(r, name, walk_tags_add, &w) : REG_ENOMEM;
    if (rc == 0) {
        const char *t;
        json_t *x;
        json_object_foreach(w.seen, t, x) json_array_append_new(arr, json_string(t));
        text = json_dumps(arr, JSON_COMPACT);
        rc = text ? cb(name, text, strlen(text), arg) : REG_ENOMEM;
    }
    free(text);
    json_decref(arr);
    json_decref(w.seen);
    return rc;
}

int store_each_name_summary(struct store_read *r, store_name_json_cb cb, void *arg)
{
    MDB_cursor *sc = NULL;
    MDB_val sk, sv;
    char name[STORE_NAME_MAX + 1];
    int rc, stop = 0;
    if ((rc = mdb_cursor_open(r->txn, r->s->dbi[DB_NAME_SUMMARY], &sc)) != 0)
        return lmdb_fail("mdb_cursor_open", rc);
    /* one record per name with instances (name_file keeps it so) */
    for (rc = mdb_cursor_get(sc, &sk, &sv, MDB_FIRST); rc == 0 && !stop;
         rc = mdb_cursor_get(sc, &sk, &sv, MDB_NEXT)) {
        size_t nl = sk.mv_size < STORE_NAME_MAX ? sk.mv_size : STORE_NAME_MAX;
        memcpy(name, sk.mv_data, nl);
        name[nl] = '\0';
        if (sv.mv_size == 1 && *(const unsigned char *)sv.mv_data == (unsigned char)TAG_OVERFLOW)
            stop = name_json_walked(r, name, cb, arg);
        else
            stop = cb(name, sv.mv_data, sv.mv_size, arg);
    }
    mdb_cursor_close(sc);
    if (stop)
        return stop;
    return rc == MDB_NOTFOUND ? 0 : lmdb_fail("mdb_cursor_get", rc);
}

int store_each_name_tags(struct store_read *r, store_name_tags_cb cb, void *arg)
{
    MDB_cursor *nc = NULL, *tc = NULL;
    MDB_val nk, nv, tk, tv;
    struct tag_first *firsts = NULL;
    struct store_str *tags = NULL;
    size_t cap = 0;
    char name[STORE_NAME_MAX + 1];
    int rc, trc, stop = 0;
    if ((rc = mdb_cursor_open(r->txn, r->s->dbi[DB_BY_NAME], &nc)) != 0 ||
        (rc = mdb_cursor_open(r->txn, r->s->dbi[DB_NAME_TAGS], &tc)) != 0) {
        if (nc)
            mdb_cursor_close(nc);
        return lmdb_fail("mdb_cursor_open", rc);
    }
    /* both tables are in name order ("name\0" sorts as name does): one
     * pass over each */
    trc = mdb_cursor_get(tc, &tk, &tv, MDB_FIRST);
    for (rc = mdb_cursor_get(nc, &nk, &nv, MDB_FIRST); rc == 0 && !stop;
         rc = mdb_cursor_get(nc, &nk, &nv, MDB_NEXT_NODUP)) {
        size_t n = 0;
        bool walk = false;
        for (; trc == 0; trc = mdb_cursor_get(tc, &tk, &tv, MDB_NEXT_NODUP)) {
            const unsigned char *kp = tk.mv_data, *z = memchr(kp, '\0', tk.mv_size);
            size_t knl = z ? (size_t)(z - kp) : tk.mv_size;
            int c = cmp_bytes(kp, knl, nk.mv_data, nk.mv_size);
            if (c > 0)
                break; /* a later name's */
            const unsigned char *vp = tv.mv_data, *vz = memchr(vp, '\0', tv.mv_size);
            if (c < 0 || z == NULL || vz == NULL || tv.mv_size != (size_t)(vz - vp) + 5)
                continue; /* a name without instances (cannot be), or damaged */
            if (tk.mv_size == knl + 2 && kp[knl + 1] == (unsigned char)TAG_OVERFLOW) {
                walk = true;
                continue;
            }
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 64;
                struct tag_first *f = realloc(firsts, ncap * sizeof(*f));
                if (f != NULL)
                    firsts = f;
                struct store_str *t = f ? realloc(tags, ncap * sizeof(*t)) : NULL;
                if (t == NULL) {
                    stop = REG_ENOMEM;
                    break;
                }
                tags = t;
                cap = ncap;
            }
            firsts[n].tag = (struct store_str){(const char *)z + 1, tk.mv_size - knl - 1};
            firsts[n].id = vp;
            firsts[n].idlen = (size_t)(vz - vp);
            firsts[n].pos =
                (uint32_t)vz[1] << 24 | (uint32_t)vz[2] << 16 | (uint32_t)vz[3] << 8 | vz[4];
            n++;
        }
        if (stop)
            break;
        if (trc != 0 && trc != MDB_NOTFOUND) {
            rc = trc;
            break;
        }
        size_t nl = nk.mv_size < STORE_NAME_MAX ? nk.mv_size : STORE_NAME_MAX;
        memcpy(name, nk.mv_data, nl);
        name[nl] = '\0';
        if (walk) {
            stop = name_tags_walked(r, name, cb, arg);
            continue;
        }
        if (n > 1)
            qsort(firsts, n, sizeof(*firsts), cmp_tag_first);
        for (size_t i = 0; i < n; i++)
            tags[i] = firsts[i].tag;
        stop = cb(name, tags, n, arg);
    }
    mdb_cursor_close(nc);
    mdb_cursor_close(tc);
    free(firsts);
    free(tags);
    if (stop)
        return stop;
    return rc == MDB_NOTFOUND ? 0 : lmdb_fail("mdb_cursor_get", rc);
}

int store_stats(struct store *s, uint64_t *instances, uint64_t *checks, uint64_t *bytes)
{
    MDB_txn *txn;
    MDB_stat st;
    MDB_envinfo info;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0)
        return lmdb_fail("mdb_txn_begin", rc);
    *instances = mdb_stat(txn, s->dbi[DB_SERVICES], &st) == 0 ? st.ms_entries : 0;
    *checks = mdb_stat(txn, s->dbi[DB_CHECKS], &st) == 0 ? st.ms_entries : 0;
    mdb_txn_abort(txn);
    *bytes = 0;
    if (mdb_env_info(s->env, &info) == 0 && mdb_env_stat(s->env, &st) == 0)
        *bytes = (uint64_t)(info.me_last_pgno + 1) * st.ms_psize;
    return 0;
}

int store_each_node_instance(struct store_read *r, store_json_cb cb, void *arg)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = mdb_cursor_open(r->txn, r->s->dbi[DB_NODE_INSTS], &cur), stop = 0;
    if (rc != 0)
        return lmdb_fail("mdb_cursor_open", rc);
    rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    while (rc == 0 && !stop) {
        MDB_val sk = v, sv;
        json_t *obj = NULL;
        if (mdb_get(r->txn, r->s->dbi[DB_SERVICES], &sk, &sv) == 0)
            obj = load_record(r->s, r->s->dbi[DB_SERVICES], &sk, &sv);
        if (obj != NULL) {
            stop = cb(obj, arg);
            json_decref(obj);
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_NODUP);
        } else { /* missing or damaged: the node's next instance */
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_DUP);
            if (rc == MDB_NOTFOUND)
                rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_NODUP);
        }
    }
    mdb_cursor_close(cur);
    if (stop)
        return stop;
    return rc == MDB_NOTFOUND ? 0 : lmdb_fail("mdb_cursor_get", rc);
}

int store_derived_entries(struct store *s, uint64_t *by_state, uint64_t *name_tags,
                          uint64_t *node_insts, uint64_t *summaries, uint64_t *addr_insts)
{
    MDB_txn *txn;
    MDB_stat st;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0)
        return lmdb_fail("mdb_txn_begin", rc);
    *by_state = mdb_stat(txn, s->dbi[DB_BY_STATE], &st) == 0 ? st.ms_entries : 0;
    *name_tags = mdb_stat(txn, s->dbi[DB_NAME_TAGS], &st) == 0 ? st.ms_entries : 0;
    *node_insts = mdb_stat(txn, s->dbi[DB_NODE_INSTS], &st) == 0 ? st.ms_entries : 0;
    *summaries = mdb_stat(txn, s->dbi[DB_NAME_SUMMARY], &st) == 0 ? st.ms_entries : 0;
    *addr_insts = mdb_stat(txn, s->dbi[DB_ADDR_INSTS], &st) == 0 ? st.ms_entries : 0;
    mdb_txn_abort(txn);
    return 0;
}

/* ---- raw records (read side, see store.h) ------------------------------- */

struct store_iter {
    struct store_read *rd;
    enum store_iter_kind kind;
    MDB_cursor *cur;
    MDB_cursor *rec; /* indexed kinds: the records the index names (see
                        store_read's cursors: the next is near the last) */
    bool started;
    bool pending; /* unparked onto an entry not yet returned */
    bool ended;   /* unparked past the last entry */
    bool parked;  /* the read is reset; pos is where the walk was */
    bool lost;    /* parked without a position: unpark fails */
    size_t txnid; /* the view parked from */
    unsigned char pos[RECORD_KEY_MAX]; /* the key, or an indexed kind's ID */
    size_t pos_len;
    char name[STORE_NAME_MAX + 1];
};

int store_iter_begin(struct store_read *rd, enum store_iter_kind kind, const char *name,
                     struct store_iter **out)
{
    struct store_iter *it = calloc(1, sizeof(*it));
    if (it == NULL)
        return REG_ENOMEM;
    MDB_dbi dbi = rd->s->dbi[kind == STORE_ITER_CHECKS  ? DB_CHECKS
                             : kind == STORE_ITER_NAME  ? DB_BY_NAME
                             : kind == STORE_ITER_STATE ? DB_BY_STATE
                                                        : DB_SERVICES];
    int rc = mdb_cursor_open(rd->txn, dbi, &it->cur);
    if (rc != 0) {
        free(it);
        return lmdb_fail("mdb_cursor_open", rc);
    }
    it->rd = rd;
    it->kind = kind;
    snprintf(it->name, sizeof(it->name), "%s", name ? name : "");
    *out = it;
    return 0;
}

int store_iter_next(struct store_iter *it, const char **key, size_t *klen, const void **val,
                    size_t *vlen)
{
    for (;;) {
        MDB_val k, v;
        MDB_cursor_op op;
        bool indexed = it->kind == STORE_ITER_NAME || it->kind == STORE_ITER_STATE;
        if (it->ended)
            return REG_ENOTFOUND;
        if (it->parked)
            return REG_ESTORE; /* store_iter_unpark first */
        if (it->pending) {
            op = MDB_GET_CURRENT;
            it->pending = false;
        } else if (indexed) {
            k = val_str(it->name);
            op = it->started ? MDB_NEXT_DUP : MDB_SET_KEY;
        } else {
            op = it->started ? MDB_NEXT : MDB_FIRST;
        }
        int rc = mdb_cursor_get(it->cur, &k, &v, op);
        it->started = true;
        if (rc == MDB_NOTFOUND) {
            it->ended = true; /* LMDB's cursor stays on the last entry */
            return REG_ENOTFOUND;
        }
        if (rc != 0)
            return lmdb_fail("mdb_cursor_get", rc);
        if (indexed) {
            MDB_val sk = v, sv;
            if (it->rec == NULL &&
                (rc = mdb_cursor_open(
                     it->rd->txn,
                     it->rd->s->dbi[it->kind == STORE_ITER_NAME ? DB_SERVICES : DB_CHECKS],
                     &it->rec)) != 0)
                return lmdb_fail("mdb_cursor_open", rc);
            rc = mdb_cursor_get(it->rec, &sk, &sv, MDB_SET_KEY);
            if (rc == MDB_NOTFOUND)
                continue;
            if (rc != 0)
                return lmdb_fail("mdb_get", rc);
            k = sk;
            v = sv;
        }
        *key = k.mv_data;
        *klen = k.mv_size;
        *val = v.mv_data;
        *vlen = v.mv_size;
        return 0;
    }
}

/* Where a walk is: the current entry's key, or an indexed kind's ID. */
static int iter_pos(struct store_iter *it)
{
    bool indexed = it->kind == STORE_ITER_NAME || it->kind == STORE_ITER_STATE;
    MDB_val k, v;
    int rc = mdb_cursor_get(it->cur, &k, &v, MDB_GET_CURRENT);
    if (rc != 0)
        return lmdb_fail("mdb_cursor_get", rc);
    MDB_val *p = indexed ? &v : &k;
    if (p->mv_size == 0 || p->mv_size > sizeof(it->pos))
        return REG_ESTORE;
    memcpy(it->pos, p->mv_data, p->mv_size);
    it->pos_len = p->mv_size;
    return 0;
}

int store_iter_park(struct store_iter *it)
{
    if (it->parked)
        return it->lost ? REG_ESTORE : 0;
    int rc = 0;
    it->pos_len = 0;
    if (it->started && !it->ended) {
        rc = iter_pos(it);
        if (it->pending)
            it->started = false; /* not returned yet: from it again */
    }
    it->txnid = mdb_txn_id(it->rd->txn);
    store_read_reset(it->rd); /* also when the position is lost: no pin */
    it->parked = true;
    it->lost = rc != 0;
    return rc;
}

bool store_iter_parked(const struct store_iter *it)
{
    return it->parked;
}

int store_iter_unpark(struct store_iter *it, bool *moved)
{
    *moved = false;
    if (!it->parked)
        return 0;
    if (it->lost)
        return REG_ESTORE;
    int rc = store_read_renew(it->rd);
    if (rc != 0)
        return rc;
    MDB_txn *txn = it->rd->txn;
    if ((rc = mdb_cursor_renew(txn, it->cur)) != 0 ||
        (it->rec != NULL && (rc = mdb_cursor_renew(txn, it->rec)) != 0))
        return lmdb_fail("mdb_cursor_renew", rc);
    it->parked = false;
    *moved = mdb_txn_id(txn) != it->txnid;
    if (it->ended || it->pos_len == 0)
        return 0; /* at the end, or not started: as it was */
    bool indexed = it->kind == STORE_ITER_NAME || it->kind == STORE_ITER_STATE;
    MDB_val k, v, pos = {it->pos_len, it->pos};
    if (indexed) {
        k = val_str(it->name);
        v = pos;
        rc = mdb_cursor_get(it->cur, &k, &v, MDB_GET_BOTH_RANGE);
    } else {
        k = pos;
        rc = mdb_cursor_get(it->cur, &k, &v, MDB_SET_RANGE);
    }
    if (rc == MDB_NOTFOUND) {
        it->ended = true; /* nothing at or after where the walk was */
        return 0;
    }
    if (rc != 0)
        return lmdb_fail("mdb_cursor_get", rc);
    const MDB_val *at = indexed ? &v : &k;
    /* the entry returned last (still there) is passed over by the next
     * step; a newer one (the last was removed) or the one not returned
     * yet is returned next */
    bool same = it->started && at->mv_size == it->pos_len &&
                memcmp(at->mv_data, it->pos, it->pos_len) == 0;
    it->started = true;
    it->pending = !same;
    return 0;
}

void store_iter_end(struct store_iter *it)
{
    if (it == NULL)
        return;
    mdb_cursor_close(it->cur);
    mdb_cursor_close(it->rec);
    free(it);
}

int store_get_raw(struct store_read *rd, bool checks, const char *id, size_t idlen,
                  const void **val, size_t *vlen)
{
    MDB_val k = {idlen, (void *)id}, v;
    if (idlen == 0 || idlen > RECORD_KEY_MAX)
        return REG_ENOTFOUND; /* no such key (LMDB would call it an error) */
    int rc = mdb_get(rd->txn, rd->s->dbi[checks ? DB_CHECKS : DB_SERVICES], &k, &v);
    if (rc == MDB_NOTFOUND)
        return REG_ENOTFOUND;
    if (rc != 0)
        return lmdb_fail("mdb_get", rc);
    *val = v.mv_data;
    *vlen = v.mv_size;
    return 0;
}

int store_owner_checks_raw(struct store_read *rd, const char *id, const char *node,
                           store_raw_cb cb, void *arg)
{
    char key[NODE_KEY_MAX];
    if (node != NULL)
        node_key(key, STORE_NODE_OWNER, node);
    MDB_val k = val_str(node != NULL ? key : id), v;
    int rc = 0, stop = 0;
    if (rd->owner_cur == NULL)
        rc = mdb_cursor_open(rd->txn, rd->s->dbi[DB_SVC_CHECKS], &rd->owner_cur);
    if (rc == 0 && rd->check_cur == NULL)
        rc = mdb_cursor_open(rd->txn, rd->s->dbi[DB_CHECKS], &rd->check_cur);
    if (rc != 0) {
        read_cursors_close(rd);
        return lmdb_fail("mdb_cursor_open", rc);
    }
    /* cb sees the check's bytes through check_cur: it must not call here */
    for (rc = mdb_cursor_get(rd->owner_cur, &k, &v, MDB_SET_KEY); rc == 0 && !stop;
         rc = mdb_cursor_get(rd->owner_cur, &k, &v, MDB_NEXT_DUP)) {
        MDB_val ck = v, cv;
        if (mdb_cursor_get(rd->check_cur, &ck, &cv, MDB_SET_KEY) != 0)
            continue;
        stop = cb(ck.mv_data, ck.mv_size, cv.mv_data, cv.mv_size, arg);
    }
    if (stop)
        return stop;
    return rc == MDB_NOTFOUND ? 0 : lmdb_fail("mdb_cursor_get", rc);
}
