#!/usr/bin/env python3
"""Ray, the peer of roam-rpc's bench (crates/roam-rpc/examples/rpc_bench.rs):
the same measurements on a local Ray instance of 2 CPUs. Prints one JSON
object: null_us, calls_per_s, mb_per_s, farm_s.

    python3 scripts/rpc_ray_bench.py ROUNDS

Ray's workers run on this machine, and its object store passes large
arrays through shared memory: its bandwidth here is not a network's.
"""
import json
import statistics
import sys
import time

import numpy as np
import ray

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
ARRAY = 8 << 20  # doubles: 64 MiB


@ray.remote
class Worker:
    def null(self):
        return None

    def echo(self, x):
        return x


@ray.remote
def nap(ms):
    time.sleep(ms / 1000)
    return ms


def main():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    w = Worker.remote()
    for _ in range(100):
        ray.get(w.null.remote())
    t = []
    for _ in range(ROUNDS):
        a = time.perf_counter()
        ray.get(w.null.remote())
        t.append((time.perf_counter() - a) * 1e6)
    null_us = statistics.median(t)
    a = time.perf_counter()
    ray.get([w.null.remote() for _ in range(ROUNDS)])
    calls_per_s = ROUNDS / (time.perf_counter() - a)
    x = np.full(ARRAY, 0.5)
    t = []
    for _ in range(5):
        a = time.perf_counter()
        y = ray.get(w.echo.remote(x))
        t.append(time.perf_counter() - a)
        assert len(y) == ARRAY
    mb_per_s = 2 * ARRAY * 8 / statistics.median(t) / 1e6
    # The farm: 100 tasks of 10 ms on Ray's 2 CPUs.
    ray.get([nap.remote(1) for _ in range(4)])
    a = time.perf_counter()
    ray.get([nap.remote(10) for _ in range(100)])
    farm_s = time.perf_counter() - a
    print(json.dumps({"null_us": null_us, "calls_per_s": calls_per_s,
                      "mb_per_s": mb_per_s, "farm_s": farm_s}))
    ray.shutdown()


if __name__ == "__main__":
    main()
