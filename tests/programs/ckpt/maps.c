/*
 * maps.c - checkpoint/restore test: one memory mapping of each kind.
 *
 * Protocol (as every program in this directory): set up state, print
 * "READY\n", block in read(0), then print "PASS\n" (exit 0) or
 * "FAIL: <what differs>\n" (exit 1).  Works without a checkpoint too:
 * `echo go | ./maps`.
 *
 * Mappings (each filled with its own pattern before READY):
 *   anon private    MAP_PRIVATE|MAP_ANONYMOUS, 16 pages
 *   anon shared     MAP_SHARED|MAP_ANONYMOUS, 8 pages
 *   file private    MAP_PRIVATE of an 8-page file; pages 1 and 5 modified,
 *                   page 3 zeroed (copy-on-write: the file keeps the
 *                   original data; a zeroed page must come back zero, not
 *                   as the file's, as a library's first .bss page must)
 *   file shared     MAP_SHARED of a 4-page file, written through the mapping
 *   memfd x2        a memfd (fd closed afterwards) mapped MAP_SHARED at two
 *                   addresses, 4 pages
 *   guard           3 rw pages, the middle one mprotect'ed PROT_NONE
 *   read-only       2 pages filled, then mprotect'ed PROT_READ
 *   SysV shm        shmget(IPC_PRIVATE, 64 KiB), shmat, then IPC_RMID
 * The two files are created in $TMPDIR (or the current directory when
 * TMPDIR is unset) as ckpt-maps-<pid>-{priv,shared}.dat, and removed at the
 * end; they must still be there at restore.
 * After restore: all contents; the file-private pages not modified equal
 * the file, and the file still has the original data for the modified ones
 * (pread); the shared-file writes are in the file (pread), and a new write
 * through the mapping reaches it too; a write through either memfd view is
 * seen through the other; protections per /proc/self/maps (rw-p, rw-s,
 * ---p, r--p) and, with a SIGSEGV handler installed after restore, that
 * the guard page faults on read and the read-only region on write; finally
 * shmdt() of the SysV segment succeeds (it is still a SysV attachment).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
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

static void die(const char *what)
{
    fprintf(stderr, "maps: %s: %s\n", what, strerror(errno));
    exit(2);
}

#define PG 4096u

/* Byte j of page p of region r. */
static unsigned char pat(unsigned r, size_t p, size_t j)
{
    return (unsigned char)(r * 59 + p * 13 + j * 7 + (j >> 8));
}

static void fill(unsigned char *a, unsigned r, size_t p0, size_t np)
{
    for (size_t p = p0; p < p0 + np; p++)
        for (size_t j = 0; j < PG; j++)
            a[p * PG + j] = pat(r, p, j);
}

/* Returns 1 if pages [p0, p0+np) of a hold region r's pattern, else
 * reports (once) and returns 0. */
static int check(const char *name, const unsigned char *a, unsigned r,
                 size_t p0, size_t np)
{
    for (size_t p = p0; p < p0 + np; p++)
        for (size_t j = 0; j < PG; j++)
            if (a[p * PG + j] != pat(r, p, j)) {
                fail("%s: page %zu byte %zu = %#x, expected %#x", name, p, j,
                     a[p * PG + j], pat(r, p, j));
                return 0;
            }
    return 1;
}

static void check_file(const char *name, int fd, unsigned r, size_t p0,
                       size_t np)
{
    static unsigned char buf[PG];
    for (size_t p = p0; p < p0 + np; p++) {
        ssize_t n = pread(fd, buf, PG, (off_t)(p * PG));
        if (n != (ssize_t)PG) {
            fail("%s: pread page %zu returned %zd", name, p, n);
            return;
        }
        for (size_t j = 0; j < PG; j++)
            if (buf[j] != pat(r, p, j)) {
                fail("%s: file page %zu byte %zu = %#x, expected %#x", name, p,
                     j, buf[j], pat(r, p, j));
                return;
            }
    }
}

/* Permissions ("rw-p" etc.) of the mapping containing addr, from
 * /proc/self/maps; "" if none. */
static const char *perms_of(const void *addr)
{
    static char perms[8];
    char line[512];
    uintptr_t a = (uintptr_t)addr;
    perms[0] = '\0';
    FILE *f = fopen("/proc/self/maps", "r");
    if (f == NULL) {
        fail("cannot open /proc/self/maps: %s", strerror(errno));
        return perms;
    }
    while (fgets(line, sizeof line, f) != NULL) {
        unsigned long lo, hi;
        char p[8];
        if (sscanf(line, "%lx-%lx %7s", &lo, &hi, p) == 3 && lo <= a &&
            a < hi) {
            snprintf(perms, sizeof perms, "%s", p);
            break;
        }
    }
    fclose(f);
    return perms;
}

static void check_perms(const char *name, const void *addr, const char *want)
{
    const char *got = perms_of(addr);
    if (strcmp(got, want) != 0)
        fail("%s at %p: /proc/self/maps permissions '%s', expected '%s'", name,
             addr, got, want);
}

static sigjmp_buf probe_env;
static volatile sig_atomic_t probe_sig;

static void probe_handler(int sig)
{
    probe_sig = sig;
    siglongjmp(probe_env, 1);
}

/* Returns the signal an access to p raised, or 0. */
static int probe(volatile unsigned char *p, int do_write)
{
    struct sigaction sa, old_segv, old_bus;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = probe_handler;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &old_segv);
    sigaction(SIGBUS, &sa, &old_bus);
    probe_sig = 0;
    if (sigsetjmp(probe_env, 1) == 0) {
        unsigned char v = *p;
        if (do_write)
            *p = v;
    }
    sigaction(SIGSEGV, &old_segv, NULL);
    sigaction(SIGBUS, &old_bus, NULL);
    return probe_sig;
}

static void *map(size_t len, int prot, int flags, int fd)
{
    void *p = mmap(NULL, len, prot, flags, fd, 0);
    if (p == MAP_FAILED)
        die("mmap");
    return p;
}

static int make_file(const char *path, unsigned r, size_t np)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        die(path);
    static unsigned char buf[PG];
    for (size_t p = 0; p < np; p++) {
        for (size_t j = 0; j < PG; j++)
            buf[j] = pat(r, p, j);
        if (pwrite(fd, buf, PG, (off_t)(p * PG)) != (ssize_t)PG)
            die("pwrite");
    }
    return fd;
}

enum { R_ANON = 1, R_ASHM, R_FPRIV, R_FPRIV_MOD, R_FSHM, R_FSHM_W, R_MEMFD,
       R_GUARD, R_RO, R_SYSV, R_FSHM_W2, R_MEMFD2 };

int main(void)
{
    const int RW = PROT_READ | PROT_WRITE;
    const char *dir = getenv("TMPDIR");
    if (dir == NULL || *dir == '\0')
        dir = ".";
    static char priv_path[4096], shared_path[4096];
    snprintf(priv_path, sizeof priv_path, "%s/ckpt-maps-%d-priv.dat", dir,
             (int)getpid());
    snprintf(shared_path, sizeof shared_path, "%s/ckpt-maps-%d-shared.dat",
             dir, (int)getpid());

    unsigned char *anon = map(16 * PG, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1);
    fill(anon, R_ANON, 0, 16);

    unsigned char *ashm = map(8 * PG, RW, MAP_SHARED | MAP_ANONYMOUS, -1);
    fill(ashm, R_ASHM, 0, 8);

    int fpriv_fd = make_file(priv_path, R_FPRIV, 8);
    unsigned char *fpriv = map(8 * PG, RW, MAP_PRIVATE, fpriv_fd);
    fill(fpriv, R_FPRIV_MOD, 1, 1);
    fill(fpriv, R_FPRIV_MOD, 5, 1);
    memset(fpriv + 3 * PG, 0, PG);

    int fshm_fd = make_file(shared_path, R_FSHM, 4);
    unsigned char *fshm = map(4 * PG, RW, MAP_SHARED, fshm_fd);
    fill(fshm, R_FSHM_W, 0, 4);

    int mfd = memfd_create("ckpt-maps", 0);
    if (mfd < 0)
        die("memfd_create");
    if (ftruncate(mfd, 4 * PG) != 0)
        die("ftruncate memfd");
    unsigned char *mv1 = map(4 * PG, RW, MAP_SHARED, mfd);
    unsigned char *mv2 = map(4 * PG, RW, MAP_SHARED, mfd);
    close(mfd);
    fill(mv1, R_MEMFD, 0, 4);
    if (!check("memfd view 2 before checkpoint", mv2, R_MEMFD, 0, 4))
        return finish();

    unsigned char *guard = map(3 * PG, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1);
    fill(guard, R_GUARD, 0, 3);
    if (mprotect(guard + PG, PG, PROT_NONE) != 0)
        die("mprotect PROT_NONE");

    unsigned char *ro = map(2 * PG, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1);
    fill(ro, R_RO, 0, 2);
    if (mprotect(ro, 2 * PG, PROT_READ) != 0)
        die("mprotect PROT_READ");

    int shmid = shmget(IPC_PRIVATE, 16 * PG, IPC_CREAT | 0600);
    if (shmid < 0)
        die("shmget");
    unsigned char *sysv = shmat(shmid, NULL, 0);
    if (sysv == (void *)-1)
        die("shmat");
    if (shmctl(shmid, IPC_RMID, NULL) != 0)
        die("shmctl IPC_RMID");
    fill(sysv, R_SYSV, 0, 16);

    put("READY\n");
    wait_go();

    check("anon private", anon, R_ANON, 0, 16);
    check_perms("anon private", anon, "rw-p");

    check("anon shared", ashm, R_ASHM, 0, 8);
    check_perms("anon shared", ashm, "rw-s");

    check("file private", fpriv, R_FPRIV, 0, 1);
    check("file private", fpriv, R_FPRIV_MOD, 1, 1);
    check("file private", fpriv, R_FPRIV, 2, 1);
    for (size_t i = 0; i < PG; i++)
        if (fpriv[3 * PG + i] != 0) {
            fail("file private: zeroed page 3 holds %#x at %zu", fpriv[3 * PG + i], i);
            break;
        }
    check("file private", fpriv, R_FPRIV, 4, 1);
    check("file private", fpriv, R_FPRIV_MOD, 5, 1);
    check("file private", fpriv, R_FPRIV, 6, 2);
    check_file("file private", fpriv_fd, R_FPRIV, 0, 8);
    check_perms("file private", fpriv, "rw-p");

    check("file shared", fshm, R_FSHM_W, 0, 4);
    check_file("file shared", fshm_fd, R_FSHM_W, 0, 4);
    check_perms("file shared", fshm, "rw-s");
    fill(fshm, R_FSHM_W2, 2, 1); /* a write after restore reaches the file */
    check_file("file shared, write after restore", fshm_fd, R_FSHM_W2, 2, 1);

    if (check("memfd view 1", mv1, R_MEMFD, 0, 4) &&
        check("memfd view 2", mv2, R_MEMFD, 0, 4)) {
        fill(mv1, R_MEMFD2, 1, 1);
        if (!check("memfd view 2 after write through view 1", mv2, R_MEMFD2,
                   1, 1))
            fail("the two memfd views no longer alias");
        else {
            fill(mv2, R_MEMFD, 1, 1);
            if (!check("memfd view 1 after write through view 2", mv1,
                       R_MEMFD, 1, 1))
                fail("the two memfd views no longer alias");
        }
    }
    check_perms("memfd view 1", mv1, "rw-s");
    check_perms("memfd view 2", mv2, "rw-s");

    check("guard region", guard, R_GUARD, 0, 1);
    check("guard region", guard, R_GUARD, 2, 1);
    check_perms("guard region below", guard, "rw-p");
    check_perms("guard page", guard + PG, "---p");
    check_perms("guard region above", guard + 2 * PG, "rw-p");
    if (probe(guard + PG + 100, 0) == 0)
        fail("reading the PROT_NONE guard page does not fault");
    if (probe(guard + 2 * PG + 100, 1) != 0)
        fail("writing the page above the guard faults");

    check("read-only region", ro, R_RO, 0, 2);
    check_perms("read-only region", ro, "r--p");
    if (probe(ro + PG + 5, 1) == 0)
        fail("writing the read-only region does not fault");

    check("SysV shm", sysv, R_SYSV, 0, 16);
    check_perms("SysV shm", sysv, "rw-s");
    if (shmdt(sysv) != 0)
        fail("shmdt of the SysV segment failed: %s", strerror(errno));

    close(fpriv_fd);
    close(fshm_fd);
    unlink(priv_path);
    unlink(shared_path);
    return finish();
}
