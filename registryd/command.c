/*
 * command.c — encoding and decoding of store commands (see command.h).
 * Decoding never trusts its input: a log entry written by another version or
 * damaged on disk is rejected, not applied.
 */
#include "command.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "registry/error.h"

const char *cmd_op_name(enum cmd_op op)
{
    switch (op) {
#define CMD_NAME_(o, value, name) \
    case o:                       \
        return name;
        CMD_OPS(CMD_NAME_)
#undef CMD_NAME_
    }
    return "unknown";
}

static int cmd_op_known(int op)
{
    switch (op) {
#define CMD_KNOWN_(o, value, name) case value:
        CMD_OPS(CMD_KNOWN_)
#undef CMD_KNOWN_
        return 1;
    }
    return 0;
}

int cmd_encode(const struct command *cmd, void *(*alloc)(size_t), void **buf, size_t *len)
{
    if (!cmd_op_known(cmd->op) || cmd->op == CMD_RESTORE_RAW || !json_is_object(cmd->args))
        return REG_EINVAL;
    char *text = json_dumps(cmd->args, JSON_COMPACT | JSON_SORT_KEYS);
    if (text == NULL)
        return REG_ENOMEM;
    size_t n = strlen(text);
    /* libraft 0.15 writes entry data padded to 8 bytes but reads the log
     * back unpadded: a length that is not a multiple of 8 makes the segment
     * unreadable at the next start. Pad with JSON whitespace. */
    size_t total = (n + 2 + 7) & ~(size_t)7;
    unsigned char *out = alloc(total);
    if (out == NULL) {
        free(text);
        return REG_ENOMEM;
    }
    out[0] = CMD_FORMAT_VERSION;
    out[1] = (unsigned char)cmd->op;
    memcpy(out + 2, text, n);
    memset(out + 2 + n, ' ', total - n - 2);
    free(text);
    *buf = out;
    *len = total;
    return 0;
}

int cmd_decode(const void *buf, size_t len, struct command *out)
{
    const unsigned char *p = buf;
    memset(out, 0, sizeof(*out));
    if (len < 4 || p[0] != CMD_FORMAT_VERSION || !cmd_op_known(p[1]) || p[1] == CMD_RESTORE_RAW)
        return REG_EINVAL;
    json_t *args = json_loadb((const char *)p + 2, len - 2, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(args)) {
        json_decref(args);
        return REG_EINVAL;
    }
    out->op = (enum cmd_op)p[1];
    out->args = args;
    return 0;
}

#define RAW_HEAD 16

int cmd_restore_raw_encode(const void *snap, size_t len, void *(*alloc)(size_t), void **buf,
                           size_t *blen)
{
    if (len > SIZE_MAX - RAW_HEAD - 8)
        return REG_EINVAL;
    size_t total = (RAW_HEAD + len + 7) & ~(size_t)7;
    unsigned char *out = alloc(total);
    if (out == NULL)
        return REG_ENOMEM;
    memset(out, 0, RAW_HEAD);
    out[0] = CMD_FORMAT_VERSION;
    out[1] = CMD_RESTORE_RAW;
    for (int i = 0; i < 8; i++)
        out[8 + i] = (unsigned char)((uint64_t)len >> (8 * i));
    memcpy(out + RAW_HEAD, snap, len);
    memset(out + RAW_HEAD + len, 0, total - RAW_HEAD - len);
    *buf = out;
    *blen = total;
    return 0;
}

int cmd_restore_raw_view(const void *buf, size_t len, const void **snap, size_t *snap_len)
{
    const unsigned char *p = buf;
    if (len < RAW_HEAD || p[0] != CMD_FORMAT_VERSION || p[1] != CMD_RESTORE_RAW)
        return REG_EINVAL;
    uint64_t n = 0;
    for (int i = 0; i < 8; i++)
        n |= (uint64_t)p[8 + i] << (8 * i);
    if (n > len - RAW_HEAD || len - RAW_HEAD - n >= 8)
        return REG_EINVAL; /* the padding is less than 8 bytes */
    *snap = p + RAW_HEAD;
    *snap_len = (size_t)n;
    return 0;
}

void cmd_fini(struct command *cmd)
{
    json_decref(cmd->args);
    cmd->args = NULL;
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int cmd_base64_encode(const void *data, size_t len, char **out)
{
    const unsigned char *p = data;
    char *o = malloc((len + 2) / 3 * 4 + 1), *q = o;
    if (o == NULL)
        return REG_ENOMEM;
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < len ? (unsigned)p[i + 1] << 8 : 0) |
                     (i + 2 < len ? p[i + 2] : 0);
        *q++ = b64[v >> 18 & 63];
        *q++ = b64[v >> 12 & 63];
        *q++ = i + 1 < len ? b64[v >> 6 & 63] : '=';
        *q++ = i + 2 < len ? b64[v & 63] : '=';
    }
    *q = '\0';
    *out = o;
    return 0;
}

int cmd_base64_decode(const char *text, void **out, size_t *len)
{
    size_t n = strlen(text);
    if (n % 4 != 0)
        return REG_EINVAL;
    unsigned char *o = malloc(n / 4 * 3 + 1);
    size_t k = 0;
    if (o == NULL)
        return REG_ENOMEM;
    for (size_t i = 0; i < n; i += 4) {
        unsigned v = 0;
        int pad = 0;
        for (int j = 0; j < 4; j++) {
            char ch = text[i + j];
            const char *at = ch ? strchr(b64, ch) : NULL;
            if (ch == '=' && i + 4 == n && j >= 2) {
                pad++;
                v <<= 6;
                continue;
            }
            if (at == NULL || pad) {
                free(o);
                return REG_EINVAL;
            }
            v = v << 6 | (unsigned)(at - b64);
        }
        o[k++] = (unsigned char)(v >> 16);
        if (pad < 2)
            o[k++] = (unsigned char)(v >> 8);
        if (pad < 1)
            o[k++] = (unsigned char)v;
    }
    *out = o;
    *len = k;
    return 0;
}
