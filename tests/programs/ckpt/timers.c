/*
 * timers.c - checkpoint/restore test: interval timers.
 *
 * Protocol (as every program in this directory): set up state, print
 * "READY\n", block in read(0), then print "PASS\n" (exit 0) or
 * "FAIL: <what differs>\n" (exit 1).  Works without a checkpoint too:
 * `echo go | ./timers` (takes up to 5 s: it waits for SIGALRM).
 *
 * State: ITIMER_REAL 5 s, interval 5 s (SIGALRM handler, SA_RESTART, so
 * the read(0) is restarted each time it fires while blocked);
 * ITIMER_VIRTUAL 30 s, interval 20 s (SIGVTALRM handler; the process uses
 * next to no CPU, so it never fires here).  Both are read back with
 * getitimer just before READY.
 * After restore: ITIMER_REAL's interval is unchanged and its value is
 * nonzero and at most the interval (it keeps running, and reloading, in
 * real time, so the only bound that holds however long the checkpoint
 * lasted is the interval); ITIMER_VIRTUAL's interval is unchanged and its
 * value nonzero and at most the recorded one (it runs on CPU time only);
 * then SIGALRM must be delivered within 7 s of the read returning (waited
 * for in 100 ms nanosleeps).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
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
 * reported: the only handlers that may run meanwhile have SA_RESTART. */
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

static void die(const char *what)
{
    fprintf(stderr, "timers: %s: %s\n", what, strerror(errno));
    exit(2);
}

static volatile sig_atomic_t alarms, vtalarms;
static void on_alrm(int sig) { (void)sig; alarms++; }
static void on_vtalrm(int sig) { (void)sig; vtalarms++; }

static int64_t us(struct timeval tv)
{
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sa.sa_handler = on_alrm;
    if (sigaction(SIGALRM, &sa, NULL) != 0)
        die("sigaction");
    sa.sa_handler = on_vtalrm;
    if (sigaction(SIGVTALRM, &sa, NULL) != 0)
        die("sigaction");

    struct itimerval real = {{5, 0}, {5, 0}}, virt = {{20, 0}, {30, 0}};
    if (setitimer(ITIMER_REAL, &real, NULL) != 0)
        die("setitimer ITIMER_REAL");
    if (setitimer(ITIMER_VIRTUAL, &virt, NULL) != 0)
        die("setitimer ITIMER_VIRTUAL");
    struct itimerval real0, virt0;
    getitimer(ITIMER_REAL, &real0);
    getitimer(ITIMER_VIRTUAL, &virt0);

    put("READY\n");
    wait_go();
    double t_go = now_s();

    struct itimerval real1, virt1;
    if (getitimer(ITIMER_REAL, &real1) != 0)
        fail("getitimer ITIMER_REAL: %s", strerror(errno));
    else {
        if (us(real1.it_interval) != us(real0.it_interval))
            fail("ITIMER_REAL interval %lld us, expected %lld us",
                 (long long)us(real1.it_interval),
                 (long long)us(real0.it_interval));
        if (us(real1.it_value) <= 0 ||
            us(real1.it_value) > us(real0.it_interval))
            fail("ITIMER_REAL value %lld us, expected in (0, %lld] us",
                 (long long)us(real1.it_value),
                 (long long)us(real0.it_interval));
    }
    if (getitimer(ITIMER_VIRTUAL, &virt1) != 0)
        fail("getitimer ITIMER_VIRTUAL: %s", strerror(errno));
    else {
        if (us(virt1.it_interval) != us(virt0.it_interval))
            fail("ITIMER_VIRTUAL interval %lld us, expected %lld us",
                 (long long)us(virt1.it_interval),
                 (long long)us(virt0.it_interval));
        if (us(virt1.it_value) <= 0 ||
            us(virt1.it_value) > us(virt0.it_value))
            fail("ITIMER_VIRTUAL value %lld us, expected in (0, %lld] us",
                 (long long)us(virt1.it_value),
                 (long long)us(virt0.it_value));
    }
    if (vtalarms != 0)
        fail("SIGVTALRM fired %d times (no CPU time was used)",
             (int)vtalarms);

    sig_atomic_t a0 = alarms;
    while (alarms == a0 && now_s() - t_go < 7.0) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (alarms == a0)
        fail("no SIGALRM within 7 s after the read returned");

    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    setitimer(ITIMER_VIRTUAL, &off, NULL);
    return finish();
}
