#!/usr/bin/env python3
"""Our own rules for cellkv's Kubernetes manifests, beyond the API schemas
(deploy/k8s/validate.sh runs it after kubernetes-validate):

- every StatefulSet (a Raft cell) keeps its replicas on different nodes
  (required pod anti-affinity on kubernetes.io/hostname, selecting its pods),
  has a PodDisruptionBudget selecting its pods with maxUnavailable <= 1,
  volumeClaimTemplates, podManagementPolicy Parallel, and a headless
  Service publishing not-ready pods (replicas find each other before any is
  ready);
- its containers have a readiness and a liveness probe that differ (ready
  = can serve; alive = the process answers; one check for both would
  restart a replica that only lost its quorum);
- every container of every workload has CPU and memory requests and limits,
  runs as a non-root uid with a read-only root filesystem and without
  privilege escalation;
- kustomization.yaml lists every manifest of the directory.

Usage: check_rules.py FILE... (needs PyYAML, installed by validate.sh).
Prints every broken rule and exits 1 if there is one.
"""

import sys
from pathlib import Path

import yaml

WORKLOADS = {"StatefulSet", "Deployment", "Job", "DaemonSet"}


def load(paths):
    docs = []
    for p in paths:
        for d in yaml.safe_load_all(Path(p).read_text()):
            if d:
                docs.append((p, d))
    return docs


def matches(selector, labels):
    """Does a LabelSelector (matchLabels only, as ours) select `labels`?"""
    if not selector or selector.get("matchExpressions"):
        return False
    want = selector.get("matchLabels") or {}
    return bool(want) and all(labels.get(k) == v for k, v in want.items())


def name(d):
    return f"{d['kind']} {d['metadata'].get('namespace', '')}/{d['metadata']['name']}"


def probe_key(p):
    if not p:
        return None
    if "httpGet" in p:
        return ("http", p["httpGet"].get("path"), str(p["httpGet"].get("port")))
    return tuple(sorted(p.keys()))


def check(docs):
    errors = []
    pdbs = [d for _, d in docs if d["kind"] == "PodDisruptionBudget"]
    services = {(d["metadata"].get("namespace"), d["metadata"]["name"]): d
                for _, d in docs if d["kind"] == "Service"}
    for path, d in docs:
        if d["kind"] not in WORKLOADS:
            continue
        what = f"{path}: {name(d)}"
        spec = d["spec"]
        pod = spec["template"]["spec"]
        pod_labels = spec["template"].get("metadata", {}).get("labels", {})
        psc = pod.get("securityContext", {})
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            cw = f"{what} container {c['name']}"
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in res.get(kind, {}):
                        errors.append(f"{cw}: no {r} in resources.{kind}")
            sc = c.get("securityContext", {})
            non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
            uid = sc.get("runAsUser", psc.get("runAsUser"))
            if non_root is not True or uid in (None, 0):
                errors.append(f"{cw}: must run as non-root (runAsNonRoot: true, runAsUser != 0)")
            if sc.get("readOnlyRootFilesystem") is not True:
                errors.append(f"{cw}: readOnlyRootFilesystem must be true")
            if sc.get("allowPrivilegeEscalation") is not False:
                errors.append(f"{cw}: allowPrivilegeEscalation must be false")
        if d["kind"] != "StatefulSet":
            continue
        sel = spec.get("selector", {})
        if not matches(sel, pod_labels):
            errors.append(f"{what}: its selector does not select its pod template")
        terms = (pod.get("affinity", {}).get("podAntiAffinity", {})
                 .get("requiredDuringSchedulingIgnoredDuringExecution", []))
        if not any(t.get("topologyKey") == "kubernetes.io/hostname"
                   and matches(t.get("labelSelector"), pod_labels) for t in terms):
            errors.append(f"{what}: no required pod anti-affinity on kubernetes.io/hostname "
                          "selecting its own pods (two replicas of a cell could share a node)")
        ns = d["metadata"].get("namespace")
        budget = [p for p in pdbs if p["metadata"].get("namespace") == ns
                  and matches(p["spec"].get("selector"), pod_labels)]
        if not budget:
            errors.append(f"{what}: no PodDisruptionBudget selects its pods")
        for p in budget:
            mu = p["spec"].get("maxUnavailable")
            if not isinstance(mu, int) or mu > 1 or "minAvailable" in p["spec"]:
                errors.append(f"{name(p)}: must set maxUnavailable 0 or 1 (an integer), "
                              f"not {mu!r}; a cell of 3 keeps its quorum only with 2 up")
        if not spec.get("volumeClaimTemplates"):
            errors.append(f"{what}: no volumeClaimTemplates (a replica's log must outlive its pod)")
        if spec.get("podManagementPolicy") != "Parallel":
            errors.append(f"{what}: podManagementPolicy must be Parallel (with OrderedReady pod 0 "
                          "waits for a readiness only a quorum gives)")
        svc = services.get((ns, spec.get("serviceName")))
        if not svc:
            errors.append(f"{what}: serviceName {spec.get('serviceName')!r} names no Service here")
        elif svc["spec"].get("clusterIP") != "None" or not svc["spec"].get("publishNotReadyAddresses"):
            errors.append(f"{name(svc)}: must be headless (clusterIP: None) with "
                          "publishNotReadyAddresses: true")
        for c in pod.get("containers", []):
            cw = f"{what} container {c['name']}"
            ready, live = probe_key(c.get("readinessProbe")), probe_key(c.get("livenessProbe"))
            if not ready:
                errors.append(f"{cw}: no readinessProbe")
            if not live:
                errors.append(f"{cw}: no livenessProbe")
            if ready and live and ready == live:
                errors.append(f"{cw}: readiness and liveness probe the same endpoint {ready}")
    return errors


def check_kustomization(paths):
    errors = []
    dirs = {Path(p).parent for p in paths}
    for d in dirs:
        k = d / "kustomization.yaml"
        if not k.is_file():
            continue
        listed = set(yaml.safe_load(k.read_text()).get("resources", []))
        present = {p.name for p in d.glob("*.yaml")} - {"kustomization.yaml"}
        for missing in sorted(listed - present):
            errors.append(f"{k}: lists {missing}, which is not there")
        for extra in sorted(present - listed):
            errors.append(f"{k}: does not list {extra}")
    return errors


def main():
    paths = sys.argv[1:]
    if not paths:
        sys.exit("usage: check_rules.py FILE...")
    docs = load(paths)
    errors = check(docs) + check_kustomization([p for p in paths if "kustomization" not in p])
    for e in errors:
        print(f"check_rules: {e}", file=sys.stderr)
    if errors:
        print(f"check_rules: {len(errors)} rule(s) broken", file=sys.stderr)
        sys.exit(1)
    kinds = {}
    for _, d in docs:
        kinds[d["kind"]] = kinds.get(d["kind"], 0) + 1
    print("check_rules: ok (" + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) + ")")


if __name__ == "__main__":
    main()
