/*
 * cluster_files.c — see cluster_files.h. The LZ4 frame is walked, not
 * decompressed: block sizes and the end mark are enough to know it is whole,
 * and walking costs one read per block.
 */
#include "cluster_files.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hash.h"
#include "registry/error.h"
#include "snapshot.h"

#define LZ4F_MAGIC 0x184D2204u

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int read_at(int fd, off_t at, void *buf, size_t n)
{
    ssize_t got = pread(fd, buf, n, at);
    return got == (ssize_t)n ? 0 : -1;
}

/* 0 if the LZ4 frame in fd (size bytes) is whole, else -1 with why. */
static int lz4_whole(int fd, off_t size, char *why, size_t whylen)
{
    unsigned char h[4 + 2 + 8 + 4 + 1];
    if (read_at(fd, 4, h, 2) != 0) {
        snprintf(why, whylen, "LZ4 frame header cut short");
        return -1;
    }
    unsigned flg = h[0];
    if ((flg >> 6) != 1) {
        snprintf(why, whylen, "LZ4 frame version %u unknown", flg >> 6);
        return -1;
    }
    bool block_sum = flg & 0x10, content_size = flg & 0x08, content_sum = flg & 0x04,
         dict = flg & 0x01;
    off_t at = 4 + 2 + (content_size ? 8 : 0) + (dict ? 4 : 0) + 1;
    for (;;) {
        unsigned char b[4];
        if (at + 4 > size || read_at(fd, at, b, 4) != 0) {
            snprintf(why, whylen, "LZ4 frame cut short at byte %lld of %lld (no end mark)",
                     (long long)at, (long long)size);
            return -1;
        }
        uint32_t n = le32(b) & 0x7fffffffu;
        at += 4;
        if (le32(b) == 0)
            break;
        at += (off_t)n + (block_sum ? 4 : 0);
        if (at > size) {
            snprintf(why, whylen, "LZ4 block runs past the end of the file (%lld bytes)",
                     (long long)size);
            return -1;
        }
    }
    if (content_sum)
        at += 4;
    if (at != size) {
        snprintf(why, whylen, "LZ4 frame ends at byte %lld of %lld", (long long)at,
                 (long long)size);
        return -1;
    }
    return 0;
}

/* 0 if a plain (uncompressed) snapshot is one of ours, whole. */
static int plain_whole(int fd, off_t size, char *why, size_t whylen)
{
    unsigned char head[8], tail[8];
    if (size < 8 || read_at(fd, 0, head, 8) != 0) {
        snprintf(why, whylen, "too short to be a snapshot (%lld bytes)", (long long)size);
        return -1;
    }
    if (memcmp(head, SNAP_MAGIC_V1, 8) == 0)
        return 0; /* format 1 has no end to check */
    if (memcmp(head, SNAP_MAGIC, 8) != 0) {
        snprintf(why, whylen, "neither LZ4 nor a registryd snapshot");
        return -1;
    }
    if (size < SNAP_HEADER_LEN + SNAP_TRAILER_LEN ||
        read_at(fd, size - SNAP_TRAILER_LEN, tail, 8) != 0 ||
        memcmp(tail, SNAP_END_MAGIC, 8) != 0) {
        snprintf(why, whylen, "snapshot cut short (no end marker)");
        return -1;
    }
    return 0;
}

static bool is_snapshot_data(const char *name)
{
    size_t n = strlen(name);
    return strncmp(name, "snapshot-", 9) == 0 && !(n > 5 && strcmp(name + n - 5, ".meta") == 0);
}

int cluster_check_files(const char *raft_dir, char *err, size_t errlen)
{
    DIR *d = opendir(raft_dir);
    if (d == NULL)
        return 0; /* libraft reports what it cannot open */
    int rc = 0;
    for (struct dirent *e; rc == 0 && (e = readdir(d)) != NULL;) {
        if (!is_snapshot_data(e->d_name))
            continue;
        char path[4352], why[160] = "";
        snprintf(path, sizeof(path), "%s/%s", raft_dir, e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        unsigned char magic[4];
        if (fd < 0 || fstat(fd, &st) != 0) {
            snprintf(why, sizeof(why), "cannot read: %s", strerror(errno));
            rc = -1;
        } else if (st.st_size >= 4 && read_at(fd, 0, magic, 4) == 0 && le32(magic) == LZ4F_MAGIC) {
            rc = lz4_whole(fd, st.st_size, why, sizeof(why));
        } else {
            rc = plain_whole(fd, st.st_size, why, sizeof(why));
        }
        if (fd >= 0)
            close(fd);
        if (rc != 0) {
            snprintf(err, errlen,
                     "raft snapshot %s is damaged: %s. Move it (and its .meta) out of the "
                     "raft directory to start from the other snapshots and the log, or "
                     "restore a backup (see README, Backups)",
                     path, why);
            rc = REG_ERAFT;
        }
    }
    closedir(d);
    return rc;
}

bool cluster_has_state(const char *raft_dir)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/metadata1", raft_dir);
    if (access(path, F_OK) == 0)
        return true;
    snprintf(path, sizeof(path), "%s/metadata2", raft_dir);
    return access(path, F_OK) == 0;
}

/* ---- fingerprint ---- */

struct fp_entry {
    char name[256];
    long long size, mtime_ns;
};

static int fp_cmp(const void *a, const void *b)
{
    return strcmp(((const struct fp_entry *)a)->name, ((const struct fp_entry *)b)->name);
}

uint64_t cluster_files_fingerprint(const char *raft_dir)
{
    DIR *d = opendir(raft_dir);
    if (d == NULL)
        return 0;
    struct fp_entry *e = NULL;
    size_t n = 0, cap = 0;
    uint64_t h = HASH_FNV64_OFFSET;
    bool ok = true;
    for (struct dirent *de; ok && (de = readdir(d)) != NULL;) {
        struct stat st;
        if (de->d_name[0] == '.' || fstatat(dirfd(d), de->d_name, &st, 0) != 0 ||
            !S_ISREG(st.st_mode))
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            struct fp_entry *ne = ncap < 1000000 ? realloc(e, ncap * sizeof(*e)) : NULL;
            if (ne == NULL) {
                ok = false;
                break;
            }
            e = ne;
            cap = ncap;
        }
        snprintf(e[n].name, sizeof(e[n].name), "%s", de->d_name);
        e[n].size = (long long)st.st_size;
        e[n].mtime_ns = (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
        n++;
    }
    closedir(d);
    if (ok && n > 0) {
        qsort(e, n, sizeof(*e), fp_cmp);
        for (size_t i = 0; i < n; i++) {
            char line[320];
            snprintf(line, sizeof(line), "%s %lld %lld;", e[i].name, e[i].size, e[i].mtime_ns);
            h = (h ^ hash_fnv1a64(line)) * HASH_FNV64_PRIME;
        }
    }
    free(e);
    return ok && n > 0 ? (h ? h : 1) : 0;
}

/* ---- the newest snapshot held aside while raft starts ------------------- */

/* "snapshot-T-I-TS.meta": its numbers. */
static bool meta_name(const char *name, unsigned long long v[3])
{
    int end = 0;
    return sscanf(name, "snapshot-%llu-%llu-%llu.meta%n", &v[0], &v[1], &v[2], &end) == 3 &&
           name[end] == '\0';
}

/* What a snapshot file of size bytes holds once read: an LZ4 frame (libraft
 * compresses with the content size in its header) says it; else its size. */
static uint64_t content_size(const char *path, uint64_t size)
{
    unsigned char h[14];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return size;
    bool lz4 = read_at(fd, 0, h, sizeof(h)) == 0 && le32(h) == LZ4F_MAGIC && (h[4] & 0x08);
    close(fd);
    if (!lz4)
        return size;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | h[6 + i];
    return n;
}

int cluster_files_hold(const char *raft_dir, uint64_t applied, struct cluster_held *h, char *err,
                       size_t errlen)
{
    memset(h, 0, sizeof(*h));
    DIR *d = opendir(raft_dir);
    if (d == NULL)
        return 0;
    /* the snapshot libraft loads: the newest by (term, index, timestamp)
     * of those with a non-empty data file */
    unsigned long long best[3] = {0, 0, 0};
    char name[300] = "";
    uint64_t bytes = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        unsigned long long v[3];
        struct stat st;
        char data[300];
        if (!meta_name(e->d_name, v) || strlen(e->d_name) >= sizeof(data))
            continue;
        snprintf(data, sizeof(data), "%.*s", (int)(strlen(e->d_name) - 5), e->d_name);
        if (fstatat(dirfd(d), data, &st, 0) != 0 || !S_ISREG(st.st_mode) || st.st_size == 0)
            continue;
        bool newer = name[0] == '\0' || v[0] > best[0] || (v[0] == best[0] && v[1] > best[1]) ||
                     (v[0] == best[0] && v[1] == best[1] && v[2] > best[2]);
        if (newer) {
            memcpy(best, v, sizeof(best));
            snprintf(name, sizeof(name), "%s", data);
            bytes = (uint64_t)st.st_size;
        }
    }
    closedir(d);
    if (name[0] == '\0' || best[1] > applied || bytes <= CLUSTER_STUB_LEN)
        return 0;
    snprintf(h->data, sizeof(h->data), "%s/%s", raft_dir, name);
    snprintf(h->held, sizeof(h->held), "%s/" CLUSTER_HELD_PREFIX "%s", raft_dir, name);
    h->index = best[1];
    h->bytes = content_size(h->data, bytes);
    unsigned char stub[CLUSTER_STUB_LEN];
    memcpy(stub, CLUSTER_STUB_MAGIC, 8);
    for (int i = 0; i < 8; i++)
        stub[8 + i] = (unsigned char)(h->index >> (56 - 8 * i));
    if (rename(h->data, h->held) != 0) {
        snprintf(err, errlen, "cannot move %s aside: %s", h->data, strerror(errno));
        h->data[0] = '\0';
        return REG_EIO;
    }
    int fd = open(h->data, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    bool ok = fd >= 0 && write(fd, stub, sizeof(stub)) == (ssize_t)sizeof(stub);
    int saved = errno;
    if (fd >= 0)
        close(fd);
    if (!ok) {
        unlink(h->data);
        if (rename(h->held, h->data) != 0) { /* not as it was: raft must not start */
            snprintf(err, errlen, "cannot write %s (%s), nor move %s back: %s", h->data,
                     strerror(saved), h->held, strerror(errno));
            return REG_ERAFT;
        }
        snprintf(err, errlen, "cannot write %s: %s", h->data, strerror(saved));
        h->data[0] = '\0';
        return REG_EIO;
    }
    return 0;
}

int cluster_files_release(struct cluster_held *h, char *err, size_t errlen)
{
    if (h->data[0] == '\0')
        return 0;
    if (rename(h->held, h->data) != 0) {
        snprintf(err, errlen, "cannot move %s back to %s: %s", h->held, h->data, strerror(errno));
        return REG_EIO;
    }
    h->data[0] = '\0';
    return 0;
}

int cluster_files_heal(const char *raft_dir, char *err, size_t errlen)
{
    DIR *d = opendir(raft_dir);
    if (d == NULL)
        return 0;
    int rc = 0;
    const size_t pl = strlen(CLUSTER_HELD_PREFIX);
    for (struct dirent *e; rc == 0 && (e = readdir(d)) != NULL;) {
        if (strncmp(e->d_name, CLUSTER_HELD_PREFIX, pl) != 0 ||
            strncmp(e->d_name + pl, "snapshot-", 9) != 0)
            continue;
        if (renameat(dirfd(d), e->d_name, dirfd(d), e->d_name + pl) != 0) {
            snprintf(err, errlen, "cannot move %s/%s back: %s", raft_dir, e->d_name,
                     strerror(errno));
            rc = REG_EIO;
        }
    }
    closedir(d);
    return rc;
}

bool cluster_files_is_stub(const void *buf, size_t len, uint64_t *index)
{
    const unsigned char *p = buf;
    if (len != CLUSTER_STUB_LEN || memcmp(p, CLUSTER_STUB_MAGIC, 8) != 0)
        return false;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[8 + i];
    *index = v;
    return true;
}
