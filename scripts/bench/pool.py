#!/usr/bin/env python3
"""Pools interleaved wrk runs (dumps of scripts/bench/quantiles.lua) into one
latency distribution and one throughput per label, and prints them side by
side with the ratio and the added latency of each label against the first.

usage: pool.py LABEL=FILE[,FILE...] LABEL=FILE[,FILE...]

Each dump holds a run's latency at a grid of percentiles; the step between two
grid points carries that share of the run's requests. Pooling weighs every
step by its run's request count, so the pooled percentiles are those of all
requests of all runs of a label (to the grid's 0.05% / 0.01% resolution).
Throughput is total requests over total seconds.

When every label has the same number of files, the files at one position
are taken as one round of interleaved runs, and the median over rounds of
each label's per-run p50 and p99 minus the first label's is printed too: a
figure that a rare stall of the target (a compaction, a snapshot) landing
in one run cannot swing, unlike the pooled p99."""
import sys


def read(path):
    reqs, secs, errors, grid = 0, 0.0, 0, []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if parts[0] == "reqs":
                reqs = int(parts[1])
            elif parts[0] == "secs":
                secs = float(parts[1])
            elif parts[0] == "errors":
                errors = int(parts[1])
            elif parts[0] == "q":
                grid.append((float(parts[1]), int(parts[2])))
    if reqs == 0 or not grid:
        sys.exit(f"{path}: no requests or no latency grid")
    return reqs, secs, errors, grid


def run_pct(run, p):
    """One run's latency (ms) at percentile p, from its own grid."""
    _, _, _, grid = run
    for q, us in grid:
        if q >= p - 1e-9:
            return us / 1000.0
    return grid[-1][1] / 1000.0


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def pool(runs):
    reqs = secs = errors = 0
    mass = []  # (latency_us, requests)
    for r, s, e, grid in runs:
        reqs, secs, errors = reqs + r, secs + s, errors + e
        prev = 0.0
        for p, us in grid:
            mass.append((us, r * (p - prev) / 100.0))
            prev = p
    mass.sort()
    total = sum(m for _, m in mass)

    def pct(p):
        want, acc = total * p / 100.0, 0.0
        for us, m in mass:
            acc += m
            if acc >= want - 1e-9:
                return us / 1000.0
        return mass[-1][0] / 1000.0

    return {
        "runs": len(runs),
        "reqs": reqs,
        "ops_s": reqs / secs,
        "errors": errors,
        "p50": pct(50),
        "p99": pct(99),
        "p999": pct(99.9),
    }


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    rows, runs_of = [], []
    for arg in sys.argv[1:]:
        label, _, files = arg.partition("=")
        runs = [read(f) for f in files.split(",") if f]
        runs_of.append((label, runs))
        rows.append((label, pool(runs)))
    base = rows[0][1]
    print("| path | runs | requests | ops/s | % of first | p50 ms | p99 ms | p99.9 ms | added p99 ms | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, r in rows:
        print(
            f"| {label} | {r['runs']} | {r['reqs']} | {r['ops_s']:.0f} | "
            f"{100 * r['ops_s'] / base['ops_s']:.1f}% | {r['p50']:.3f} | {r['p99']:.3f} | "
            f"{r['p999']:.3f} | {r['p99'] - base['p99']:+.3f} | {r['errors']} |"
        )
    rounds = {len(r) for _, r in runs_of}
    if len(rounds) == 1 and len(runs_of) > 1:
        first = runs_of[0][1]
        for label, runs in runs_of[1:]:
            d50 = [run_pct(b, 50) - run_pct(a, 50) for a, b in zip(first, runs)]
            d99 = [run_pct(b, 99) - run_pct(a, 99) for a, b in zip(first, runs)]
            print(
                f"\n{label} minus {runs_of[0][0]}, median over {len(runs)} rounds: "
                f"p50 {median(d50):+.3f} ms, p99 {median(d99):+.3f} ms "
                f"(per round p99: {' '.join(f'{x:+.2f}' for x in d99)})"
            )


if __name__ == "__main__":
    main()
