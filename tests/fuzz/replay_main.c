/*
 * replay_main.c — runs a libFuzzer target without libFuzzer: every file in
 * the corpus directories given, then ITERATIONS deterministic mutations of
 * them (bit flips, truncations, splices). Bounded, so it is a plain test.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_INPUTS 256
#define MAX_SIZE 4096
#define ITERATIONS 200000

static uint8_t inputs[MAX_INPUTS][MAX_SIZE];
static size_t sizes[MAX_INPUTS];

int main(int argc, char **argv)
{
    int n = 0;
    for (int a = 1; a < argc; a++) {
        DIR *d = opendir(argv[a]);
        if (d == NULL) {
            fprintf(stderr, "replay: cannot open %s\n", argv[a]);
            return 2;
        }
        for (struct dirent *e; (e = readdir(d)) != NULL && n < MAX_INPUTS;) {
            if (e->d_name[0] == '.')
                continue;
            char path[4096];
            snprintf(path, sizeof(path), "%s/%s", argv[a], e->d_name);
            FILE *f = fopen(path, "rb");
            if (f == NULL)
                continue;
            sizes[n] = fread(inputs[n], 1, MAX_SIZE, f);
            fclose(f);
            LLVMFuzzerTestOneInput(inputs[n], sizes[n]);
            n++;
        }
        closedir(d);
    }
    if (n == 0) {
        fprintf(stderr, "replay: empty corpus\n");
        return 2;
    }
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    uint8_t buf[MAX_SIZE];
    for (long i = 0; i < ITERATIONS; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        int k = (int)(x % (uint64_t)n);
        size_t len = sizes[k];
        memcpy(buf, inputs[k], len);
        switch ((x >> 20) % 4) {
        case 0: /* flip some bits */
            for (int j = 0; j < 1 + (int)((x >> 8) % 4) && len; j++)
                buf[(x >> (12 + j * 5)) % len] ^= (uint8_t)(1u << ((x >> (30 + j)) % 8));
            break;
        case 1: /* truncate */
            len = len ? (size_t)((x >> 24) % len) : 0;
            break;
        case 2: { /* set a byte to an interesting value */
            static const uint8_t vals[] = {0, 1, 0x3f, 0x40, 0x7f, 0x80, 0xc0, 0xff};
            if (len)
                buf[(x >> 28) % len] = vals[(x >> 40) % 8];
            break;
        }
        default: { /* splice the tail of another input */
            int o = (int)((x >> 33) % (uint64_t)n);
            size_t cut = len ? (size_t)((x >> 44) % len) : 0;
            size_t tail = sizes[o] / 2;
            if (cut + tail <= MAX_SIZE) {
                memcpy(buf + cut, inputs[o] + sizes[o] - tail, tail);
                len = cut + tail;
            }
        }
        }
        LLVMFuzzerTestOneInput(buf, len);
    }
    printf("replay: %d corpus inputs, %d mutations, no crash\n", n, ITERATIONS);
    return 0;
}
