/*
 * sigtest.c - reports the signals it receives, or dies or exits on demand.
 *
 * Test program for roam: checks that signals sent to a remote run reach the
 * program (under qemu-user on a foreign node too), and that its way of
 * ending (exit code, or death by a signal) is reported faithfully.
 *
 * Usage:
 *   sigtest               handles SIGINT, SIGTERM, SIGUSR1, SIGHUP and
 *                         SIGWINCH; prints "ready", then "got <NAME>" for
 *                         each signal received, in order (NAME without the
 *                         SIG prefix: INT, TERM, USR1, HUP, WINCH), each
 *                         line flushed at once; exits 0 after SIGTERM.
 *   sigtest selfkill SIG  restores SIG's default disposition, unblocks it and
 *                         raises it, so the process is killed by SIG (for a
 *                         signal whose default action kills).  SIG is a name
 *                         with or without the SIG prefix (SEGV, SIGSEGV) or a
 *                         number.  The core file size limit is set to 0
 *                         first, so no core file is written (qemu-user honours
 *                         it too).  Exits 125 if the signal did not kill it.
 *   sigtest exit N        exits with status N (0..255) at once.
 * Bad usage exits 2 with a message on stderr.
 *
 * Signals are blocked except inside sigsuspend(); the handlers only record
 * the signal number, and the main loop prints, so output is async-signal-safe
 * and in arrival order.  Plain C99 plus POSIX; portable across word size and
 * byte order.
 */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* SIGWINCH */

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>

struct signame {
    const char *name;
    int sig;
};

static const struct signame NAMES[] = {
    {"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"ILL", SIGILL},
    {"TRAP", SIGTRAP}, {"ABRT", SIGABRT}, {"BUS", SIGBUS},   {"FPE", SIGFPE},
    {"KILL", SIGKILL}, {"USR1", SIGUSR1}, {"SEGV", SIGSEGV}, {"USR2", SIGUSR2},
    {"PIPE", SIGPIPE}, {"ALRM", SIGALRM}, {"TERM", SIGTERM}, {"CHLD", SIGCHLD},
    {"CONT", SIGCONT}, {"STOP", SIGSTOP}, {"TSTP", SIGTSTP}, {"TTIN", SIGTTIN},
    {"TTOU", SIGTTOU}, {"URG", SIGURG},   {"XCPU", SIGXCPU}, {"XFSZ", SIGXFSZ},
    {"VTALRM", SIGVTALRM}, {"PROF", SIGPROF}, {"WINCH", SIGWINCH},
    {"SYS", SIGSYS},
};
#define NNAMES (sizeof NAMES / sizeof NAMES[0])

static const int HANDLED[] = {SIGINT, SIGTERM, SIGUSR1, SIGHUP, SIGWINCH};
#define NHANDLED (sizeof HANDLED / sizeof HANDLED[0])

/* Written by the handlers only (which never nest: each blocks all of
 * HANDLED), read by main only while HANDLED are blocked. */
#define RING 64
static volatile sig_atomic_t ring[RING];
static volatile sig_atomic_t ring_head;

static void record(int sig)
{
    ring[ring_head % RING] = sig;
    ring_head = ring_head + 1;
}

static const char *name_of(int sig)
{
    for (size_t i = 0; i < NNAMES; i++)
        if (NAMES[i].sig == sig)
            return NAMES[i].name;
    return "?";
}

static int parse_signal(const char *s)
{
    char *end;
    long n = strtol(s, &end, 10);
    if (*s != '\0' && *end == '\0')
        return n > 0 && n < 65 ? (int)n : -1;
    if (strncasecmp(s, "SIG", 3) == 0)
        s += 3;
    for (size_t i = 0; i < NNAMES; i++)
        if (strcasecmp(s, NAMES[i].name) == 0)
            return NAMES[i].sig;
    return -1;
}

static int usage(void)
{
    fprintf(stderr, "usage: sigtest | sigtest selfkill SIG | sigtest exit N\n");
    return 2;
}

static int selfkill(int sig)
{
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    signal(sig, SIG_DFL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    fflush(stdout);
    raise(sig);
    fprintf(stderr, "sigtest: still alive after raising SIG%s\n", name_of(sig));
    return 125;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "selfkill") == 0) {
        int sig = parse_signal(argv[2]);
        if (sig < 0)
            return usage();
        return selfkill(sig);
    }
    if (argc == 3 && strcmp(argv[1], "exit") == 0) {
        char *end;
        long n = strtol(argv[2], &end, 10);
        if (*argv[2] == '\0' || *end != '\0' || n < 0 || n > 255)
            return usage();
        exit((int)n);
    }
    if (argc != 1)
        return usage();

    sigset_t handled, old;
    sigemptyset(&handled);
    for (size_t i = 0; i < NHANDLED; i++)
        sigaddset(&handled, HANDLED[i]);
    sigprocmask(SIG_BLOCK, &handled, &old);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = record;
    sa.sa_mask = handled;
    for (size_t i = 0; i < NHANDLED; i++) {
        if (sigaction(HANDLED[i], &sa, NULL) != 0) {
            perror("sigtest: sigaction");
            return 1;
        }
    }

    /* The mask to wait with: the old one, with HANDLED unblocked. */
    sigset_t waiting = old;
    for (size_t i = 0; i < NHANDLED; i++)
        sigdelset(&waiting, HANDLED[i]);

    printf("ready\n");
    fflush(stdout);

    sig_atomic_t tail = 0;
    for (;;) {
        while (tail != ring_head) {
            int sig = ring[tail % RING];
            tail++;
            printf("got %s\n", name_of(sig));
            fflush(stdout);
            if (sig == SIGTERM)
                return 0;
        }
        sigsuspend(&waiting);
    }
}
