/*
 * command.h — every mutation of the store is a command.
 *
 * A command is an operation code plus a JSON object (jansson) holding the
 * already-validated, fully normalised arguments (the HTTP layer fills in
 * defaults and generated ids before encoding, so that applying a command is
 * deterministic on every server). On the wire and in the Raft log a command is
 *
 *     byte 0   CMD_FORMAT_VERSION
 *     byte 1   enum cmd_op
 *     byte 2.. compact JSON text of the arguments, padded with spaces so
 *              that the whole length is a multiple of 8 (libraft 0.15 needs it)
 *
 * store_apply() (store.h) is the only consumer of decoded commands.
 */
#ifndef REGISTRYD_COMMAND_H
#define REGISTRYD_COMMAND_H

#include "common.h"

#include <jansson.h>
#include <stddef.h>

#define CMD_FORMAT_VERSION 1

/* X-macro: op, wire value, name. */
#define CMD_OPS(X)                        \
    X(CMD_REGISTER, 1, "register")        \
    X(CMD_DEREGISTER, 2, "deregister")    \
    X(CMD_CHECK_UPDATE, 3, "check_update") \
    X(CMD_MAINTENANCE, 4, "maintenance")  \
    X(CMD_SERVER, 5, "server")            \
    X(CMD_RESTORE, 6, "restore")          \
    X(CMD_NODE, 7, "node")                \
    X(CMD_ACL, 8, "acl")                  \
    X(CMD_RESTORE_RAW, 9, "restore_raw")

enum cmd_op {
#define CMD_ENUM_(op, value, name) op = value,
    CMD_OPS(CMD_ENUM_)
#undef CMD_ENUM_
};

struct command {
    enum cmd_op op;
    json_t *args; /* owned: a JSON object */
};

const char *cmd_op_name(enum cmd_op op);

/*
 * Encode cmd into a buffer allocated with `alloc` (raft_malloc for commands
 * handed to libraft, malloc otherwise). cmd is borrowed. Returns 0 or
 * REG_ENOMEM / REG_EINVAL (unknown op, args not an object).
 */
int cmd_encode(const struct command *cmd, void *(*alloc)(size_t), void **buf, size_t *len)
    REG_MUSTCHECK;

/* Base64 (RFC 4648) for binary data in command arguments (a restored
 * snapshot travels as {"Data": "<base64>"}). *out is malloc'd; the caller
 * frees it. Decoding returns REG_EINVAL on anything that is not base64. */
int cmd_base64_encode(const void *data, size_t len, char **out);
int cmd_base64_decode(const char *text, void **out, size_t *len);

/*
 * A restore carries a whole snapshot, which can be large: it is not JSON
 * but the snapshot's bytes themselves (CMD_RESTORE, base64 in JSON, is still
 * read from raft logs written before):
 *
 *     byte 0      CMD_FORMAT_VERSION
 *     byte 1      CMD_RESTORE_RAW
 *     bytes 2-7   zero
 *     bytes 8-15  u64 little-endian: the snapshot's length
 *     16..        the snapshot, then zeros up to a multiple of 8
 *
 * cmd_restore_raw_encode copies len bytes of snap into a new buffer from
 * `alloc`. cmd_restore_raw_view points *snap into buf (no copy); it returns
 * REG_EINVAL unless buf is such a command, 0 otherwise.
 */
int cmd_restore_raw_encode(const void *snap, size_t len, void *(*alloc)(size_t), void **buf,
                           size_t *blen) REG_MUSTCHECK;
int cmd_restore_raw_view(const void *buf, size_t len, const void **snap, size_t *snap_len)
    REG_MUSTCHECK;

/*
 * Decode buf into out (out->args is a new reference the caller must
 * json_decref, or call cmd_fini). Returns 0 or REG_EINVAL for a buffer that
 * is not a well-formed command of a known op.
 */
int cmd_decode(const void *buf, size_t len, struct command *out) REG_MUSTCHECK;

void cmd_fini(struct command *cmd);

#endif
