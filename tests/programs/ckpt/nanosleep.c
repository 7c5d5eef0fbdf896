/*
 * nanosleep.c - checkpoint/restore test: a checkpoint during nanosleep(2).
 *
 * Protocol: as sleep.c - the checkpoint happens while this one is in
 * nanosleep, not in read(0): it records CLOCK_MONOTONIC, prints "READY\n"
 * and calls nanosleep(3.5 s, &rem) at once.  When nanosleep returns it
 * checks the return value is 0 (not interrupted: no handler is installed,
 * so the kernel restarts it transparently) and that at least 3.5 s of
 * CLOCK_MONOTONIC elapsed; then it blocks in read(0) and, when that
 * returns (the harness writes "go\n"), prints "PASS\n" (exit 0) or
 * "FAIL: <what differs>\n" (exit 1).
 * Without a checkpoint: `(sleep 5; echo go) | ./nanosleep`.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
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

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int main(void)
{
    struct timespec req = {3, 500000000}, rem = {-1, -1};
    int64_t t0 = now_ns();
    put("READY\n");
    int r = nanosleep(&req, &rem);
    int e = errno;
    int64_t dt = now_ns() - t0;
    if (r != 0)
        fail("nanosleep returned %d (%s), rem %lld.%09ld s", r, strerror(e),
             (long long)rem.tv_sec, rem.tv_nsec);
    if (dt < 3500000000LL)
        fail("only %lld.%03lld s of CLOCK_MONOTONIC elapsed during "
             "nanosleep(3.5 s)",
             (long long)(dt / 1000000000), (long long)(dt / 1000000 % 1000));
    wait_go();
    return finish();
}
