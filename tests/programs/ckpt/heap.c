/*
 * heap.c - checkpoint/restore test: a large heap, the malloc arena and brk.
 *
 * Protocol (as every program in this directory): set up state, print
 * "READY\n", block in read(0), then print "PASS\n" (exit 0) or
 * "FAIL: <what differs>\n" (exit 1).  Works without a checkpoint too:
 * `echo go | ./heap`.
 *
 * State: one calloc'd block of N MiB (argv[1], default 100, 0 for none; mmap'd by
 * malloc) whose 4 KiB pages are filled with a pattern derived from the
 * word index, except every 7th page, which is never touched (so it stays
 * an unpopulated zero page); 2000 small blocks of varied sizes in the brk
 * heap with every 3rd one freed (fragmented free lists); the program
 * break, recorded with sbrk(0).
 * After restore: every word of the big block and every live small block is
 * checked; sbrk(0) must equal the recorded break, sbrk(+1 MiB) must give
 * exactly the old break and usable memory, sbrk(-1 MiB) must shrink it
 * back; then the small blocks are freed, 2000 more allocated, filled and
 * checked, and a 32 MiB block allocated, touched and freed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char failbuf[4096];
static size_t faillen;

static void put(const char *s)
{
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(1, s, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            _exit(3);
        }
        s += w;
        n -= (size_t)w;
    }
}

static void fail(const char *fmt, ...)
{
    va_list ap;
    if (faillen + 2 >= sizeof failbuf)
        return;
    if (faillen > 0) {
        failbuf[faillen++] = ';';
        failbuf[faillen++] = ' ';
    }
    va_start(ap, fmt);
    int n = vsnprintf(failbuf + faillen, sizeof failbuf - faillen, fmt, ap);
    va_end(ap);
    if (n > 0)
        faillen += (size_t)n;
    if (faillen >= sizeof failbuf)
        faillen = sizeof failbuf - 1;
}

static int finish(void)
{
    if (faillen == 0) {
        put("PASS\n");
        return 0;
    }
    put("FAIL: ");
    put(failbuf);
    put("\n");
    return 1;
}

/* Blocks in read(0) until the harness writes "go\n" (or EOF).  EINTR is
 * reported: no handler runs here, so the kernel would restart the read. */
static void wait_go(void)
{
    char b[64];
    for (;;) {
        ssize_t r = read(0, b, sizeof b);
        if (r >= 0)
            return;
        if (errno == EINTR) {
            fail("read(0) returned EINTR");
            continue;
        }
        fail("read(0): %s", strerror(errno));
        return;
    }
}

#define PAGE 4096u
#define WORDS_PER_PAGE (PAGE / 8)
#define NSMALL 2000

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static size_t small_size(size_t i) { return (i * 37) % 1000 + 1; }
static unsigned char small_byte(size_t i, size_t gen)
{
    return (unsigned char)(i * 131 + gen * 71 + 1);
}

static void fill_small(unsigned char **v, size_t gen)
{
    for (size_t i = 0; i < NSMALL; i++) {
        v[i] = malloc(small_size(i));
        if (v[i] == NULL) {
            fail("malloc(%zu) failed (generation %zu)", small_size(i), gen);
            return;
        }
        memset(v[i], small_byte(i, gen), small_size(i));
    }
}

static void check_small(unsigned char **v, size_t gen, int skip_freed)
{
    for (size_t i = 0; i < NSMALL; i++) {
        if (skip_freed && i % 3 == 0)
            continue;
        if (v[i] == NULL)
            continue;
        for (size_t j = 0; j < small_size(i); j++)
            if (v[i][j] != small_byte(i, gen)) {
                fail("small block %zu (generation %zu) byte %zu = %#x, "
                     "expected %#x",
                     i, gen, j, v[i][j], small_byte(i, gen));
                return;
            }
    }
}

int main(int argc, char **argv)
{
    size_t mib = 100;
    if (argc > 1) {
        char *end;
        unsigned long v = strtoul(argv[1], &end, 10);
        if (*end != '\0') {
            fprintf(stderr, "usage: heap [MiB]\n");
            return 2;
        }
        mib = v;
    }
    size_t npages = mib * (1024 * 1024 / PAGE);

    /* calloc of a large block is a fresh mmap, known zero, not touched. */
    unsigned char *raw = calloc(npages + 1, PAGE);
    if (raw == NULL) {
        fprintf(stderr, "calloc(%zu MiB) failed\n", mib);
        return 2;
    }
    uint64_t *big =
        (uint64_t *)(((uintptr_t)raw + PAGE - 1) & ~(uintptr_t)(PAGE - 1));
    for (size_t p = 0; p < npages; p++) {
        if (p % 7 == 6)
            continue;
        uint64_t *w = big + p * WORDS_PER_PAGE;
        for (size_t j = 0; j < WORDS_PER_PAGE; j++)
            w[j] = mix(p * WORDS_PER_PAGE + j);
    }

    static unsigned char *small[NSMALL];
    fill_small(small, 0);
    for (size_t i = 0; i < NSMALL; i += 3) {
        free(small[i]);
        small[i] = NULL;
    }
    void *brk0 = sbrk(0);

    put("READY\n");
    wait_go();

    /* The break first, before anything may malloc. */
    void *brk1 = sbrk(0);
    if (brk1 != brk0)
        fail("sbrk(0) = %p, expected %p", brk1, brk0);
    else {
        unsigned char *p = sbrk(1 << 20);
        if (p == (void *)-1)
            fail("sbrk(+1 MiB) failed: %s", strerror(errno));
        else {
            if ((void *)p != brk0)
                fail("sbrk(+1 MiB) returned %p, expected %p", (void *)p, brk0);
            memset(p, 0xa5, 1 << 20);
            for (size_t i = 0; i < (1u << 20); i += 4093)
                if (p[i] != 0xa5) {
                    fail("memory from sbrk not writable at +%zu", i);
                    break;
                }
            if (sbrk(-(1 << 20)) == (void *)-1)
                fail("sbrk(-1 MiB) failed: %s", strerror(errno));
            else if (sbrk(0) != brk0)
                fail("break %p after shrinking, expected %p", sbrk(0), brk0);
        }
    }

    size_t bad = 0, first_bad = 0;
    for (size_t p = 0; p < npages; p++) {
        const uint64_t *w = big + p * WORDS_PER_PAGE;
        for (size_t j = 0; j < WORDS_PER_PAGE; j++) {
            uint64_t want = p % 7 == 6 ? 0 : mix(p * WORDS_PER_PAGE + j);
            if (w[j] != want) {
                if (bad == 0)
                    first_bad = p;
                bad++;
                break;
            }
        }
    }
    if (bad > 0)
        fail("%zu of %zu pages of the %zu MiB block differ, first page %zu "
             "(%s)",
             bad, npages, mib, first_bad,
             first_bad % 7 == 6 ? "a zero page" : "a pattern page");

    check_small(small, 0, 1);
    for (size_t i = 0; i < NSMALL; i++)
        free(small[i]);
    fill_small(small, 1);
    check_small(small, 1, 0);
    for (size_t i = 0; i < NSMALL; i++)
        free(small[i]);

    size_t blen = 32u << 20;
    unsigned char *b = malloc(blen);
    if (b == NULL)
        fail("malloc(32 MiB) after restore failed");
    else {
        memset(b, 0x5a, blen);
        if (b[0] != 0x5a || b[blen - 1] != 0x5a)
            fail("32 MiB block not writable");
        free(b);
    }
    free(raw);
    return finish();
}
