/*
 * writer.c - live migration benchmark and test program: a heap of N MiB
 * (argv[1], 0 for none) that it keeps writing at R MiB/s (argv[2], default
 * 0), printing a counter every second (argv[3] milliseconds, default 1000).
 *
 * Every 4 KiB page holds its own index in its first word and, in its
 * second, the round in which it was last written; rounds only grow. On a
 * line on stdin (or its end) it checks every page and prints "PASS <n>"
 * (n: counters printed) and exits 0, or "FAIL ..." and exits 1.
 */
#define _GNU_SOURCE
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoul(argv[1], 0, 10) : 0;
    double rate = argc > 2 ? strtod(argv[2], 0) : 0;
    int tick_ms = argc > 3 ? atoi(argv[3]) : 1000;
    size_t pages = mib * 256;
    uint64_t *heap = pages ? malloc(pages * 4096) : 0;
    if (pages && !heap)
        return 2;
    for (size_t p = 0; p < pages; p++) {
        heap[p * 512] = p;
        heap[p * 512 + 1] = 0;
        memset(&heap[p * 512 + 2], 0x5a, 4096 - 16);
    }
    printf("READY\n");
    fflush(stdout);
    uint64_t round = 1, counter = 0;
    size_t next = 0;
    double start = now(), last_tick = start, written = 0;
    for (;;) {
        struct pollfd pfd = { .fd = 0, .events = POLLIN };
        if (poll(&pfd, 1, 10) > 0)
            break;
        double t = now();
        /* Pages owed at the rate since the start. */
        double owed = rate * 256 * (t - start) - written;
        for (; owed >= 1 && pages; owed--, written++) {
            heap[next * 512 + 1] = round;
            if (++next == pages) {
                next = 0;
                round++;
            }
        }
        if ((t - last_tick) * 1000 >= tick_ms) {
            last_tick = t;
            printf("%llu\n", (unsigned long long)counter++);
            fflush(stdout);
        }
    }
    for (size_t p = 0; p < pages; p++) {
        uint64_t r = heap[p * 512 + 1];
        int want = p < next ? (r == round) : (r == round - 1);
        if (heap[p * 512] != p || !want) {
            printf("FAIL page %zu: index %llu round %llu (now round %llu at %zu)\n", p,
                   (unsigned long long)heap[p * 512], (unsigned long long)r,
                   (unsigned long long)round, next);
            return 1;
        }
        for (int w = 2; w < 512; w++)
            if (heap[p * 512 + w] != 0x5a5a5a5a5a5a5a5aULL) {
                printf("FAIL page %zu word %d\n", p, w);
                return 1;
            }
    }
    printf("PASS %llu\n", (unsigned long long)counter);
    return 0;
}
