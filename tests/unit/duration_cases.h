/*
 * duration_cases.h — one table of Go-style durations, checked against the
 * daemon's duration_parse (test_duration.c) and against how libregistry reads
 * a blocking query's wait= (test_client.c), so the two cannot disagree.
 * Valid strings follow Go's time.ParseDuration (non-negative); ms is rounded.
 */
#ifndef TEST_DURATION_CASES_H
#define TEST_DURATION_CASES_H

#include <stdbool.h>
#include <stdint.h>

static const struct duration_case {
    const char *text;
    bool ok;
    uint64_t ms;
} duration_cases[] = {
    {"0", true, 0},
    {"0s", true, 0},
    {"10s", true, 10000},
    {"1m30s", true, 90000}, /* libregistry read this as 1m */
    {"1h30m", true, 5400000},
    {"2h45m10.5s", true, 9910500},
    {"0m2s", true, 2000},
    {"500ms", true, 500},
    {"1.5h", true, 5400000},
    {"1.s", true, 1000},
    {".5s", true, 500},
    {"90s", true, 90000},
    {"1500us", true, 2},
    {"1000000ns", true, 1},
    {"3\xc2\xb5s", true, 0},
    {"1m0.5s", true, 60500},
    {"", false, 0},
    {"s", false, 0},
    {"10", false, 0},
    {"00", false, 0},
    {"1m30", false, 0},
    {"-1s", false, 0},
    {"+1s", false, 0},
    {"1e3s", false, 0},
    {"0x10s", false, 0},
    {" 10s", false, 0},
    {"10s ", false, 0},
    {"10 s", false, 0},
    {"1d", false, 0},
    {"10S", false, 0},
    {".s", false, 0},
    {"1.2.3s", false, 0},
    {"infs", false, 0},
    {"10000000000h", false, 0},
    {"99999999999999999999999999h", false, 0},
};

#define N_DURATION_CASES (sizeof(duration_cases) / sizeof(duration_cases[0]))

#endif
