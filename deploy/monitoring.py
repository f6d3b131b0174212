#!/usr/bin/env python3
"""Prometheus for a Compose deployment of cellkv: writes, next to the files
`cellkv-deploy generate` wrote in DIR,

  prometheus/prometheus.yml  scrape config: every process's /metrics, every 2 s
  prometheus/targets-*.json  the targets, one file per job (file_sd: Prometheus
                             re-reads them when they change, no restart)
  compose.monitoring.json    a second Compose file adding the `prometheus`
                             service (deploy/lib.sh passes it to every command)
  monitoring.json            its host port (picked once, then kept) and URL

What is scraped comes from DIR/layout.json: every replica `c<cell>-n<node>`
(the cells' current members, after `cellkv-deploy add-cell`/`add-replica`
too) on its API port (7001; /metrics needs no token), `control:7900` and
`router<i>:8080`. Each replica target carries `cell` and `node` labels, each
router a `router` label: the cells' own metrics have no cell label (a replica
knows it is one), and the dashboard (deploy/grafana/cellkv.json) groups by them.
Run it again after a cell or replica is added or removed: the targets follow.

    deploy/monitoring.py --dir deploy/run [--image cellkv-prometheus:dev] [--count]

Only the Python standard library.
"""

import argparse
import json
import os
import socket
from pathlib import Path

# Ports inside the network (cluster/src/deploy.rs).
CELL_API_PORT, CONTROL_PORT, ROUTER_PORT, PROMETHEUS_PORT = 7001, 7900, 8080, 9090
CONTROL_CELL = 100


def write(path, value):
    """JSON into `path`, atomically (Prometheus may be reading it)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    tmp.chmod(0o644)
    os.replace(tmp, path)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nodes(layout, cell):
    """A cell's nodes: its recorded members if an operator changed them."""
    members = layout.get("members", {}).get(str(cell))
    return members if members is not None else range(1, layout["replicas"] + 1)


def targets(layout):
    """{file name: file_sd target groups}, one file per job."""
    def replicas(cells):
        return [{"targets": [f"c{c}-n{n}:{CELL_API_PORT}"], "labels": {"cell": str(c), "node": str(n)}}
                for c in cells for n in nodes(layout, c)]

    return {
        "targets-cells.json": replicas(layout["cells"]),
        "targets-control-cell.json": replicas([CONTROL_CELL]),
        "targets-control.json": [{"targets": [f"control:{CONTROL_PORT}"], "labels": {}}],
        "targets-routers.json": [{"targets": [f"router{i}:{ROUTER_PORT}"], "labels": {"router": f"router{i}"}}
                                 for i in range(1, len(layout["router_ports"]) + 1)],
    }


def scrape_config(layout, interval):
    def job(name, file):
        return {"job_name": name,
                "file_sd_configs": [{"files": [f"/etc/prometheus/{file}"], "refresh_interval": "30s"}]}

    return {
        "global": {
            # Short, so a test sees its writes within seconds; 15 small
            # targets every 2 s is little work.
            "scrape_interval": interval,
            "scrape_timeout": "1s" if interval in ("1s", "2s") else "5s",
            "evaluation_interval": interval,
            "external_labels": {"deployment": layout["project"]},
        },
        "scrape_configs": [
            job("cellkv-cell", "targets-cells.json"),
            job("cellkv-control-cell", "targets-control-cell.json"),
            job("cellkv-control", "targets-control.json"),
            job("cellkv-router", "targets-routers.json"),
        ],
    }


def main():
    ap = argparse.ArgumentParser(description="Prometheus for a Compose deployment of cellkv")
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument("--image", default=os.environ.get("CELLKV_PROMETHEUS_IMAGE",
                                                      "cellkv-prometheus:dev"))
    ap.add_argument("--port", type=int, help="host port (a new directory only) [a free one]")
    ap.add_argument("--interval", default=os.environ.get("CELLKV_SCRAPE_INTERVAL", "2s"))
    ap.add_argument("--count", action="store_true",
                    help="print the number of targets (for a test's check)")
    a = ap.parse_args()
    layout = json.loads((a.dir / "layout.json").read_text())
    state_file = a.dir / "monitoring.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    port = state.get("prometheus_port") or a.port or free_port()
    state = {"prometheus_port": port, "prometheus_url": f"http://127.0.0.1:{port}"}
    # The directory is mounted (not the files): Prometheus sees a file
    # replaced by rename. JSON is YAML: no YAML library needed.
    conf = a.dir / "prometheus"
    conf.mkdir(exist_ok=True)
    conf.chmod(0o755)
    write(conf / "prometheus.yml", scrape_config(layout, a.interval))
    for name, groups in targets(layout).items():
        write(conf / name, groups)
    compose = {
        "services": {"prometheus": {
            "image": a.image,
            "hostname": "prometheus",
            "command": ["--config.file=/etc/prometheus/prometheus.yml",
                        "--storage.tsdb.path=/prometheus",
                        "--storage.tsdb.retention.time=7d",
                        f"--web.listen-address=:{PROMETHEUS_PORT}"],
            "volumes": ["./prometheus:/etc/prometheus:ro", "prometheus-data:/prometheus"],
            "networks": ["cellkv"],
            "ports": [f"127.0.0.1:{port}:{PROMETHEUS_PORT}"],
            "restart": "unless-stopped",
            "cpus": 0.25,
            "mem_limit": "256m",
            "stop_grace_period": "10s",
            "labels": {"io.cellkv.role": "prometheus"},
        }},
        "volumes": {"prometheus-data": {}},
    }
    write(a.dir / "compose.monitoring.json", compose)
    write(state_file, state)
    if a.count:
        print(sum(len(g["targets"]) for groups in targets(layout).values() for g in groups))


if __name__ == "__main__":
    main()
