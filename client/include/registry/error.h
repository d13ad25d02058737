/*
 * registry/error.h — the one error space shared by libregistry, registryd and
 * registryctl.
 *
 * Every function in the project that can fail returns an int: 0 on success or
 * one of the negative REG_E* codes below. reg_strerror() turns a code into a
 * short, static, English message.
 */
#ifndef REGISTRY_ERROR_H
#define REGISTRY_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define REG_EXPORT __attribute__((visibility("default")))
#else
#define REG_EXPORT
#endif

/* X-macro: code name, value, message. The enum and the message table come
 * from this one list so that they cannot drift apart. */
#define REG_ERRORS(X)                                              \
    X(REG_OK, 0, "success")                                        \
    X(REG_EINVAL, -1, "invalid argument")                          \
    X(REG_ENOMEM, -2, "out of memory")                             \
    X(REG_EIO, -3, "input/output error")                           \
    X(REG_ENOTFOUND, -4, "not found")                              \
    X(REG_ECONFIG, -5, "configuration error")                      \
    X(REG_ESTORE, -6, "storage error")                             \
    X(REG_ERAFT, -7, "replication error")                          \
    X(REG_ETOOBIG, -8, "too large")                                \
    X(REG_ENOTLEADER, -9, "not the leader")                        \
    X(REG_ESHUTDOWN, -10, "shutting down")                         \
    X(REG_ECONNECT, -11, "cannot connect to any registry server")  \
    X(REG_ETIMEDOUT, -12, "timed out")                             \
    X(REG_EPROTO, -13, "protocol error (unexpected server reply)") \
    X(REG_ESERVER, -14, "the server reported an error")            \
    X(REG_EEXIT, -15, "nothing more to do (exit requested)")          \
    X(REG_EOPEN, -16, "circuit breaker open")                         \
    X(REG_EBULKHEAD, -17, "too many calls in flight (bulkhead full)") \
    X(REG_EDEADLINE, -18, "deadline exceeded")                        \
    X(REG_EBUDGET, -19, "retry budget exhausted")                     \
    X(REG_EFAILED, -20, "the call failed")                            \
    X(REG_ENOSPACE, -21, "no space left on the data disk")           \
    X(REG_ECONFLICT, -22, "conflicts with what is stored")           \
    X(REG_ELEADERLOST, -23, "leadership lost while committing (the write may be done)")

enum reg_error {
#define REG_ENUM_(name, value, msg) name = value,
    REG_ERRORS(REG_ENUM_)
#undef REG_ENUM_
};

/* Return a static message for an error code; never NULL. */
REG_EXPORT const char *reg_strerror(int code);

#ifdef __cplusplus
}
#endif
#endif /* REGISTRY_ERROR_H */
