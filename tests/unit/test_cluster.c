/* Unit tests for cluster.c's snapshot interval policy: a store's snapshot
 * costs what the store holds, so unless configured, the entries between
 * snapshots grow with its size (within bounds). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cluster.h"

static void test_snapshot_threshold_grows_with_the_store(void **state)
{
    (void)state;
    /* small stores: Consul's fixed interval */
    assert_int_equal(cluster_snapshot_threshold(0), CLUSTER_SNAPSHOT_ENTRIES);
    assert_int_equal(cluster_snapshot_threshold(100), 16384);
    assert_int_equal(cluster_snapshot_threshold(32u << 20), 16384); /* 32 MiB / 2 KiB */
    /* larger: one entry per 2 KiB of snapshot, so the copy per write stays put */
    assert_int_equal(cluster_snapshot_threshold(64u << 20), 32768);
    assert_int_equal(cluster_snapshot_threshold(250000000u), 250000000u / 2048);
    /* bounded: the log libraft holds in memory and replays after a crash */
    assert_int_equal(cluster_snapshot_threshold(512u << 20), 262144);
    assert_int_equal(cluster_snapshot_threshold((uint64_t)1 << 40), CLUSTER_SNAPSHOT_ENTRIES_MAX);
    assert_int_equal(cluster_snapshot_threshold(UINT64_MAX), CLUSTER_SNAPSHOT_ENTRIES_MAX);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snapshot_threshold_grows_with_the_store),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
