/*
 * error.c — message table for the shared REG_E* error space (see
 * registry/error.h). Compiled into libregistry and into registryd.
 */
#include "registry/error.h"

const char *reg_strerror(int code)
{
    switch (code) {
#define REG_CASE_(name, value, msg) \
    case value:                     \
        return msg;
        REG_ERRORS(REG_CASE_)
#undef REG_CASE_
    }
    return "unknown error";
}
