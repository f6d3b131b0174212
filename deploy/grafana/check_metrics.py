#!/usr/bin/env python3
"""Checks a dashboard against what Prometheus really scraped: every metric
name the dashboard's expressions use (panel targets and template variable
queries: every `cellkv_*` name, and `up`) has at least one series, and every
target is up (scraped since the check started, healthy, as many targets as
expected). Polls until that holds
or the timeout passes, then names what is missing. Then every panel
expression must evaluate (Grafana's variables replaced: `$__rate_interval`
by 1m, `$cell` by `.*`), so a PromQL typo fails too. tests/compose.sh runs it.

    check_metrics.py --prometheus http://127.0.0.1:PORT \
        [--dashboard deploy/grafana/cellkv.json] [--targets N] [--timeout 30]

Only the Python standard library.
"""

import argparse
import json
import re
import sys
import time
from datetime import datetime
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

# Metric names: ours all start with cellkv_; `up` is Prometheus's own.
METRIC = re.compile(r"\b(cellkv_[a-z0-9_]+|up)\b")


def expressions(dashboard):
    exprs = []

    def walk(panels):
        for p in panels:
            exprs.extend(t["expr"] for t in p.get("targets", []) if t.get("expr"))
            walk(p.get("panels", []))

    walk(dashboard.get("panels", []))
    for v in dashboard.get("templating", {}).get("list", []):
        q = v.get("query")
        exprs.append(q.get("query", "") if isinstance(q, dict) else (q or ""))
    return exprs


def query(base, promql):
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.load(r)
    except urllib.error.HTTPError as e:
        # Prometheus answers 400 with {"error": ...} for a bad expression.
        raise RuntimeError(e.read().decode(errors="replace")) from e
    if body.get("status") != "success":
        raise RuntimeError(f"{promql}: {body}")
    return body["data"]["result"]


def grafana_free(expr):
    return expr.replace("$__rate_interval", "1m").replace("$cell", ".*")


def timestamp(rfc3339):
    """Prometheus's lastScrape (nanoseconds, Z) as seconds since the epoch."""
    m = re.match(r"(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", rfc3339)
    if not m:
        return 0.0
    base = datetime.fromisoformat(m.group(1) + ("+00:00" if m.group(3) == "Z" else m.group(3)))
    return base.timestamp() + float("0." + (m.group(2) or "0"))


def problems(base, names, targets, since):
    """What is wrong now: targets down, missing or not scraped since `since`
    (so a check never passes on a scrape from before it started), metrics
    without series."""
    out = []
    with urllib.request.urlopen(f"{base}/api/v1/targets?state=active", timeout=5) as r:
        active = json.load(r)["data"]["activeTargets"]
    name = lambda t: f"{t['labels'].get('job')}/{t['labels'].get('instance')}"
    stale = [name(t) for t in active if timestamp(t.get("lastScrape", "")) < since]
    down = [f"{name(t)} ({t.get('lastError') or t.get('health')})"
            for t in active if name(t) not in stale and t.get("health") != "up"]
    if stale:
        out.append(f"targets not scraped since the check started: {', '.join(sorted(stale))}")
    if down:
        out.append(f"targets down: {', '.join(sorted(down))}")
    if targets is not None and len(active) != targets:
        out.append(f"{len(active)} targets, expected {targets}")
    missing = [n for n in names if not query(base, f'count({{__name__="{n}"}})')]
    if missing:
        out.append(f"metrics the dashboard uses with no series: {', '.join(missing)}")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prometheus", required=True)
    ap.add_argument("--dashboard", type=Path,
                    default=Path(__file__).resolve().parent / "cellkv.json")
    ap.add_argument("--targets", type=int)
    ap.add_argument("--timeout", type=float, default=30)
    ap.add_argument("--targets-only", action="store_true",
                    help="only check that every target is up (after a membership change)")
    a = ap.parse_args()
    dashboard = json.loads(a.dashboard.read_text())
    names = sorted({n for e in expressions(dashboard) for n in METRIC.findall(e)})
    if a.targets_only:
        names, dashboard = [], {}
    if not names and not a.targets_only:
        sys.exit(f"check_metrics: {a.dashboard} uses no metric")
    deadline = time.monotonic() + a.timeout
    since = time.time()
    while True:
        try:
            found = problems(a.prometheus.rstrip("/"), names, a.targets, since)
        except (OSError, RuntimeError) as e:
            found = [f"Prometheus did not answer: {e}"]
        if not found:
            bad = []
            for e in expressions(dashboard):
                if e.startswith("label_values("):
                    continue  # Grafana's own function, not PromQL
                try:
                    query(a.prometheus.rstrip("/"), grafana_free(e))
                except (OSError, RuntimeError) as err:
                    bad.append(f"{e}: {err}")
            if bad:
                for b in bad:
                    print(f"check_metrics: does not evaluate: {b}", file=sys.stderr)
                sys.exit("check_metrics: the dashboard has expressions Prometheus refuses")
            if a.targets_only:
                print("check_metrics: every target is up")
            else:
                print(f"check_metrics: all {len(names)} metrics of {a.dashboard.name} have series "
                      "and every expression evaluates; every target is up")
            return
        if time.monotonic() >= deadline:
            for p in found:
                print(f"check_metrics: {p}", file=sys.stderr)
            sys.exit(f"check_metrics: failed after {a.timeout:.0f} s")
        time.sleep(1)


if __name__ == "__main__":
    main()
