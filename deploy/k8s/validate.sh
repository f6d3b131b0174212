#!/usr/bin/env bash
# Offline checks of cellkv's Kubernetes manifests (no cluster, no Docker):
#
# 1. every manifest, and the Secrets secrets.sh writes, against the
#    Kubernetes API's JSON schemas (strict: unknown fields are errors), for
#    the oldest and the newest Kubernetes version we claim, with the
#    `kubernetes-validate` package from PyPI;
# 2. our own rules (check_rules.py): anti-affinity, PodDisruptionBudgets,
#    probes, resources, non-root; see that file;
# 3. when the release `cellkv-deploy` is built, that the committed files are
#    what render.py makes from it (configs from the servers' own types).
#
# kubernetes-validate goes into a venv under the cache dir the first time
# (CELLKV_K8S_VENV, default ~/.cache/cellkv-k8s-validate). Needs python3
# with venv, and PyPI the first time.
#
#   deploy/k8s/validate.sh                 # the manifests in deploy/k8s
#   deploy/k8s/validate.sh path/to/dir     # another rendering
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="$(cd "${1:-$here}" && pwd)"
venv="${CELLKV_K8S_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/cellkv-k8s-validate}"
# Pinned: a new release may ship other schemas and make CI flap.
pkg="kubernetes-validate==1.37.0"
versions=(1.30.0 1.37.0)

if ! "$venv/bin/python" -c 'import kubernetes_validate, yaml' >/dev/null 2>&1; then
    echo "== validate: installing $pkg into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$pkg"
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/cellkv-k8s-validate-XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# The Secrets as an operator would make them (fresh tokens, thrown away).
"$here/secrets.sh" --dir "$tmp/secrets" 2>/dev/null
manifests=()
for f in "$dir"/*.yaml; do
    [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
done
[ ${#manifests[@]} -gt 0 ] || { echo "validate: no manifests in $dir" >&2; exit 1; }

for v in "${versions[@]}"; do
    echo "== validate: ${#manifests[@]} files + the Secrets against Kubernetes $v (strict)"
    # --quiet prints only failures; the exit status is non-zero on any.
    "$venv/bin/kubernetes-validate" --strict --quiet -k "$v" \
        "${manifests[@]}" "$tmp/secrets/secrets.yaml"
done

echo "== validate: cellkv's own rules"
"$venv/bin/python" "$here/check_rules.py" "${manifests[@]}" "$dir/kustomization.yaml"

deploy_bin="${CARGO_TARGET_DIR:-$HOME/.cache/cellkv-target}/release/cellkv-deploy"
if [ "$dir" = "$here" ] && [ -x "$deploy_bin" ]; then
    echo "== validate: the committed files against a fresh render"
    python3 "$here/render.py" --check --deploy-bin "$deploy_bin"
else
    echo "== validate: render check skipped (no $deploy_bin, or another directory)"
fi
echo "== validate: passed"
