/*
 * command.c — encoding and decoding of store commands (see command.h).
 * Decoding never trusts its input: a log entry written by another version or
 * damaged on disk is rejected, not applied.
 */
#include "command.h"

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
    if (!cmd_op_known(cmd->op) || !json_is_object(cmd->args))
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
    if (len < 4 || p[0] != CMD_FORMAT_VERSION || !cmd_op_known(p[1]))
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

void cmd_fini(struct command *cmd)
{
    json_decref(cmd->args);
    cmd->args = NULL;
}
