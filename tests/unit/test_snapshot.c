/* Unit tests for snapshot.c's checksum: CRC32C as the format defines it
 * (Castagnoli, reflected, inverted in and out), the same from the CPU's
 * instruction (where there is one) and from the tables, for every length
 * and alignment and when fed in pieces. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "snapshot.h"

/* One bit at a time: slow and obviously the definition. */
static uint32_t crc32c_bitwise(uint32_t crc, const unsigned char *p, size_t len)
{
    crc = ~crc;
    while (len--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++)
            crc = crc & 1 ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
    }
    return ~crc;
}

static void test_check_values(void **state)
{
    (void)state;
    /* RFC 3720 B.4 and the usual "123456789" check value */
    assert_int_equal(snap_crc32c(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(snap_crc32c_sw(0, "123456789", 9), 0xE3069283u);
    unsigned char zeros[32] = {0}, ones[32];
    memset(ones, 0xff, sizeof(ones));
    assert_int_equal(snap_crc32c(0, zeros, 32), 0x8A9136AAu);
    assert_int_equal(snap_crc32c(0, ones, 32), 0x62A8AB43u);
    assert_int_equal(snap_crc32c(0, "", 0), 0);
}

static void test_every_length_alignment_and_split(void **state)
{
    (void)state;
    static unsigned char buf[600];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof(buf); i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (unsigned char)(x >> 16);
    }
    for (size_t off = 0; off < 9; off++)
        for (size_t len = 0; off + len <= sizeof(buf); len += len < 40 ? 1 : 37) {
            uint32_t want = crc32c_bitwise(0, buf + off, len);
            assert_int_equal(snap_crc32c(0, buf + off, len), want);
            assert_int_equal(snap_crc32c_sw(0, buf + off, len), want);
            size_t cut = len / 3; /* a running CRC fed in two pieces */
            assert_int_equal(
                snap_crc32c(snap_crc32c(0, buf + off, cut), buf + off + cut, len - cut), want);
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_values),
        cmocka_unit_test(test_every_length_alignment_and_split),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
