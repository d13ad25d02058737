/*
 * record.h — the one validator of stored records. Every record that crosses a
 * boundary into registryd's memory (read back from LMDB, carried by a
 * snapshot, written by a command from the raft log) is checked here against
 * the schema registryd itself writes, so that no code downstream ever meets
 * a missing or wrongly typed field. Fields we do not know are allowed (a
 * newer version may add some); known ones must be present and typed.
 *
 *   instance  ID, Service (names), Tags [string], Address, Port 0..65535,
 *             Meta {string: string}, Weights {Passing, Warning: int},
 *             EnableTagOverride bool, Node?, NodeAddress? (strings),
 *             CreateIndex, ModifyIndex (0..RECORD_INDEX_MAX)
 *   check     CheckID (name), Name, Status (passing|warning|critical),
 *             Notes, Output, ServiceID, ServiceName (strings), Type (http,
 *             tcp, udp, grpc, h2ping, script, alias, ttl, maintenance or ""),
 *             Definition {...}, Node?, indexes
 *             Type "" is a check registered through the catalog (never
 *             probed): its Definition is only required to be an object
 *   server    ID (int > 0), Raft, HTTP (strings); Node (a node name) and
 *             Address (an IP) together or neither; NodeMeta? {string:
 *             string}
 *   node      Node (name), NodeAddress (string), NodeMeta? {string: string}
 *   acl_token AccessorID (name), SecretHash? (string; only the anonymous
 *             token has none), Description, CreateTime (strings), Local
 *             bool, Policies [{ID (name), Name? (string)}], ExpirationTime?
 *             (RFC 3339), ServiceIdentities? [{ServiceName (an identity
 *             name), Datacenters? [string]}], NodeIdentities? [{NodeName
 *             (an identity name), Datacenter (a non-empty string)}], indexes
 *   acl_policy ID, Name (names), Description, Rules (strings),
 *             Datacenters [string], indexes
 *   acl_bootstrap Index (int): ACLs were bootstrapped
 *
 * Strings never hold a NUL or other control character where they name
 * something (IDs, names, types).
 */
#ifndef REGISTRYD_RECORD_H
#define REGISTRYD_RECORD_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Indexes stay far below 2^63 (jansson integers are signed) so that adding
 * to one can never wrap. */
#define RECORD_INDEX_MAX (UINT64_C(1) << 62)
/* Longest key of any record (a check ID is a service ID plus a prefix). */
#define RECORD_KEY_MAX 320

enum record_kind {
    RECORD_INSTANCE,
    RECORD_CHECK,
    RECORD_SERVER,
    RECORD_NODE,
    RECORD_ACL_TOKEN,
    RECORD_ACL_POLICY,
    RECORD_ACL_BOOTSTRAP
};

const char *record_kind_name(enum record_kind kind);

/* rec is borrowed. Returns 0 or REG_EINVAL with the first problem in err
 * ("check: field ServiceID missing"). */
int record_check(enum record_kind kind, json_t *rec, char *err, size_t errlen);

/* Parse len bytes of JSON text, packed or plain, and check them. *out is a
 * new reference. Returns 0 or REG_EINVAL (with err). */
int record_decode(enum record_kind kind, const void *buf, size_t len, json_t **out, char *err,
                  size_t errlen);

/*
 * Packed records. LMDB holds instances and checks packed: the compact JSON
 * text with its most common runs (keys, their punctuation, usual values:
 * `","ServiceName":"`) each replaced by one byte 0x01-0x1f (not tab, LF or
 * CR). JSON text never holds such a byte raw (jansson escapes them inside
 * strings), so unpacking is exact and text without one is its own packed
 * form: plain records (older stores, snapshots) read the same. At a million
 * instances it cut the store's pages by 40%. Snapshots carry plain text.
 */
/* Longest text a packed record may expand to: what a snapshot may carry as
 * one plain record (SNAP_VALUE_MAX), so that a hostile packed value costs
 * no more than a plain one. */
#define RECORD_UNPACKED_MAX (16u << 20)

/* Pack len bytes of JSON text into out (room for len bytes). Returns the
 * packed length; text holding a byte below 0x20 is copied unchanged. */
size_t record_pack(const char *text, size_t len, char *out);
/* The unpacked length of buf: len when it holds no packed run; SIZE_MAX when
 * it expands past RECORD_UNPACKED_MAX. */
size_t record_unpacked_len(const void *buf, size_t len);
/* Unpack buf into out (record_unpacked_len(buf, len) bytes). */
void record_unpack(const void *buf, size_t len, char *out);

/* A value as plain text: buf itself when it holds no packed run, else
 * unpacked into the view (free with record_plain_free). */
struct record_plain {
    char small[2048];
    char *heap;
    size_t len; /* of the text returned */
};
/* The plain text of buf, len bytes long (*out_len), or NULL: it expands
 * past RECORD_UNPACKED_MAX (errno EINVAL) or memory ran out (ENOMEM). */
const char *record_plain_view(struct record_plain *pv, const void *buf, size_t len);
void record_plain_free(struct record_plain *pv);

/* A key or name: 1..max bytes, no NUL, no control character, no '/'. */
bool record_valid_key(const void *s, size_t len, size_t max);

/* A node name as CONF_NAME takes it: [A-Za-z0-9_.-], 1 to 128 bytes. */
bool record_node_name_ok(const char *s);
/* A service or node identity's name as Consul takes it (a token's
 * ServiceIdentities and NodeIdentities): ^[a-z0-9]([a-z0-9_-]*[a-z0-9])?$,
 * at most 256 bytes. */
bool record_identity_name_ok(const char *s);

#endif
