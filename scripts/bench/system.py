#!/usr/bin/env python3
"""Sums up scripts/bench-system.sh: cellkv (through its router) against etcd.

Reads the script's RUN lines on stdin, one per wrk run, each a list of
key=value fields: system (cellkv or etcd), workload, conns, round, reqs,
secs, ops_s, p50_ms, p99_ms, errors (non-2xx + socket errors + timeouts),
cpu_us (CPU, user + system, of every process of that system during the run)
and busy (the machine's busy % during the run).

Prints, per workload in the order first seen, one row per round (both
systems, the throughput ratio cellkv/etcd and each system's µs of CPU per
operation), then the pooled figures: all requests over all seconds, the
median ratio over rounds, the median p99, and CPU per operation as all CPU
over all requests. Last, one table of the pooled figures of every workload.
"""
import statistics
import sys


def parse(line):
    out = {}
    for part in line.split()[1:]:
        key, _, value = part.partition("=")
        try:
            out[key] = float(value)
        except ValueError:
            out[key] = value
    return out


def pooled(runs):
    reqs = sum(r["reqs"] for r in runs)
    return {
        "ops_s": reqs / sum(r["secs"] for r in runs),
        "p99": statistics.median(r["p99_ms"] for r in runs),
        "cpu_op": sum(r["cpu_us"] for r in runs) / max(reqs, 1),
        "errors": int(sum(r["errors"] for r in runs)),
        "reqs": int(reqs),
    }


def main():
    order, runs = [], {}
    for line in sys.stdin:
        if not line.startswith("RUN "):
            continue
        r = parse(line)
        w = r["workload"]
        if w not in runs:
            order.append(w)
            runs[w] = {"cellkv": [], "etcd": []}
        runs[w][r["system"]].append(r)
    if not order:
        sys.exit("system.py: no RUN lines on stdin")

    summary = []
    for w in order:
        cell = sorted(runs[w]["cellkv"], key=lambda r: r["round"])
        etcd = sorted(runs[w]["etcd"], key=lambda r: r["round"])
        n = min(len(cell), len(etcd))
        if n == 0:
            print(f"\n{w}: runs of one system only, nothing to compare")
            continue
        cell, etcd = cell[:n], etcd[:n]
        print(f"\n### {w} ({int(cell[0]['conns'])} connections)\n")
        print("| round | cellkv ops/s | p99 ms | µs CPU/op | etcd ops/s | p99 ms | µs CPU/op | ratio | errors cellkv / etcd |")
        print("|---|---|---|---|---|---|---|---|---|")
        ratios = []
        for a, b in zip(cell, etcd):
            ratio = a["ops_s"] / b["ops_s"]
            ratios.append(ratio)
            print(
                f"| {int(a['round'])} | {a['ops_s']:.0f} | {a['p99_ms']:.2f} | "
                f"{a['cpu_us'] / max(a['reqs'], 1):.0f} | {b['ops_s']:.0f} | {b['p99_ms']:.2f} | "
                f"{b['cpu_us'] / max(b['reqs'], 1):.0f} | {ratio:.2f}× | "
                f"{int(a['errors'])} / {int(b['errors'])} |"
            )
        pc, pe = pooled(cell), pooled(etcd)
        print(
            f"\npooled over {n} rounds: cellkv {pc['ops_s']:.0f} ops/s, etcd {pe['ops_s']:.0f} ops/s, "
            f"ratio {pc['ops_s'] / pe['ops_s']:.2f}× (median of rounds {statistics.median(ratios):.2f}×, "
            f"min {min(ratios):.2f}×, max {max(ratios):.2f}×); median p99 {pc['p99']:.2f} / {pe['p99']:.2f} ms; "
            f"µs CPU/op {pc['cpu_op']:.0f} / {pe['cpu_op']:.0f}"
        )
        summary.append((w, int(cell[0]["conns"]), n, pc, pe, statistics.median(ratios)))

    print("\n### Pooled, every workload (cellkv through its router; CPU: every process of each system)\n")
    print("| workload | conns | rounds | cellkv ops/s | etcd ops/s | ratio cellkv/etcd (pooled) | median ratio | median p99 ms cellkv / etcd | µs CPU/op cellkv / etcd | errors cellkv / etcd |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for w, conns, n, pc, pe, med in summary:
        print(
            f"| {w} | {conns} | {n} | {pc['ops_s']:.0f} | {pe['ops_s']:.0f} | "
            f"**{pc['ops_s'] / pe['ops_s']:.2f}×** | {med:.2f}× | {pc['p99']:.2f} / {pe['p99']:.2f} | "
            f"{pc['cpu_op']:.0f} / {pe['cpu_op']:.0f} | {pc['errors']} / {pe['errors']} |"
        )


if __name__ == "__main__":
    main()
