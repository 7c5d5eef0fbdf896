/* getpid_loop N: calls getpid N times through syscall(2) (no libc cache),
 * then prints the pid it got and the nanoseconds per call. The identity
 * benchmark: under a node's supervisor each call is a forwarded one. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 100000;
    long pid = 0;
    struct timespec a, b;
    if (n < 1)
        n = 1;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++)
        pid = syscall(SYS_getpid);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
    printf("%ld %.0f\n", pid, ns / n);
    return 0;
}
