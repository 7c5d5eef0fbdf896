/*
 * pi.c - prints the first N decimal digits of pi, then a newline.
 *
 * Test program for roam: a deterministic, CPU-bound program whose output is
 * known, cross-compiled for foreign architectures so tests can check that a
 * program run under qemu-user on another node computes what it computes
 * natively.
 *
 * Usage: pi [N]   (N digits, counting the leading 3, no decimal point;
 *                  default 100, 1 <= N <= 10000)
 *   pi 10  ->  3141592653
 *
 * Algorithm: the Rabinowitz-Wagon spigot, in base 10000 (four digits per
 * pass, as in Dik Winter's classic), with the carries of each 4-digit group
 * propagated into the groups already produced, so every digit is exact.
 * pi = 2 + 1/3 (2 + 2/5 (2 + 3/7 (2 + ...))): the mixed-radix digits f[b]
 * of the fraction are multiplied by 10000 and renormalised from the tail,
 * and what carries out of the head is the next group of four digits.  Each
 * pass consumes 14 terms (10000 < 2^14 would need 13.3).
 *
 * All arithmetic is in uint32_t, so the result does not depend on the
 * width of int/long.  The largest intermediate grows with the number of
 * terms c (about 20000 * 2c); at the cap N = 10000 (c = 35056) it is
 * 1.38e9, below 2^31 (checked with a 64-bit shadow, and the digits against
 * Machin's formula for every N up to 1000 and for N = 2000 and 10000).
 * Plain C99 plus libc; portable across word size and byte order.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define BASE 10000u
#define MAX_DIGITS 10000L

int main(int argc, char **argv)
{
    long n = 100;
    if (argc > 1) {
        char *end;
        n = strtol(argv[1], &end, 10);
        if (*argv[1] == '\0' || *end != '\0' || n < 1 || n > MAX_DIGITS) {
            fprintf(stderr, "pi: N must be an integer in 1..%ld\n", MAX_DIGITS);
            return 2;
        }
    }

    /* Two spare groups so rounding in the last pass cannot reach digit N. */
    uint32_t groups = (uint32_t)((n + 3) / 4) + 2;
    uint32_t c = groups * 14;
    uint32_t *f = malloc(((size_t)c + 1) * sizeof *f);
    uint32_t *out = malloc((size_t)groups * sizeof *out);
    char *text = malloc((size_t)groups * 4 + 1);
    if (f == NULL || out == NULL || text == NULL) {
        fprintf(stderr, "pi: out of memory\n");
        return 1;
    }
    for (uint32_t b = 0; b <= c; b++)
        f[b] = BASE / 5; /* 2000: the 2s of the series, pre-scaled by 10000/10 */

    uint32_t carry_in = 0; /* remainder of the previous pass (Winter's "e") */
    for (uint32_t k = 0; k < groups; k++, c -= 14) {
        uint32_t d = 0;
        for (uint32_t b = c; b > 0; b--) {
            uint32_t g = 2 * b - 1;
            d += f[b] * BASE;
            f[b] = d % g;
            d /= g;
            if (b > 1)
                d *= b - 1;
        }
        uint32_t group = carry_in + d / BASE;
        carry_in = d % BASE;
        out[k] = group;
        /* A group may come out as 10000 or more: carry into earlier ones. */
        for (uint32_t j = k; j > 0 && out[j] >= BASE; j--) {
            out[j] -= BASE;
            out[j - 1] += 1;
        }
    }

    for (uint32_t k = 0; k < groups; k++)
        snprintf(text + 4 * (size_t)k, 5, "%04u", (unsigned)out[k]);
    text[n] = '\0';
    printf("%s\n", text);

    free(text);
    free(out);
    free(f);
    return fflush(stdout) == 0 ? 0 : 1;
}
