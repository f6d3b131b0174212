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
    return dict(re.findall(r"(\w+)=([\d.]+)", line))


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
    ratio = float(a["ops_s"]) / float(b["ops_s"])
    ratios.append(ratio)
    ok = float(a["p99_ms"]) <= float(b["p99_ms"])
    p99_ok += ok
    print(f"{i + 1:>5}  {float(a['ops_s']):>12.0f}  {float(a['p99_ms']):>6.1f}"
          f"   {float(b['ops_s']):>10.0f}  {float(b['p99_ms']):>6.1f}   {ratio:.2f}x")


def pooled(rs):
    return sum(float(r["reqs"]) for r in rs[:n]) / sum(float(r["secs"]) for r in rs[:n])


print(f"median ratio over {n} rounds: {statistics.median(ratios):.2f}x "
      f"(min {min(ratios):.2f}x, max {max(ratios):.2f}x)")
print(f"pooled: cellkv {pooled(runs['cellkv']):.0f} ops/s, etcd {pooled(runs['etcd']):.0f} ops/s, "
      f"ratio {pooled(runs['cellkv']) / pooled(runs['etcd']):.2f}x")
print(f"cellkv p99 no worse than etcd's in {p99_ok} of {n} rounds; "
      f"median p99 cellkv {statistics.median(float(r['p99_ms']) for r in runs['cellkv'][:n]):.1f} ms, "
      f"etcd {statistics.median(float(r['p99_ms']) for r in runs['etcd'][:n]):.1f} ms")
