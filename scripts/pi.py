#!/usr/bin/env python3
"""Prints the first N decimal digits of pi (Gibbons' streaming spigot)."""
import sys


def digits(n):
    q, r, t, k, m, x = 1, 0, 1, 1, 3, 3
    out = 0
    while out < n:
        if 4 * q + r - t < m * t:
            yield m
            out += 1
            q, r, m = 10 * q, 10 * (r - m * t), (10 * (3 * q + r)) // t - 10 * m
        else:
            q, r, t, k, m, x = q * k, (2 * q + r) * x, t * x, k + 1, (q * (7 * k + 2) + r * x) // (t * x), x + 2


n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
for i, d in enumerate(digits(n)):
    sys.stdout.write(str(d) + ("." if i == 0 else ""))
sys.stdout.write("\n")
