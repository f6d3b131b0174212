#!/usr/bin/env python3
"""Reads a router's /metrics on stdin and prints, per operation, how much of
a request's time the router itself added (`cellkv_router_added_seconds`:
time outside its exchanges with the cell): count, mean, and the histogram
bucket that holds the p50, p99 and p99.9 ("≤ bound")."""
import re
import sys

LINE = re.compile(r'^cellkv_router_added_seconds_(bucket|sum|count)\{(.*)\} (\S+)$')


def labels(s):
    return dict(re.findall(r'(\w+)="([^"]*)"', s))


def main():
    ops = {}
    for line in sys.stdin:
        m = LINE.match(line.strip())
        if not m:
            continue
        kind, lab, value = m.group(1), labels(m.group(2)), float(m.group(3))
        op = ops.setdefault(lab["op"], {"buckets": [], "sum": 0.0, "count": 0.0})
        if kind == "bucket":
            le = float("inf") if lab["le"] == "+Inf" else float(lab["le"])
            op["buckets"].append((le, value))
        else:
            op[kind] = value
    if not ops:
        sys.exit("no cellkv_router_added_seconds in the input")
    print("| op | requests | mean µs | p50 ≤ µs | p99 ≤ µs | p99.9 ≤ µs |")
    print("|---|---|---|---|---|---|")
    for name, op in sorted(ops.items()):
        n = op["count"]
        if n == 0:
            continue
        buckets = sorted(op["buckets"])

        def bound(p):
            for le, cum in buckets:
                if cum >= n * p:
                    return "inf" if le == float("inf") else f"{le * 1e6:.0f}"
            return "inf"

        print(
            f"| {name} | {n:.0f} | {op['sum'] / n * 1e6:.0f} | {bound(0.5)} | "
            f"{bound(0.99)} | {bound(0.999)} |"
        )


if __name__ == "__main__":
    main()
