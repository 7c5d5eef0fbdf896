/*
 * files.c - checkpoint/restore test: open files and other per-process
 * file state.
 *
 * Protocol (as every program in this directory): set up state, print
 * "READY\n", block in read(0), then print "PASS\n" (exit 0) or
 * "FAIL: <what differs>\n" (exit 1).  Works without a checkpoint too:
 * `echo go | ./files`.
 *
 * State: a fresh directory $TMPDIR/ckpt-files-XXXXXX (TMPDIR unset: /tmp)
 * which is also the working directory (chdir); in it:
 *   fd_rw      "rw.dat" O_RDWR, 300 bytes, offset 123
 *   fd_app     "append.dat" O_WRONLY|O_APPEND holding "abc", offset 0
 *   fd_dup/42  "dup.dat" opened, dup2'ed to fd 42, offset 17 (shared)
 *   fd_cloexec "cloexec.dat" O_RDONLY|O_CLOEXEC
 *   fd_del     "deleted.dat" O_RDWR holding "secret contents", unlinked
 *   pipe       an internal pipe, 10 bytes unread, read end O_NONBLOCK
 *   fd_null    /dev/null O_WRONLY
 *   umask 027, RLIMIT_NOFILE soft limit 200 (hard limit unchanged).
 * After restore: offsets, access modes and status flags, FD_CLOEXEC set on
 * fd_cloexec only, fds refer to the same inodes as the paths in the cwd,
 * 42 and fd_dup still share one offset (lseek either, check the other),
 * writes on fd_app still append, the deleted file's contents (pread) and
 * link count 0, exactly the 10 bytes in the pipe and that it still works,
 * /dev/null's device number, getcwd(), umask, the rlimits.  The directory
 * is removed at the end.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
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
    fprintf(stderr, "files: %s: %s\n", what, strerror(errno));
    exit(2);
}

static int xopen(const char *path, int flags)
{
    int fd = open(path, flags, 0666);
    if (fd < 0)
        die(path);
    return fd;
}

static void xwrite(int fd, const void *buf, size_t n)
{
    if (write(fd, buf, n) != (ssize_t)n)
        die("write");
}

static unsigned char rw_byte(size_t i) { return (unsigned char)(i * 7 + 3); }

static void check_off(const char *name, int fd, off_t want)
{
    off_t got = lseek(fd, 0, SEEK_CUR);
    if (got != want)
        fail("%s (fd %d): offset %lld, expected %lld", name, fd,
             (long long)got, (long long)want);
}

static void check_fl(const char *name, int fd, int want)
{
    int fl = fcntl(fd, F_GETFL);
    int mask = O_ACCMODE | O_APPEND | O_NONBLOCK;
    if (fl < 0)
        fail("%s (fd %d): F_GETFL: %s", name, fd, strerror(errno));
    else if ((fl & mask) != want)
        fail("%s (fd %d): F_GETFL %#o, expected %#o (masked %#o)", name, fd,
             fl & mask, want, mask);
}

static void check_cloexec(const char *name, int fd, int want)
{
    int fl = fcntl(fd, F_GETFD);
    if (fl < 0)
        fail("%s (fd %d): F_GETFD: %s", name, fd, strerror(errno));
    else if (((fl & FD_CLOEXEC) != 0) != want)
        fail("%s (fd %d): FD_CLOEXEC is %s", name, fd, want ? "clear" : "set");
}

/* The fd's inode must be the one at path (in the cwd). */
static void check_same(const char *name, int fd, const char *path)
{
    struct stat a, b;
    if (fstat(fd, &a) != 0)
        fail("%s (fd %d): fstat: %s", name, fd, strerror(errno));
    else if (stat(path, &b) != 0)
        fail("%s: stat(%s): %s", name, path, strerror(errno));
    else if (a.st_dev != b.st_dev || a.st_ino != b.st_ino)
        fail("%s (fd %d) is not the file %s in the cwd", name, fd, path);
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    if (tmp == NULL || *tmp == '\0')
        tmp = "/tmp";
    static char dir[4096];
    snprintf(dir, sizeof dir, "%s/ckpt-files-XXXXXX", tmp);
    if (mkdtemp(dir) == NULL)
        die("mkdtemp");
    if (chdir(dir) != 0)
        die("chdir");
    static char cwd0[4096];
    if (getcwd(cwd0, sizeof cwd0) == NULL)
        die("getcwd");

    struct rlimit rl0;
    if (getrlimit(RLIMIT_NOFILE, &rl0) != 0)
        die("getrlimit");
    struct rlimit rl = rl0;
    rl.rlim_cur = 200;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        die("setrlimit");
    umask(027);

    unsigned char buf[512];
    int fd_rw = xopen("rw.dat", O_RDWR | O_CREAT | O_TRUNC);
    for (size_t i = 0; i < 300; i++)
        buf[i] = rw_byte(i);
    xwrite(fd_rw, buf, 300);
    if (lseek(fd_rw, 123, SEEK_SET) != 123)
        die("lseek");

    int fd_app = xopen("append.dat", O_WRONLY | O_CREAT | O_TRUNC | O_APPEND);
    xwrite(fd_app, "abc", 3);
    if (lseek(fd_app, 0, SEEK_SET) != 0)
        die("lseek");

    int fd_dup = xopen("dup.dat", O_RDWR | O_CREAT | O_TRUNC);
    xwrite(fd_dup, "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN", 50);
    if (dup2(fd_dup, 42) != 42)
        die("dup2");
    if (lseek(fd_dup, 17, SEEK_SET) != 17)
        die("lseek");

    close(xopen("cloexec.dat", O_WRONLY | O_CREAT | O_TRUNC));
    int fd_cloexec = xopen("cloexec.dat", O_RDONLY | O_CLOEXEC);

    int fd_del = xopen("deleted.dat", O_RDWR | O_CREAT | O_TRUNC);
    xwrite(fd_del, "secret contents", 15);
    if (unlink("deleted.dat") != 0)
        die("unlink");

    int pfd[2];
    if (pipe(pfd) != 0)
        die("pipe");
    if (fcntl(pfd[0], F_SETFL, O_NONBLOCK) != 0)
        die("fcntl O_NONBLOCK");
    xwrite(pfd[1], "0123456789", 10);

    int fd_null = xopen("/dev/null", O_WRONLY);

    put("READY\n");
    wait_go();

    /* rw.dat: O_RDWR at 123, reads continue from there. */
    check_off("rw.dat", fd_rw, 123);
    check_fl("rw.dat", fd_rw, O_RDWR);
    check_cloexec("rw.dat", fd_rw, 0);
    check_same("rw.dat", fd_rw, "rw.dat");
    ssize_t n = read(fd_rw, buf, 10);
    if (n != 10)
        fail("rw.dat: read at 123 returned %zd", n);
    else
        for (size_t i = 0; i < 10; i++)
            if (buf[i] != rw_byte(123 + i)) {
                fail("rw.dat: byte %zu = %#x, expected %#x", 123 + i, buf[i],
                     rw_byte(123 + i));
                break;
            }

    /* append.dat: offset 0 but O_APPEND, so a write lands at the end. */
    check_fl("append.dat", fd_app, O_WRONLY | O_APPEND);
    check_same("append.dat", fd_app, "append.dat");
    if (write(fd_app, "def", 3) != 3)
        fail("append.dat: write: %s", strerror(errno));
    else {
        int r = open("append.dat", O_RDONLY);
        n = r < 0 ? -1 : read(r, buf, sizeof buf);
        if (n != 6 || memcmp(buf, "abcdef", 6) != 0)
            fail("append.dat holds %zd bytes '%.*s', expected 'abcdef'", n,
                 n > 0 ? (int)n : 0, (const char *)buf);
        if (r >= 0)
            close(r);
    }

    /* dup.dat and fd 42: one open file description. */
    check_same("dup.dat", fd_dup, "dup.dat");
    check_same("dup.dat as fd 42", 42, "dup.dat");
    check_off("fd 42", 42, 17);
    check_cloexec("fd 42", 42, 0);
    check_fl("fd 42", 42, O_RDWR);
    if (lseek(42, 29, SEEK_SET) != 29)
        fail("lseek(42, 29): %s", strerror(errno));
    check_off("dup.dat after lseek on fd 42", fd_dup, 29);
    if (lseek(fd_dup, 31, SEEK_SET) != 31)
        fail("lseek(dup.dat, 31): %s", strerror(errno));
    check_off("fd 42 after lseek on dup.dat", 42, 31);
    n = read(42, buf, 3);
    if (n != 3 || memcmp(buf, "vwx", 3) != 0)
        fail("fd 42: read at 31 gave '%.*s', expected 'vwx'",
             n > 0 ? (int)n : 0, (const char *)buf);
    check_off("dup.dat after read on fd 42", fd_dup, 34);

    check_cloexec("cloexec.dat", fd_cloexec, 1);
    check_fl("cloexec.dat", fd_cloexec, O_RDONLY);
    check_same("cloexec.dat", fd_cloexec, "cloexec.dat");

    /* The deleted file. */
    struct stat st;
    if (fstat(fd_del, &st) != 0)
        fail("deleted.dat: fstat: %s", strerror(errno));
    else if (st.st_nlink != 0 || st.st_size != 15)
        fail("deleted.dat: st_nlink %lu, st_size %lld, expected 0 and 15",
             (unsigned long)st.st_nlink, (long long)st.st_size);
    memset(buf, 0, sizeof buf);
    n = pread(fd_del, buf, sizeof buf, 0);
    if (n != 15 || memcmp(buf, "secret contents", 15) != 0)
        fail("deleted.dat: pread gave %zd bytes '%.*s'", n,
             n > 0 ? (int)n : 0, (const char *)buf);
    check_off("deleted.dat", fd_del, 15);
    check_fl("deleted.dat", fd_del, O_RDWR);
    if (access("deleted.dat", F_OK) == 0)
        fail("deleted.dat exists again in the cwd");

    /* The pipe: exactly the 10 bytes, then empty, then still working. */
    check_fl("pipe read end", pfd[0], O_RDONLY | O_NONBLOCK);
    check_fl("pipe write end", pfd[1], O_WRONLY);
    n = read(pfd[0], buf, sizeof buf);
    if (n != 10 || memcmp(buf, "0123456789", 10) != 0)
        fail("pipe: read gave %zd bytes '%.*s', expected '0123456789'", n,
             n > 0 ? (int)n : 0, (const char *)buf);
    n = read(pfd[0], buf, sizeof buf);
    if (n != -1 || errno != EAGAIN)
        fail("pipe: second read returned %zd (%s), expected EAGAIN", n,
             n < 0 ? strerror(errno) : "data");
    if (write(pfd[1], "xyz", 3) != 3)
        fail("pipe: write after restore: %s", strerror(errno));
    else if (read(pfd[0], buf, sizeof buf) != 3 || memcmp(buf, "xyz", 3) != 0)
        fail("pipe: write end and read end are not connected");

    /* /dev/null */
    struct stat a, b;
    check_fl("/dev/null", fd_null, O_WRONLY);
    if (fstat(fd_null, &a) != 0 || stat("/dev/null", &b) != 0)
        fail("/dev/null: stat: %s", strerror(errno));
    else if (!S_ISCHR(a.st_mode) || a.st_rdev != b.st_rdev)
        fail("fd %d is not /dev/null (mode %#o, rdev %#llx)", fd_null,
             (unsigned)a.st_mode, (unsigned long long)a.st_rdev);
    if (write(fd_null, "x", 1) != 1)
        fail("/dev/null: write: %s", strerror(errno));

    /* cwd, umask, rlimit */
    static char cwd1[4096];
    if (getcwd(cwd1, sizeof cwd1) == NULL)
        fail("getcwd: %s", strerror(errno));
    else if (strcmp(cwd1, cwd0) != 0)
        fail("cwd '%s', expected '%s'", cwd1, cwd0);
    mode_t um = umask(022);
    if (um != 027)
        fail("umask %#o, expected 027", (unsigned)um);
    umask(um);
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        fail("getrlimit: %s", strerror(errno));
    else if (rl.rlim_cur != 200 || rl.rlim_max != rl0.rlim_max)
        fail("RLIMIT_NOFILE %llu/%llu, expected 200/%llu",
             (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max,
             (unsigned long long)rl0.rlim_max);

    unlink("rw.dat");
    unlink("append.dat");
    unlink("dup.dat");
    unlink("cloexec.dat");
    if (chdir("/") != 0 || rmdir(dir) != 0)
        fprintf(stderr, "files: cannot remove %s: %s\n", dir, strerror(errno));
    return finish();
}
