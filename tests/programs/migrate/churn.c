/*
 * churn.c - a process that keeps changing its layout, for post-copy
 * tests: a heap of N MiB (argv[1]) whose page p holds p in its first word,
 * and a loop that, until a line comes on stdin,
 *   - forks a child that checks pages of the heap and exits 0 or 1;
 *   - empties a 1 MiB window (madvise DONTNEED), checks that it reads
 *     zeros, and fills it again;
 *   - moves a 2 MiB window elsewhere (mremap), checks it there, and moves
 *     it back;
 *   - checks pages here and there.
 * On the line it checks every page and prints "PASS <loops> <forks>
 * <lost>" (lost: children forked just before a move, left behind) and
 * exits 0, or "FAIL ..." and exits 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096
#define WORDS (PAGE / 8)

static uint64_t *heap;
static size_t pages;

static void fail(const char *what, size_t p, uint64_t got)
{
    printf("FAIL %s: page %zu holds %llu\n", what, p, (unsigned long long)got);
    fflush(stdout);
    exit(1);
}

static void fill(size_t first, size_t n)
{
    for (size_t p = first; p < first + n; p++)
        heap[p * WORDS] = p;
}

static void check(uint64_t *at, size_t first, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++)
        if (at[i * WORDS] != first + i)
            fail(what, first + i, at[i * WORDS]);
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoul(argv[1], 0, 10) : 48;
    pages = mib * 256;
    heap = mmap(0, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (heap == MAP_FAILED)
        return 2;
    fill(0, pages);
    printf("READY\n");
    fflush(stdout);
    size_t win = 256, big = 512;
    unsigned long loops = 0, forks = 0, lost = 0;
    uint64_t seed = 1;
    for (;;) {
        struct pollfd pfd = { .fd = 0, .events = POLLIN };
        if (poll(&pfd, 1, 0) > 0)
            break;
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        size_t at = (seed >> 33) % (pages - big);
        /* A child sees the heap as it was at the fork. */
        pid_t c = fork();
        if (c == 0) {
            for (size_t i = 0; i < 64; i++) {
                size_t p = (at + i * 97) % pages;
                if (heap[p * WORDS] != p)
                    _exit(1);
            }
            _exit(0);
        }
        int st = 0;
        if (c < 0)
            return 7;
        if (waitpid(c, &st, 0) != c) {
            /* Forked just before a move: the child stayed behind. */
            if (errno != ECHILD)
                return 8;
            lost++;
        } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fail("a child's check", at, (uint64_t)st);
        } else {
            forks++;
        }
        /* Emptied: zeros, then filled again. */
        uint64_t *w = heap + at * WORDS;
        if (madvise(w, win * PAGE, MADV_DONTNEED) != 0)
            return 3;
        for (size_t i = 0; i < win; i++)
            if (w[i * WORDS] != 0)
                fail("an emptied page", at + i, w[i * WORDS]);
        fill(at, win);
        /* Moved away and back. */
        void *spare = mmap(0, big * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (spare == MAP_FAILED)
            return 4;
        uint64_t *moved = mremap(w, big * PAGE, big * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, spare);
        if (moved == MAP_FAILED)
            return 5;
        check(moved, at, big, "a moved page");
        if (mremap(moved, big * PAGE, big * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, w) == MAP_FAILED)
            return 6;
        check(w, at, big, "a page moved back");
        loops++;
        usleep(2000);
    }
    check(heap, 0, pages, "the final check");
    printf("PASS %lu %lu %lu\n", loops, forks, lost);
    return 0;
}
