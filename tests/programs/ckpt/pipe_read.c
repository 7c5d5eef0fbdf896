/*
 * pipe_read.c - checkpoint/restore test: unread data in an internal pipe.
 *
 * Protocol (as every program in this directory): set up state, print
 * "READY\n", block in read(0), then print "PASS\n" (exit 0) or
 * "FAIL: <what differs>\n" (exit 1).  Works without a checkpoint too:
 * `echo go | ./pipe_read`.
 *
 * State: a pipe (both ends held by this process) with "hello" unread in
 * it; the read end is O_NONBLOCK so a lost pipe content fails instead of
 * hanging.  After restore: a read gives exactly "hello", the next one
 * EAGAIN, and "world" written to the write end comes out of the read end.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
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

int main(void)
{
    int p[2];
    if (pipe(p) != 0 || fcntl(p[0], F_SETFL, O_NONBLOCK) != 0 ||
        write(p[1], "hello", 5) != 5) {
        fprintf(stderr, "pipe_read: setup: %s\n", strerror(errno));
        return 2;
    }
    put("READY\n");
    wait_go();

    char buf[64];
    ssize_t n = read(p[0], buf, sizeof buf);
    if (n != 5 || memcmp(buf, "hello", 5) != 0)
        fail("pipe: read gave %zd bytes '%.*s', expected 'hello'", n,
             n > 0 ? (int)n : 0, buf);
    n = read(p[0], buf, sizeof buf);
    if (n != -1 || errno != EAGAIN)
        fail("pipe: second read returned %zd (%s), expected EAGAIN", n,
             n < 0 ? strerror(errno) : "data");
    if (write(p[1], "world", 5) != 5)
        fail("pipe: write after restore: %s", strerror(errno));
    else {
        n = read(p[0], buf, sizeof buf);
        if (n != 5 || memcmp(buf, "world", 5) != 0)
            fail("pipe: the write end is not connected to the read end");
    }
    return finish();
}
