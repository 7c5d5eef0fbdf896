/*
 * threads.c - checkpoint/restore test: a multi-threaded process.
 *
 * Protocol (as every program in this directory): set up state, print
 * "READY\n", block in read(0), then print "PASS\n" (exit 0) or
 * "FAIL: <what differs>\n" (exit 1).  Works without a checkpoint too:
 * `echo go | ./threads`.
 *
 * State: 4 threads besides main, each with its own value in a
 * _Thread_local variable and a 64-word pattern in a local array on its
 * stack.  Threads 0 and 1 wait on a condition variable (blocked in a futex
 * wait); threads 2 and 3 spin incrementing their own atomic counter.  Main
 * waits until both waiters are inside pthread_cond_wait and both counters
 * have moved, records the counters, prints READY and blocks in read(0).
 * After restore: main checks its own TLS; the counters are at least the
 * recorded ones and still advance (spinners run); then main sets the stop
 * flag and broadcasts the condvar; every thread checks its TLS value and
 * address, pthread_self() and its stack pattern, and returns a verdict;
 * all four must be joined within 10 s (pthread_timedjoin_np).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
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

/* Main thread only. */
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

#define NTHR 4
#define NWAIT 2 /* threads 0..NWAIT-1 wait on the condvar, the rest spin */
#define NWORDS 64

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static uint64_t tls_value(int i) { return 0x7100000000000000ULL + mix(i); }

static _Thread_local uint64_t tls;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int waiting; /* under mu */
static int go;      /* under mu */
static atomic_int stop;
static atomic_ullong counter[NTHR];

struct thr {
    int idx;
    pthread_t self; /* as pthread_create returned it */
    char verdict[256];
};
static struct thr thr[NTHR];

static void *run(void *arg)
{
    struct thr *t = arg;
    volatile uint64_t stackpat[NWORDS];
    for (int j = 0; j < NWORDS; j++)
        stackpat[j] = mix(((uint64_t)t->idx << 32) + (uint64_t)j);
    tls = tls_value(t->idx);
    uint64_t *tls_addr = &tls;

    if (t->idx < NWAIT) {
        pthread_mutex_lock(&mu);
        waiting++;
        while (!go)
            pthread_cond_wait(&cv, &mu);
        pthread_mutex_unlock(&mu);
    } else {
        while (!atomic_load(&stop))
            atomic_fetch_add(&counter[t->idx], 1);
    }

    if (&tls != tls_addr)
        snprintf(t->verdict, sizeof t->verdict,
                 "thread %d: TLS address %p, expected %p", t->idx,
                 (void *)&tls, (void *)tls_addr);
    else if (tls != tls_value(t->idx))
        snprintf(t->verdict, sizeof t->verdict,
                 "thread %d: TLS value %#llx, expected %#llx", t->idx,
                 (unsigned long long)tls,
                 (unsigned long long)tls_value(t->idx));
    else if (!pthread_equal(pthread_self(), t->self))
        snprintf(t->verdict, sizeof t->verdict,
                 "thread %d: pthread_self() %#lx, expected %#lx", t->idx,
                 (unsigned long)pthread_self(), (unsigned long)t->self);
    else
        for (int j = 0; j < NWORDS; j++)
            if (stackpat[j] != mix(((uint64_t)t->idx << 32) + (uint64_t)j)) {
                snprintf(t->verdict, sizeof t->verdict,
                         "thread %d: stack word %d differs", t->idx, j);
                break;
            }
    return t;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int main(void)
{
    tls = 0x3a1115eedULL;
    for (int i = 0; i < NTHR; i++) {
        thr[i].idx = i;
        /* t->self is written before the thread reads it: the thread only
         * looks at it after the go broadcast / stop flag. */
        int e = pthread_create(&thr[i].self, NULL, run, &thr[i]);
        if (e != 0) {
            fprintf(stderr, "threads: pthread_create: %s\n", strerror(e));
            return 2;
        }
    }
    /* Wait until both waiters are in pthread_cond_wait (they released mu
     * there after incrementing waiting) and both spinners are spinning. */
    for (;;) {
        pthread_mutex_lock(&mu);
        int w = waiting;
        pthread_mutex_unlock(&mu);
        int spinning = 1;
        for (int i = NWAIT; i < NTHR; i++)
            if (atomic_load(&counter[i]) == 0)
                spinning = 0;
        if (w == NWAIT && spinning)
            break;
        sleep_ms(1);
    }
    unsigned long long c0[NTHR];
    for (int i = NWAIT; i < NTHR; i++)
        c0[i] = atomic_load(&counter[i]);

    put("READY\n");
    wait_go();

    if (tls != 0x3a1115eedULL)
        fail("main thread: TLS value %#llx", (unsigned long long)tls);

    for (int i = NWAIT; i < NTHR; i++) {
        unsigned long long c1 = atomic_load(&counter[i]);
        if (c1 < c0[i])
            fail("thread %d: counter %llu went back from %llu", i, c1, c0[i]);
        double t0 = now_s();
        while (atomic_load(&counter[i]) == c1 && now_s() - t0 < 5.0)
            sleep_ms(1);
        if (atomic_load(&counter[i]) == c1)
            fail("thread %d: counter stuck at %llu for 5 s after restore", i,
                 c1);
    }

    atomic_store(&stop, 1);
    pthread_mutex_lock(&mu);
    go = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);

    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    for (int i = 0; i < NTHR; i++) {
        void *ret = NULL;
        int e = pthread_timedjoin_np(thr[i].self, &ret, &deadline);
        if (e != 0)
            fail("thread %d (%s): pthread_timedjoin_np: %s", i,
                 i < NWAIT ? "condvar waiter" : "spinner", strerror(e));
        else if (ret != &thr[i])
            fail("thread %d returned %p, expected %p", i, ret,
                 (void *)&thr[i]);
        else if (thr[i].verdict[0] != '\0')
            fail("%s", thr[i].verdict);
    }
    if (faillen != 0) {
        /* Threads may still be running: do not wait for them at exit. */
        int r = finish();
        _exit(r);
    }
    return finish();
}
