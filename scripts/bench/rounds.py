#!/usr/bin/env python3
"""Sums up scripts/bench-cell.sh's interleaved rounds (CELLKV_BENCH_ROUNDS).

Reads runwrk.sh RESULT lines on stdin, labelled `cellkv` or `etcd`, in the
order the rounds ran (one cellkv and one etcd run per round). Prints, per
round, the throughput ratio and both p99s; then the median over rounds of
the ratio, the pooled throughput (all requests / all seconds) of each
system, and in how many rounds cellkv's p99 was no worse than etcd's.
"""
import re
import statistics
import sys


def fields(line):
    return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", line)}


runs = {"cellkv": [], "etcd": []}
for line in sys.stdin:
    label = line.split(" ", 1)[0]
    if label in runs and "RESULT" in line:
        runs[label].append(fields(line))
n = min(len(runs["cellkv"]), len(runs["etcd"]))
if n == 0:
    sys.exit("rounds.py: no cellkv/etcd RESULT lines on stdin")
ratios, p99_ok = [], 0
print("round  cellkv ops/s  p99 ms   etcd ops/s  p99 ms   ratio")
for i in range(n):
    a, b = runs["cellkv"][i], runs["etcd"][i]
    ratio = a["ops_s"] / b["ops_s"]
    ratios.append(ratio)
    p99_ok += a["p99_ms"] <= b["p99_ms"]
    print(f"{i + 1:>5}  {a['ops_s']:>12.0f}  {a['p99_ms']:>6.1f}"
          f"   {b['ops_s']:>10.0f}  {b['p99_ms']:>6.1f}   {ratio:.2f}x")


def pooled(rs):
    return sum(r["reqs"] for r in rs[:n]) / sum(r["secs"] for r in rs[:n])


def median_p99(rs):
    return statistics.median(r["p99_ms"] for r in rs[:n])


cell_pooled, etcd_pooled = pooled(runs["cellkv"]), pooled(runs["etcd"])

print(f"median ratio over {n} rounds: {statistics.median(ratios):.2f}x "
      f"(min {min(ratios):.2f}x, max {max(ratios):.2f}x)")
print(f"pooled: cellkv {cell_pooled:.0f} ops/s, etcd {etcd_pooled:.0f} ops/s, "
      f"ratio {cell_pooled / etcd_pooled:.2f}x")
print(f"cellkv p99 no worse than etcd's in {p99_ok} of {n} rounds; "
      f"median p99 cellkv {median_p99(runs['cellkv']):.1f} ms, "
      f"etcd {median_p99(runs['etcd']):.1f} ms")
