#!/usr/bin/env bash
# Checks EventRelay's deployment files offline: the Dockerfile and .dockerignore, the Helm
# chart (helm/eventrelay: lint, and render with default values, with every optional part
# switched on, and with the other branches), the kustomize base (k8s/base), schema
# validation of every rendered object (kubernetes-validate, strict, offline), yamllint, and
# EventRelay's own rules (probes, drain timing, security, selectors, Helm/kustomize drift).
#
# Usage: tests/deploy/check.sh            (from anywhere; no cluster, no Docker, no network
#                                          once the Python tools are installed)
# Env:   KUBE_VERSIONS="1.30.0 1.33.0"     Kubernetes versions to validate against
#        PYTHON=python3                   interpreter holding the tools
#        KEEP_WORK=1                      keep the rendered manifests (path printed)
# Exit:  0 when everything passes, 1 when any check fails.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
KUBE_VERSIONS=${KUBE_VERSIONS:-"1.30.0 1.33.0"}
HELM_KUBE_VERSION=v1.30.0
HELPER=tests/deploy/deploy_check.py
CHART=helm/eventrelay
START=$(date +%s)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/eventrelay-deploy-check.XXXXXX")
cleanup() {
    if [[ "${KEEP_WORK:-}" == 1 ]]; then
        echo "rendered manifests kept in $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

FAILED=()
section() { printf '\n== %s\n' "$*"; }
# check DESCRIPTION CMD...: run CMD, record DESCRIPTION as failed when it exits non-zero.
check() {
    local desc=$1
    shift
    if "$@"; then
        echo "  passed: $desc"
        return 0
    fi
    FAILED+=("$desc")
    echo "  FAIL: $desc"
}

section "tools"
if ! "$PY" -c 'import helm_python, kubernetes_validate, yamllint, yaml' 2>/dev/null; then
    echo "  installing helm-python-sdk, kubernetes-validate, yamllint with pip"
    PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install --quiet --disable-pip-version-check \
        'helm-python-sdk>=0.2.2,<0.3' 'kubernetes-validate>=1.30' 'yamllint>=1.35'
fi
"$PY" - <<'EOF'
import importlib.metadata as m
for p in ("helm-python-sdk", "kubernetes-validate", "yamllint"):
    print(f"  {p} {m.version(p)}")
EOF
KUSTOMIZE=()
if command -v kustomize >/dev/null 2>&1; then
    KUSTOMIZE=(kustomize build)
elif command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
    KUSTOMIZE=(kubectl kustomize)
fi
if ((${#KUSTOMIZE[@]})); then
    echo "  kustomize: ${KUSTOMIZE[*]}"
else
    echo "  kustomize: not found (neither kustomize nor kubectl); k8s/base files are validated one by one"
fi

section "Dockerfile and .dockerignore"
check "Dockerfile" "$PY" "$HELPER" dockerfile Dockerfile .dockerignore

section "yamllint: source YAML (.yamllint.yaml; Helm templates excluded, their output is linted below)"
check "yamllint sources" "$PY" -m yamllint --strict -c .yamllint.yaml \
    .yamllint.yaml "$CHART" k8s tests/deploy

section "Helm: lint and render (helm-python-sdk, kube $HELM_KUBE_VERSION)"
check "helm lint/template" "$PY" "$HELPER" helm --chart "$CHART" --out "$WORK" \
    --kube-version "$HELM_KUBE_VERSION" \
    --case default= \
    --case all=tests/deploy/values-all.yaml \
    --case variant=tests/deploy/values-variant.yaml \
    --expect-fail 'short-grace={"terminationGracePeriodSeconds":20}::must exceed' \
    --expect-fail 'bad-prestop-mode={"preStop":{"mode":"bash"}}::preStop.mode' \
    --expect-fail 'short-jwt={"secret":{"jwtSecret":"short-but-not-32-characters"}}::at least 32' \
    --expect-fail 'migration-without-db={"migrationJob":{"enabled":true}}::needs secret.databaseUrl'

section "kustomize: k8s/base"
check "k8s/base resources" "$PY" "$HELPER" kresources --out "$WORK/kbase-files.txt" \
    k8s/base/kustomization.yaml
if ((${#KUSTOMIZE[@]})); then
    if "${KUSTOMIZE[@]}" k8s/base >"$WORK/kbase.yaml"; then
        echo "  ok   ${KUSTOMIZE[*]} k8s/base -> $(grep -c '^kind:' "$WORK/kbase.yaml") objects"
    else
        FAILED+=("kustomize build k8s/base")
        echo "  FAIL: ${KUSTOMIZE[*]} k8s/base"
    fi
    # The overlay docs/deploy.md shows (namespace, image, Secret from a secretGenerator),
    # beside a copy of the base: kustomize refuses absolute resource paths.
    mkdir -p "$WORK/k8s/overlays/example"
    cp -R k8s/base "$WORK/k8s/base"
    cat >"$WORK/k8s/overlays/example/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: eventrelay
resources:
  - ../../base
images:
  - name: eventrelay
    newName: registry.example.com/eventrelay
    newTag: "0.1.0"
secretGenerator:
  - name: eventrelay
    envs:
      - secret.env
EOF
    printf 'DATABASE_URL=postgres://eventrelay:pw@postgres:5432/eventrelay\nER_JWT_SECRET=0123456789abcdef0123456789abcdef\n' \
        >"$WORK/k8s/overlays/example/secret.env"
    if "${KUSTOMIZE[@]}" "$WORK/k8s/overlays/example" >"$WORK/koverlay.yaml" &&
        grep -q 'image: registry.example.com/eventrelay:0.1.0' "$WORK/koverlay.yaml" &&
        grep -Eq 'name: eventrelay-[a-z0-9]{10}$' "$WORK/koverlay.yaml"; then
        echo "  ok   example overlay (docs/deploy.md): image pinned, generated Secret referenced by hash"
    else
        FAILED+=("kustomize example overlay")
        echo "  FAIL: example overlay from docs/deploy.md"
        rm -f "$WORK/koverlay.yaml"
    fi
else
    # No kustomize: the base's files are plain manifests; take them as they are.
    : >"$WORK/kbase.yaml"
    while read -r f; do
        { echo "---"; cat "$f"; } >>"$WORK/kbase.yaml"
    done <"$WORK/kbase-files.txt"
    echo "  k8s/base files concatenated as they are (no kustomize transforms applied)"
fi
# Validated below with the rest, though it is never applied by the base.
{ echo "---"; cat k8s/base/secret.example.yaml; } >"$WORK/kexample-secret.yaml"

STREAMS=("$WORK"/helm-*.yaml "$WORK"/kbase.yaml "$WORK"/kexample-secret.yaml)
if [[ -s "$WORK/koverlay.yaml" ]]; then STREAMS+=("$WORK/koverlay.yaml"); fi

section "kubernetes-validate --strict (offline schemas; Kubernetes $KUBE_VERSIONS)"
check "split rendered manifests" "$PY" "$HELPER" split --out "$WORK/objects" "${STREAMS[@]}"
if compgen -G "$WORK/objects/*.yaml" >/dev/null; then
    KV_ARGS=()
    for v in $KUBE_VERSIONS; do KV_ARGS+=(-k "$v"); done
    set +e
    "$PY" -m kubernetes_validate --strict --quiet "${KV_ARGS[@]}" "$WORK"/objects/*.yaml \
        >"$WORK/kv.log" 2>&1
    kv_rc=$?
    set -e
    sed "s|$WORK/objects/||; s|^|  |" "$WORK/kv.log"
    n_objects=$(find "$WORK/objects" -name '*.yaml' | wc -l)
    # A missing schema (unknown kind or apiVersion) is only a WARN there: fail on it here.
    if ((kv_rc != 0)) || grep -Eq '^(WARN|ERROR|FATAL)' "$WORK/kv.log"; then
        FAILED+=("kubernetes-validate")
        echo "  FAIL: kubernetes-validate (rc $kv_rc)"
    else
        echo "  passed: $n_objects objects valid against Kubernetes $KUBE_VERSIONS (strict: no unknown fields)"
    fi
fi

section "yamllint: rendered output"
check "yamllint rendered" "$PY" -m yamllint --strict -c .yamllint.yaml "${STREAMS[@]}"

section "EventRelay rules: probes, drain timing, security, selectors"
check "policy: chart defaults and kustomize base" "$PY" "$HELPER" policy \
    --require Deployment,Service,ServiceAccount,PodDisruptionBudget \
    "$WORK/helm-default.yaml" "$WORK/kbase.yaml"
check "policy: all options" "$PY" "$HELPER" policy \
    --require Deployment,Service,ServiceAccount,PodDisruptionBudget,HorizontalPodAutoscaler,Ingress,ServiceMonitor,Job,Secret \
    "$WORK/helm-all.yaml"
check "policy: variant" "$PY" "$HELPER" policy --require Deployment,Service,Job \
    "$WORK/helm-variant.yaml"

section "drift: kustomize base vs chart defaults"
check "drift" "$PY" "$HELPER" drift --helm "$WORK/helm-default.yaml" --kustomize "$WORK/kbase.yaml"

ELAPSED=$(($(date +%s) - START))
echo
if ((${#FAILED[@]})); then
    echo "deploy checks FAILED (${ELAPSED}s):"
    printf '  - %s\n' "${FAILED[@]}"
    exit 1
fi
echo "deploy checks passed (${ELAPSED}s)"
