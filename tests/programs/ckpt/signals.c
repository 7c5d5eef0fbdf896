/*
 * signals.c - checkpoint/restore test: signal dispositions, masks, pending
 * signals and the alternate signal stack.
 *
 * Protocol (as every program in this directory): set up state, print
 * "READY\n", block in read(0), then print "PASS\n" (exit 0) or
 * "FAIL: <what differs>\n" (exit 1).  Works without a checkpoint too:
 * `echo go | ./signals`.
 *
 * State:
 *   SIGUSR1  sa_sigaction handler, SA_SIGINFO|SA_RESTART, sa_mask {USR2}
 *   SIGUSR2  plain handler, SA_NODEFER
 *   SIGPIPE  SIG_IGN
 *   SIGSEGV  handler with SA_ONSTACK, on a 64 KiB sigaltstack
 *   SIGTERM  blocked, pending process-wide (kill(getpid()))
 *   SIGHUP   blocked, pending on the main thread (pthread_kill(self))
 * After restore: sigaction of every signal 1..64 (handler, flags, mask,
 * restorer) equals what it was before READY; the specific settings above;
 * sigaltstack unchanged; the blocked mask unchanged; sigpending has TERM
 * and HUP; a new thread (inheriting the mask) sees TERM pending but not
 * HUP (thread-directed pending signals stay on their thread); raising
 * USR1 runs its handler with si_signo USR1, si_code SI_TKILL, USR1 and USR2
 * blocked inside; raising USR2 runs its handler with USR2 not blocked
 * inside (SA_NODEFER); raising SEGV runs its handler on the alternate
 * stack; a write to a pipe without reader fails with EPIPE (no death).
 * Nothing is unblocked: TERM and HUP stay pending at exit.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
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
 * reported: no signal is delivered while waiting (the pending ones are
 * blocked), so the read has no reason to be interrupted. */
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
    fprintf(stderr, "signals: %s: %s\n", what, strerror(errno));
    exit(2);
}

#define MAXSIG 64
#define ALTSTACK_SIZE (64 * 1024)
static unsigned char altstack[ALTSTACK_SIZE] __attribute__((aligned(16)));

static volatile sig_atomic_t usr1_ran, usr1_signo, usr1_code, usr1_mask_ok;
static volatile sig_atomic_t usr2_ran, usr2_self_blocked;
static volatile sig_atomic_t segv_ran, segv_on_altstack;

static void on_usr1(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    sigset_t cur;
    sigprocmask(SIG_BLOCK, NULL, &cur);
    usr1_signo = si->si_signo;
    usr1_code = si->si_code;
    usr1_mask_ok = sigismember(&cur, SIGUSR1) == 1 &&
                   sigismember(&cur, SIGUSR2) == 1;
    usr1_ran = 1;
}

static void on_usr2(int sig)
{
    (void)sig;
    sigset_t cur;
    sigprocmask(SIG_BLOCK, NULL, &cur);
    usr2_self_blocked = sigismember(&cur, SIGUSR2) == 1;
    usr2_ran = 1;
}

static void on_segv(int sig)
{
    (void)sig;
    volatile unsigned char here = 0;
    uintptr_t a = (uintptr_t)&here;
    segv_on_altstack = a >= (uintptr_t)altstack &&
                       a < (uintptr_t)altstack + ALTSTACK_SIZE;
    segv_ran = 1;
}

static int same_mask(const sigset_t *a, const sigset_t *b)
{
    for (int s = 1; s <= MAXSIG; s++)
        if (sigismember(a, s) != sigismember(b, s))
            return 0;
    return 1;
}

static void mask_str(const sigset_t *m, char *out, size_t len)
{
    size_t k = 0;
    out[0] = '\0';
    for (int s = 1; s <= MAXSIG && k + 4 < len; s++)
        if (sigismember(m, s) == 1)
            k += (size_t)snprintf(out + k, len - k, "%s%d", k ? "," : "", s);
}

static void xsigaction(int sig, void (*h)(int), void (*sa3)(int, siginfo_t *,
                                                             void *),
                       int flags, int masksig)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    if (sa3 != NULL)
        sa.sa_sigaction = sa3;
    else
        sa.sa_handler = h;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    if (masksig)
        sigaddset(&sa.sa_mask, masksig);
    if (sigaction(sig, &sa, NULL) != 0)
        die("sigaction");
}

static volatile sig_atomic_t thr_term, thr_hup;

static void *pending_thread(void *arg)
{
    (void)arg;
    sigset_t p;
    sigpending(&p);
    thr_term = sigismember(&p, SIGTERM) == 1;
    thr_hup = sigismember(&p, SIGHUP) == 1;
    return NULL;
}

int main(void)
{
    xsigaction(SIGUSR1, NULL, on_usr1, SA_SIGINFO | SA_RESTART, SIGUSR2);
    xsigaction(SIGUSR2, on_usr2, NULL, SA_NODEFER, 0);
    xsigaction(SIGPIPE, SIG_IGN, NULL, 0, 0);
    stack_t ss = {.ss_sp = altstack, .ss_size = ALTSTACK_SIZE, .ss_flags = 0};
    if (sigaltstack(&ss, NULL) != 0)
        die("sigaltstack");
    xsigaction(SIGSEGV, on_segv, NULL, SA_ONSTACK, 0);

    sigset_t blk;
    sigemptyset(&blk);
    sigaddset(&blk, SIGTERM);
    sigaddset(&blk, SIGHUP);
    if (sigprocmask(SIG_BLOCK, &blk, NULL) != 0)
        die("sigprocmask");
    if (kill(getpid(), SIGTERM) != 0)
        die("kill");
    if (pthread_kill(pthread_self(), SIGHUP) != 0)
        die("pthread_kill");

    /* Record everything as the kernel reports it. */
    static struct sigaction before[MAXSIG + 1];
    static int have[MAXSIG + 1];
    for (int s = 1; s <= MAXSIG; s++)
        have[s] = sigaction(s, NULL, &before[s]) == 0;
    stack_t ss0;
    sigaltstack(NULL, &ss0);
    sigset_t mask0;
    sigprocmask(SIG_BLOCK, NULL, &mask0);

    put("READY\n");
    wait_go();

    for (int s = 1; s <= MAXSIG; s++) {
        struct sigaction now;
        int ok = sigaction(s, NULL, &now) == 0;
        if (ok != have[s]) {
            fail("sigaction(%d) query %s after restore", s,
                 ok ? "succeeds" : "fails");
            continue;
        }
        if (!ok)
            continue;
        const struct sigaction *b = &before[s];
        if (now.sa_handler != b->sa_handler)
            fail("signal %d: handler %p, expected %p", s,
                 (void *)(uintptr_t)now.sa_handler,
                 (void *)(uintptr_t)b->sa_handler);
        if (now.sa_flags != b->sa_flags)
            fail("signal %d: sa_flags %#x, expected %#x", s,
                 (unsigned)now.sa_flags, (unsigned)b->sa_flags);
        if (!same_mask(&now.sa_mask, &b->sa_mask)) {
            char m1[256], m2[256];
            mask_str(&now.sa_mask, m1, sizeof m1);
            mask_str(&b->sa_mask, m2, sizeof m2);
            fail("signal %d: sa_mask {%s}, expected {%s}", s, m1, m2);
        }
        if (now.sa_restorer != b->sa_restorer)
            fail("signal %d: sa_restorer %p, expected %p", s,
                 (void *)(uintptr_t)now.sa_restorer,
                 (void *)(uintptr_t)b->sa_restorer);
    }

    /* The specific settings, independent of the recorded ones. */
    struct sigaction sa;
    sigaction(SIGUSR1, NULL, &sa);
    if (sa.sa_sigaction != on_usr1 ||
        (sa.sa_flags & (SA_SIGINFO | SA_RESTART)) !=
            (SA_SIGINFO | SA_RESTART) ||
        sigismember(&sa.sa_mask, SIGUSR2) != 1)
        fail("SIGUSR1 disposition not as set (flags %#x)",
             (unsigned)sa.sa_flags);
    sigaction(SIGUSR2, NULL, &sa);
    if (sa.sa_handler != on_usr2 || !(sa.sa_flags & SA_NODEFER) ||
        (sa.sa_flags & SA_SIGINFO))
        fail("SIGUSR2 disposition not as set (flags %#x)",
             (unsigned)sa.sa_flags);
    sigaction(SIGPIPE, NULL, &sa);
    if (sa.sa_handler != SIG_IGN)
        fail("SIGPIPE not ignored");
    sigaction(SIGSEGV, NULL, &sa);
    if (sa.sa_handler != on_segv || !(sa.sa_flags & SA_ONSTACK))
        fail("SIGSEGV disposition not as set (flags %#x)",
             (unsigned)sa.sa_flags);

    stack_t ss1;
    if (sigaltstack(NULL, &ss1) != 0)
        fail("sigaltstack query: %s", strerror(errno));
    else if (ss1.ss_sp != ss0.ss_sp || ss1.ss_size != ss0.ss_size ||
             ss1.ss_flags != ss0.ss_flags || ss1.ss_sp != (void *)altstack)
        fail("sigaltstack sp %p size %zu flags %#x, expected %p %zu %#x",
             ss1.ss_sp, ss1.ss_size, (unsigned)ss1.ss_flags, ss0.ss_sp,
             ss0.ss_size, (unsigned)ss0.ss_flags);

    sigset_t mask1;
    sigprocmask(SIG_BLOCK, NULL, &mask1);
    if (!same_mask(&mask1, &mask0)) {
        char m1[256], m2[256];
        mask_str(&mask1, m1, sizeof m1);
        mask_str(&mask0, m2, sizeof m2);
        fail("blocked mask {%s}, expected {%s}", m1, m2);
    }

    sigset_t pend;
    sigpending(&pend);
    if (sigismember(&pend, SIGTERM) != 1)
        fail("SIGTERM (process-wide) no longer pending");
    if (sigismember(&pend, SIGHUP) != 1)
        fail("SIGHUP (thread-directed) no longer pending");
    for (int s = 1; s <= MAXSIG; s++)
        if (s != SIGTERM && s != SIGHUP && sigismember(&pend, s) == 1)
            fail("signal %d pending, unexpectedly", s);

    pthread_t t;
    if (pthread_create(&t, NULL, pending_thread, NULL) != 0)
        fail("pthread_create failed");
    else {
        pthread_join(t, NULL);
        if (!thr_term)
            fail("another thread does not see SIGTERM pending process-wide");
        if (thr_hup)
            fail("another thread sees SIGHUP pending: it is pending "
                 "process-wide, not on the main thread");
    }

    raise(SIGUSR1);
    if (!usr1_ran)
        fail("SIGUSR1 handler did not run");
    else {
        if (usr1_signo != SIGUSR1 || usr1_code != SI_TKILL)
            fail("SIGUSR1 siginfo: si_signo %d, si_code %d, expected %d, %d",
                 (int)usr1_signo, (int)usr1_code, SIGUSR1, SI_TKILL);
        if (!usr1_mask_ok)
            fail("SIGUSR1 handler ran without USR1 and USR2 blocked");
    }
    raise(SIGUSR2);
    if (!usr2_ran)
        fail("SIGUSR2 handler did not run");
    else if (usr2_self_blocked)
        fail("SIGUSR2 blocked inside its handler despite SA_NODEFER");
    raise(SIGSEGV);
    if (!segv_ran)
        fail("SIGSEGV handler did not run");
    else if (!segv_on_altstack)
        fail("SIGSEGV handler did not run on the alternate stack");

    int pfd[2];
    if (pipe(pfd) != 0)
        fail("pipe: %s", strerror(errno));
    else {
        close(pfd[0]);
        ssize_t n = write(pfd[1], "x", 1);
        if (n != -1 || errno != EPIPE)
            fail("write to a pipe without reader returned %zd, expected "
                 "EPIPE", n);
        close(pfd[1]);
    }

    sigpending(&pend);
    if (sigismember(&pend, SIGTERM) != 1 || sigismember(&pend, SIGHUP) != 1)
        fail("SIGTERM/SIGHUP not pending at the end");
    return finish();
}
