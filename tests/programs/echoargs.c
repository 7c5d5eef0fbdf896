/*
 * echoargs.c - prints what a program was started with.
 *
 * Test program for roam: run on a remote (possibly foreign-architecture)
 * node, its output shows whether the arguments, the environment, the
 * working directory and the umask arrived intact, and what kind of machine
 * the program really ran as.
 *
 * Output, one item per line:
 *   argc=<argc>
 *   argv[<i>]=<argv[i]>              for i = 0 .. argc-1, verbatim
 *   <NAME>=<value>                   every environment entry whose name
 *                                    starts with ROAM_TEST_, sorted by name
 *   cwd=<current working directory>  (cwd=? and a message on stderr if
 *                                    getcwd fails)
 *   umask=<umask, 3 octal digits>
 *   arch-bits=<pointer width in bits> endian=<big|little>  (detected at
 *                                    run time, not from compiler macros)
 *
 * Plain C99 plus POSIX; portable across word size and byte order.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

extern char **environ;

static const char PREFIX[] = "ROAM_TEST_";

/* Orders "NAME=value" entries by NAME, then by the whole entry. */
static int by_name(const void *a, const void *b)
{
    const char *x = *(const char *const *)a;
    const char *y = *(const char *const *)b;
    size_t nx = strcspn(x, "=");
    size_t ny = strcspn(y, "=");
    int r = strncmp(x, y, nx < ny ? nx : ny);
    if (r != 0)
        return r;
    if (nx != ny)
        return nx < ny ? -1 : 1;
    return strcmp(x, y);
}

static char *current_dir(void)
{
    size_t size = 256;
    for (;;) {
        char *buf = malloc(size);
        if (buf == NULL)
            return NULL;
        if (getcwd(buf, size) != NULL)
            return buf;
        int err = errno;
        free(buf);
        if (err != ERANGE) {
            errno = err;
            return NULL;
        }
        size *= 2;
    }
}

int main(int argc, char **argv)
{
    printf("argc=%d\n", argc);
    for (int i = 0; i < argc; i++)
        printf("argv[%d]=%s\n", i, argv[i]);

    size_t count = 0;
    for (char **e = environ; *e != NULL; e++)
        if (strncmp(*e, PREFIX, sizeof PREFIX - 1) == 0)
            count++;
    char **picked = malloc((count + 1) * sizeof *picked);
    if (picked == NULL) {
        fprintf(stderr, "echoargs: out of memory\n");
        return 1;
    }
    size_t n = 0;
    for (char **e = environ; *e != NULL; e++)
        if (strncmp(*e, PREFIX, sizeof PREFIX - 1) == 0)
            picked[n++] = *e;
    qsort(picked, n, sizeof *picked, by_name);
    for (size_t i = 0; i < n; i++)
        printf("%s\n", picked[i]);
    free(picked);

    char *cwd = current_dir();
    if (cwd != NULL) {
        printf("cwd=%s\n", cwd);
        free(cwd);
    } else {
        fprintf(stderr, "echoargs: getcwd: %s\n", strerror(errno));
        printf("cwd=?\n");
    }

    mode_t mask = umask(0);
    umask(mask);
    printf("umask=%03o\n", (unsigned)mask);

    uint32_t probe = 0x01020304u;
    unsigned char first;
    memcpy(&first, &probe, 1);
    printf("arch-bits=%d endian=%s\n", (int)(sizeof(void *) * 8),
           first == 0x01 ? "big" : "little");

    return fflush(stdout) == 0 ? 0 : 1;
}
