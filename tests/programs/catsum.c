/*
 * catsum.c - copies stdin to stdout unchanged and reports a checksum.
 *
 * Test program for roam: feeding it arbitrary binary data through a remote
 * run and comparing what comes back (stdout) and what it counted (stderr)
 * checks that stdin and stdout are transported binary-safe, in both
 * directions, whatever the byte order of the node it runs on.
 *
 * Reads stdin to EOF, writes every byte to stdout as read, then writes one
 * line to stderr:
 *   bytes=<number of bytes, decimal> sum=<sum of all bytes mod 2^32, as
 *                                        8 lowercase hex digits>
 * Exit status 0, or 1 (with a message on stderr) on a read or write error.
 *
 * Plain C99 plus POSIX read/write; portable across word size and byte order
 * (the sum is over bytes, so it does not depend on either).
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int write_all(int fd, const unsigned char *p, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int main(void)
{
    static unsigned char buf[65536];
    unsigned long long bytes = 0;
    uint32_t sum = 0;

    for (;;) {
        ssize_t r = read(0, buf, sizeof buf);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "catsum: read: %s\n", strerror(errno));
            return 1;
        }
        if (r == 0)
            break;
        for (ssize_t i = 0; i < r; i++)
            sum += buf[i];
        bytes += (unsigned long long)r;
        if (write_all(1, buf, (size_t)r) != 0) {
            fprintf(stderr, "catsum: write: %s\n", strerror(errno));
            return 1;
        }
    }

    fprintf(stderr, "bytes=%llu sum=%08lx\n", bytes, (unsigned long)sum);
    return 0;
}
