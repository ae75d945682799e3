#!/usr/bin/env python3
"""Helpers for tests/deploy/check.sh: Helm lint and render (through helm-python-sdk, which
embeds Helm's Go SDK as a shared library, so no `helm` binary is needed), splitting rendered
streams into per-object files for kubernetes-validate, and EventRelay-specific policy checks
that a schema cannot express (probes, shutdown timing, security, Helm/kustomize drift).

Every subcommand prints what it checks and exits non-zero on any failure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any, Iterable

import yaml

FAILURES: list[str] = []

# Kinds served by CustomResourceDefinitions: kubernetes-validate has no schema for them.
CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ["spec.selector", "spec.endpoints"],
}


def fail(msg: str) -> None:
    FAILURES.append(msg)
    print(f"  FAIL {msg}")


def ok(msg: str) -> None:
    print(f"  ok   {msg}")


def finish() -> int:
    if FAILURES:
        print(f"  {len(FAILURES)} failure(s)")
        return 1
    return 0


def dig(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(obj, dict):
            obj = obj.get(part)
        else:
            return None
    return obj


def load_docs(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def load_values(path: str | None) -> dict[str, Any] | None:
    if not path:
        return None
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: values must be a mapping")
    return data


# --------------------------------------------------------------------------- helm

def cmd_helm(args: argparse.Namespace) -> int:
    import helm_python as helm  # noqa: PLC0415 (imported late: only this subcommand needs it)

    print(f"  helm SDK {helm.helm_sdk_version()} (helm-python-sdk {helm.__version__})")
    chart_dir = args.chart
    os.makedirs(args.out, exist_ok=True)

    for case in args.case:
        name, _, values_file = case.partition("=")
        values = load_values(values_file)
        label = f"{name} ({values_file or 'chart defaults'})"

        # helm lint: findings are data; warnings and errors fail the check.
        report = helm.lint(chart_dir, values, strict=True, kube_version=args.kube_version)
        bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
        for m in report.get("messages", []):
            if m.get("severity", 0) < 2:
                print(f"       lint info: {m.get('path')}: {m.get('error')}")
        if bad or report.get("errors"):
            for m in bad:
                fail(f"helm lint {label}: {m.get('path')}: {m.get('error')}")
            for e in report.get("errors", []):
                fail(f"helm lint {label}: {e}")
        else:
            ok(f"helm lint --strict --kube-version {args.kube_version}: {label}")

        # helm template: write one stream like `helm template` prints it.
        try:
            with helm.Chart.load(chart_dir) as chart:
                rendered = chart.render(values, name=args.release, namespace=args.namespace,
                                        is_install=True)
        except helm.HelmError as e:
            fail(f"helm template {label}: {e}")
            continue
        out_path = os.path.join(args.out, f"helm-{name}.yaml")
        count = write_stream(rendered, out_path)
        if count == 0:
            fail(f"helm template {label}: rendered no objects")
        else:
            ok(f"helm template {label}: {count} objects -> {out_path}")

    # Values that must make rendering fail (the chart's own guards).
    for case in args.expect_fail:
        name, _, rest = case.partition("=")
        values_json, _, needle = rest.partition("::")
        values = json.loads(values_json)
        try:
            with helm.Chart.load(chart_dir) as chart:
                chart.render(values, name=args.release, namespace=args.namespace, is_install=True)
        except helm.HelmError as e:
            if needle in str(e):
                ok(f"helm template refuses {name}: ...{needle}...")
            else:
                fail(f"helm template {name}: failed, but not with '{needle}': {e}")
            continue
        fail(f"helm template {name}: rendered, but must fail with '{needle}'")
    return finish()


def write_stream(rendered: dict[str, str], out_path: str) -> int:
    parts = []
    count = 0
    for path in sorted(rendered):
        base = os.path.basename(path)
        if base == "NOTES.txt" or base.startswith("_") or not rendered[path].strip():
            continue
        # A template may hold several documents; emit each under its Source comment.
        for doc in re.split(r"(?m)^---[ \t]*$", rendered[path]):
            body = doc.strip("\n")
            if not yaml.safe_load(body):
                continue
            parts.append(f"---\n# Source: {path}\n{body}\n")
            count += 1
    with open(out_path, "w", encoding="utf-8") as f:
        f.write("".join(parts))
    return count


# --------------------------------------------------------------------------- split

def cmd_split(args: argparse.Namespace) -> int:
    """Write each object of the given streams to its own file under --out (for
    kubernetes-validate); CRD kinds are checked structurally here and skipped there."""
    os.makedirs(args.out, exist_ok=True)
    for path in args.files:
        stream = os.path.basename(path)
        stem = os.path.splitext(stream)[0]
        try:
            docs = load_docs(path)
        except yaml.YAMLError as e:
            fail(f"{stream}: not valid YAML: {e}")
            continue
        if not docs:
            fail(f"{stream}: no objects")
        for i, doc in enumerate(docs):
            if not isinstance(doc, dict):
                fail(f"{stream} document {i}: not a mapping")
                continue
            api, kind = doc.get("apiVersion"), doc.get("kind")
            name = dig(doc, "metadata.name")
            if not (api and kind and name):
                fail(f"{stream} document {i}: needs apiVersion, kind and metadata.name")
                continue
            if (api, kind) in CRD_KINDS:
                missing = [p for p in CRD_KINDS[(api, kind)] if not dig(doc, p)]
                if missing:
                    fail(f"{stream}: {kind}/{name}: missing {', '.join(missing)}")
                else:
                    print(f"  SKIP {stream}: {kind}/{name} is a custom resource ({api}); no "
                          f"offline schema, checked for {', '.join(CRD_KINDS[(api, kind)])} only")
                continue
            out = os.path.join(args.out, f"{stem}--{i:02d}-{kind.lower()}-{name}.yaml")
            with open(out, "w", encoding="utf-8") as f:
                yaml.safe_dump(doc, f, sort_keys=False)
    return finish()


# --------------------------------------------------------------------------- policy

def pod_specs(docs: Iterable[dict[str, Any]]):
    for d in docs:
        if d.get("kind") in ("Deployment", "Job"):
            yield d, dig(d, "spec.template.spec") or {}


def env_map(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env", []) or []}


def cmd_policy(args: argparse.Namespace) -> int:
    """EventRelay's deployment rules, on every rendered stream."""
    for path in args.files:
        docs = load_docs(path)
        stream = os.path.basename(path)
        kinds = {d.get("kind") for d in docs}
        print(f"  {stream}: {', '.join(sorted(k for k in kinds if k))}")
        for need in args.require.split(","):
            if need not in kinds:
                fail(f"{stream}: no {need}")
        for d in docs:
            if d.get("kind") == "Service":
                check_service(stream, d)
        for d, spec in pod_specs(docs):
            check_pod(stream, d, spec)
        check_references(stream, docs)
    return finish()


def selects(selector: dict[str, Any] | None, labels: dict[str, Any]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_references(stream: str, docs: list[dict[str, Any]]) -> None:
    """Selectors and names that tie the objects together must actually match."""
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        by_kind.setdefault(d.get("kind", ""), []).append(d)
    deployments = by_kind.get("Deployment", [])
    before = len(FAILURES)
    for dep in deployments:
        name = dig(dep, "metadata.name")
        pod_labels = dig(dep, "spec.template.metadata.labels") or {}
        if not selects(dig(dep, "spec.selector.matchLabels"), pod_labels):
            fail(f"{stream}: Deployment/{name}: selector does not match its pod labels")
        sa = dig(dep, "spec.template.spec.serviceAccountName")
        sas = [dig(x, "metadata.name") for x in by_kind.get("ServiceAccount", [])]
        if sas and sa not in sas:
            fail(f"{stream}: Deployment/{name}: serviceAccountName {sa} is not in {sas}")
        for svc in by_kind.get("Service", []):
            if not selects(dig(svc, "spec.selector"), pod_labels):
                fail(f"{stream}: Service/{dig(svc, 'metadata.name')} does not select the pods")
        for pdb in by_kind.get("PodDisruptionBudget", []):
            if not selects(dig(pdb, "spec.selector.matchLabels"), pod_labels):
                fail(f"{stream}: PDB/{dig(pdb, 'metadata.name')} does not select the pods")
        for hpa in by_kind.get("HorizontalPodAutoscaler", []):
            if dig(hpa, "spec.scaleTargetRef.name") != name:
                fail(f"{stream}: HPA/{dig(hpa, 'metadata.name')} does not target {name}")
            if dig(dep, "spec.replicas") is not None:
                fail(f"{stream}: Deployment/{name} sets replicas although an HPA owns them")
    for sm in by_kind.get("ServiceMonitor", []):
        if any(e.get("port") != "metrics" for e in dig(sm, "spec.endpoints") or []):
            fail(f"{stream}: ServiceMonitor/{dig(sm, 'metadata.name')} must scrape port metrics")
        svc_labels = [dig(s, "metadata.labels") or {} for s in by_kind.get("Service", [])]
        if not any(selects(dig(sm, "spec.selector.matchLabels"), ls) for ls in svc_labels):
            fail(f"{stream}: ServiceMonitor/{dig(sm, 'metadata.name')} selects no Service")
    for ing in by_kind.get("Ingress", []):
        svcs = {dig(s, "metadata.name") for s in by_kind.get("Service", [])}
        for rule in dig(ing, "spec.rules") or []:
            for path in dig(rule, "http.paths") or []:
                if dig(path, "backend.service.name") not in svcs:
                    fail(f"{stream}: Ingress/{dig(ing, 'metadata.name')} points at no Service")
                if dig(path, "backend.service.port.name") not in ("http", "grpc"):
                    fail(f"{stream}: Ingress/{dig(ing, 'metadata.name')} must send to http "
                         "or grpc, never metrics")
    if len(FAILURES) == before and deployments:
        ok(f"{stream}: selectors, ServiceAccount, HPA target and backends match the pods")


def check_service(stream: str, svc: dict[str, Any]) -> None:
    name = dig(svc, "metadata.name")
    ports = {p.get("name"): p for p in dig(svc, "spec.ports") or []}
    where = f"{stream}: Service/{name}"
    if dig(ports, "grpc.port") != 50051 or dig(ports, "grpc.appProtocol") != "grpc":
        fail(f"{where}: needs port grpc 50051 with appProtocol grpc")
    if dig(ports, "http.port") != 9000:
        fail(f"{where}: needs port http 9000")
    if dig(svc, "spec.sessionAffinity") not in (None, "None"):
        fail(f"{where}: sessionAffinity should be None (nodes are stateless)")
    if not dig(svc, "spec.selector"):
        fail(f"{where}: no selector")
    else:
        ok(f"{where}: grpc 50051 (appProtocol grpc), http 9000, no affinity")


def check_pod(stream: str, obj: dict[str, Any], spec: dict[str, Any]) -> None:
    kind, name = obj["kind"], dig(obj, "metadata.name")
    where = f"{stream}: {kind}/{name}"
    errors_before = len(FAILURES)
    psc = spec.get("securityContext") or {}
    if psc.get("runAsNonRoot") is not True:
        fail(f"{where}: pod securityContext.runAsNonRoot must be true")
    if dig(psc, "seccompProfile.type") != "RuntimeDefault":
        fail(f"{where}: pod seccompProfile must be RuntimeDefault")
    if spec.get("automountServiceAccountToken") is not False:
        fail(f"{where}: automountServiceAccountToken must be false")
    tmp_volumes = {v["name"] for v in spec.get("volumes", []) or [] if "emptyDir" in v}
    containers = spec.get("containers") or []
    if not containers:
        fail(f"{where}: no containers")
    for c in containers:
        cw = f"{where} container {c.get('name')}"
        sc = c.get("securityContext") or {}
        if sc.get("readOnlyRootFilesystem") is not True:
            fail(f"{cw}: readOnlyRootFilesystem must be true")
        if sc.get("allowPrivilegeEscalation") is not False:
            fail(f"{cw}: allowPrivilegeEscalation must be false")
        if "ALL" not in (dig(sc, "capabilities.drop") or []):
            fail(f"{cw}: must drop ALL capabilities")
        if sc.get("privileged"):
            fail(f"{cw}: must not be privileged")
        if sc.get("runAsNonRoot") is False or sc.get("runAsUser") == 0:
            fail(f"{cw}: must not run as root")
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", []) or []}
        if mounts.get("/tmp") not in tmp_volumes:
            fail(f"{cw}: /tmp must be an emptyDir (the only writable path)")
        if not dig(c, "resources.requests"):
            fail(f"{cw}: needs resource requests")
        env = env_map(c)
        db = env.get("DATABASE_URL")
        if not dig(db, "valueFrom.secretKeyRef.name"):
            fail(f"{cw}: DATABASE_URL must come from a Secret")
        if dig(env.get("ER_NODE_NAME"), "valueFrom.fieldRef.fieldPath") != "metadata.name":
            fail(f"{cw}: ER_NODE_NAME must come from metadata.name")
        for var, e in env.items():
            if var in ("DATABASE_URL", "REDIS_URL", "ER_JWT_SECRET") and "value" in e:
                fail(f"{cw}: {var} must not be a plain value")
        if kind == "Deployment":
            check_node_container(cw, spec, c, env)
    if kind == "Deployment":
        strategy = dig(obj, "spec.strategy.rollingUpdate") or {}
        if str(strategy.get("maxUnavailable")) != "0" or str(strategy.get("maxSurge")) != "1":
            fail(f"{where}: rolling update must be maxUnavailable 0 / maxSurge 1")
        if not (spec.get("topologySpreadConstraints") or spec.get("affinity")):
            fail(f"{where}: needs topology spread or anti-affinity across nodes")
    if len(FAILURES) == errors_before:
        what = "probes, drain timing, " if kind == "Deployment" else ""
        ok(f"{where}: {what}non-root, read-only root, /tmp emptyDir, caps dropped, seccomp, "
           "secrets from Secret")


def check_node_container(cw: str, spec: dict[str, Any], c: dict[str, Any],
                         env: dict[str, Any]) -> None:
    if dig(c, "readinessProbe.httpGet.path") != "/readyz":
        fail(f"{cw}: readiness probe must be GET /readyz")
    if dig(c, "livenessProbe.httpGet.path") != "/healthz":
        fail(f"{cw}: liveness probe must be GET /healthz")
    if not c.get("startupProbe"):
        fail(f"{cw}: needs a startup probe")
    for var in ("DATABASE_URL", "ER_JWT_SECRET"):
        ref = dig(env.get(var), "valueFrom.secretKeyRef")
        if not ref:
            fail(f"{cw}: {var} must come from a Secret")
        elif ref.get("optional"):
            fail(f"{cw}: {var} must not be optional (a missing key must stop the pod)")
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", []) or []}
    if ports.get("grpc") != 50051 or ports.get("http") != 9000:
        fail(f"{cw}: ports must be grpc 50051 and http 9000")
    metrics_addr = dig(env.get("ER_METRICS_ADDR"), "value") or ""
    if not ports.get("metrics") or not metrics_addr.endswith(f":{ports.get('metrics')}"):
        fail(f"{cw}: /metrics must be served on its own port (ER_METRICS_ADDR, port metrics)")
    grace = int(dig(env.get("ER_SHUTDOWN_GRACE_SECONDS"), "value") or 25)
    pre = dig(c, "lifecycle.preStop") or {}
    sleep = 0
    if "sleep" in pre:
        sleep = int(dig(pre, "sleep.seconds") or 0)
    elif "exec" in pre:
        cmd = dig(pre, "exec.command") or []
        if len(cmd) == 2 and cmd[0].endswith("sleep"):
            sleep = int(cmd[1])
    if sleep <= 0:
        fail(f"{cw}: needs a preStop sleep so load balancers stop sending before the drain")
    tgp = spec.get("terminationGracePeriodSeconds")
    if tgp is None or int(tgp) <= grace + sleep:
        fail(f"{cw}: terminationGracePeriodSeconds ({tgp}) must exceed preStop sleep ({sleep}) "
             f"+ ER_SHUTDOWN_GRACE_SECONDS ({grace})")


# --------------------------------------------------------------------------- drift

DRIFT_FIELDS = [
    "spec.strategy", "spec.minReadySeconds",
    "spec.template.spec.securityContext",
    "spec.template.spec.terminationGracePeriodSeconds",
    "spec.template.spec.automountServiceAccountToken",
    "spec.template.spec.volumes",
]
CONTAINER_FIELDS = ["args", "ports", "startupProbe", "readinessProbe", "livenessProbe",
                    "lifecycle", "resources", "securityContext", "volumeMounts"]


def normalize_env(c: dict[str, Any]) -> list[Any]:
    out = []
    for e in c.get("env", []) or []:
        e = json.loads(json.dumps(e))
        ref = dig(e, "valueFrom.secretKeyRef")
        if ref:
            ref.pop("name", None)  # the Secret's name differs by design
        out.append(e)
    return out


def cmd_drift(args: argparse.Namespace) -> int:
    """The kustomize base must match the chart's default rendering where it matters."""
    def deployment(path: str) -> dict[str, Any]:
        ds = [d for d in load_docs(path) if d.get("kind") == "Deployment"]
        if len(ds) != 1:
            raise SystemExit(f"{path}: expected one Deployment, found {len(ds)}")
        return ds[0]

    h, k = deployment(args.helm), deployment(args.kustomize)
    for field in DRIFT_FIELDS:
        if dig(h, field) != dig(k, field):
            fail(f"{field} differs: helm {dig(h, field)!r} vs kustomize {dig(k, field)!r}")
    hc = dig(h, "spec.template.spec.containers")[0]
    kc = dig(k, "spec.template.spec.containers")[0]
    for field in CONTAINER_FIELDS:
        if hc.get(field) != kc.get(field):
            fail(f"container {field} differs: helm {hc.get(field)!r} vs kustomize "
                 f"{kc.get(field)!r}")
    if normalize_env(hc) != normalize_env(kc):
        fail("container env differs between helm and kustomize")
    if not FAILURES:
        ok("kustomize base Deployment matches the chart's defaults (probes, preStop, grace, "
           "security, resources, env, strategy)")
    return finish()


# --------------------------------------------------------------------------- Dockerfile

# What the build needs from the context (Cargo.toml names the test path and the workspace's
# other members, whose manifests and targets Cargo reads even to build only the server).
BUILD_INPUTS = ["Cargo.toml", "Cargo.lock", "build.rs", "proto/event_relay.proto",
                "migrations/0001_init.sql", "src/main.rs", "src/lib.rs", "tests/it/main.rs",
                "loadtest/Cargo.toml", "loadtest/loadgen.rs", "tests/support/Cargo.toml",
                "tests/support/src/lib.rs"]
# What the context must leave out (size, secrets).
NOT_IN_CONTEXT = ["target/release/eventrelay", ".git/config"]


def dockerfile_instructions(path: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if line.lstrip().startswith("#"):
                continue
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            full = (pending + line).strip()
            pending = ""
            if full:
                word, _, rest = full.partition(" ")
                out.append((word.upper(), rest.strip()))
    return out


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes; a pattern matching a
    parent directory excludes everything below it; `**` spans directories."""
    def to_regex(pat: str) -> re.Pattern[str]:
        pat = pat.strip("/")
        rx = ""
        i = 0
        while i < len(pat):
            if pat.startswith("**/", i):
                rx += "(?:.*/)?"
                i += 3
            elif pat.startswith("**", i):
                rx += ".*"
                i += 2
            elif pat[i] == "*":
                rx += "[^/]*"
                i += 1
            elif pat[i] == "?":
                rx += "[^/]"
                i += 1
            else:
                rx += re.escape(pat[i])
                i += 1
        return re.compile(rx + "$")

    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pat in patterns:
        negate = pat.startswith("!")
        rx = to_regex(pat[1:] if negate else pat)
        if any(rx.match(c) for c in candidates):
            excluded = not negate
    return excluded


def cmd_dockerfile(args: argparse.Namespace) -> int:
    ins = dockerfile_instructions(args.dockerfile)
    args_defaults = {}
    for word, rest in ins:
        if word == "ARG" and "=" in rest:
            k, _, v = rest.partition("=")
            args_defaults[k.strip()] = v.strip()

    def expand(s: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: args_defaults.get(m.group(1), m.group(0)), s)

    froms = [expand(rest) for word, rest in ins if word == "FROM"]
    stages = []
    for word, rest in ins:
        if word == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((word, expand(rest)))
    if len(froms) < 2:
        fail("Dockerfile: needs a multi-stage build (builder and runtime)")
        return finish()
    builder_image = froms[0].split()[0]
    runtime_image = froms[-1].split()[0]
    if not re.fullmatch(r"rust:[0-9.]+-bookworm", builder_image):
        fail(f"Dockerfile: builder should be rust:<version>-bookworm, is {builder_image}")
    if not (runtime_image == "debian:bookworm-slim"
            or runtime_image.startswith("gcr.io/distroless/cc")):
        fail(f"Dockerfile: runtime should be debian:bookworm-slim or distroless/cc, is "
             f"{runtime_image}")
    builds = [rest for word, rest in stages[0] if word == "RUN" and "cargo build" in rest]
    if not builds:
        fail("Dockerfile: the builder stage runs no cargo build")
    else:
        b = builds[0]
        for need in ("--release", "--bin eventrelay", "--locked", "type=cache"):
            if need not in b:
                fail(f"Dockerfile: cargo build step lacks {need}")
    final = stages[-1]
    users = [rest for word, rest in final if word == "USER"]
    if not users or users[-1].split(":")[0] != "10001":
        fail(f"Dockerfile: runtime USER must be 10001, is {users[-1] if users else 'unset'}")
    exposed = " ".join(rest for word, rest in final if word == "EXPOSE").split()
    for port in ("50051", "9000", "9090"):
        if port not in exposed:
            fail(f"Dockerfile: EXPOSE lacks {port}")
    entry = [rest for word, rest in final if word == "ENTRYPOINT"]
    cmd = [rest for word, rest in final if word == "CMD"]
    if not entry or json.loads(entry[-1]) != ["eventrelay"]:
        fail('Dockerfile: ENTRYPOINT must be ["eventrelay"]')
    if not cmd or json.loads(cmd[-1]) != ["serve"]:
        fail('Dockerfile: CMD must be ["serve"]')
    copies = [rest for word, rest in final if word == "COPY"]
    if not any("--from=builder" in c and "eventrelay" in c for c in copies):
        fail("Dockerfile: runtime must copy the binary from the builder")
    if len(copies) != 1:
        fail(f"Dockerfile: runtime should copy only the binary, copies {copies}")
    if runtime_image.startswith("debian") and not any(
            word == "RUN" and "ca-certificates" in rest for word, rest in final):
        fail("Dockerfile: runtime must install ca-certificates")

    with open(args.dockerignore, encoding="utf-8") as f:
        patterns = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
    for p in BUILD_INPUTS:
        if dockerignore_excludes(patterns, p):
            fail(f".dockerignore excludes {p}, which the build needs")
    for p in NOT_IN_CONTEXT:
        if not dockerignore_excludes(patterns, p):
            fail(f".dockerignore lets {p} into the build context")
    if not FAILURES:
        ok(f"Dockerfile: {builder_image} -> {runtime_image}, cache mounts, USER {users[-1]}, "
           f"EXPOSE {' '.join(exposed)}, ENTRYPOINT {entry[-1]} CMD {cmd[-1]}")
        ok(".dockerignore: keeps the crate's inputs, leaves out target/ and .git/")
    return finish()


# --------------------------------------------------------------------------- kustomization

def cmd_kresources(args: argparse.Namespace) -> int:
    """Check a kustomization's resources and write their paths (one a line) to --out."""
    base = os.path.dirname(args.kustomization)
    with open(args.kustomization, encoding="utf-8") as f:
        k = yaml.safe_load(f) or {}
    resources = k.get("resources") or []
    for r in resources:
        if not os.path.isfile(os.path.join(base, r)):
            fail(f"{args.kustomization}: resource {r} does not exist")
    if any(os.path.basename(r).startswith("secret.example") for r in resources):
        fail(f"{args.kustomization}: secret.example.yaml must not be a resource")
    with open(args.out, "w", encoding="utf-8") as f:
        for r in resources:
            f.write(os.path.join(base, r) + "\n")
    if not FAILURES:
        ok(f"{args.kustomization}: {len(resources)} resources exist; secret.example.yaml is "
           "not one of them")
    return finish()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    h = sub.add_parser("helm", help="lint and render the chart for each values case")
    h.add_argument("--chart", required=True)
    h.add_argument("--out", required=True)
    h.add_argument("--release", default="er")
    h.add_argument("--namespace", default="eventrelay")
    h.add_argument("--kube-version", default="v1.30.0")
    h.add_argument("--case", action="append", default=[], help="NAME=VALUES_FILE (or NAME=)")
    h.add_argument("--expect-fail", action="append", default=[],
                   help="NAME=VALUES_JSON::SUBSTRING of the expected error")
    h.set_defaults(func=cmd_helm)

    s = sub.add_parser("split", help="one file per object; CRD kinds checked and skipped")
    s.add_argument("--out", required=True)
    s.add_argument("files", nargs="+")
    s.set_defaults(func=cmd_split)

    po = sub.add_parser("policy", help="EventRelay deployment rules")
    po.add_argument("--require", default="Deployment,Service",
                    help="comma-separated kinds every stream must contain")
    po.add_argument("files", nargs="+")
    po.set_defaults(func=cmd_policy)

    d = sub.add_parser("drift", help="kustomize base vs chart defaults")
    d.add_argument("--helm", required=True)
    d.add_argument("--kustomize", required=True)
    d.set_defaults(func=cmd_drift)

    df = sub.add_parser("dockerfile", help="static checks of the Dockerfile and .dockerignore")
    df.add_argument("dockerfile")
    df.add_argument("dockerignore")
    df.set_defaults(func=cmd_dockerfile)

    kr = sub.add_parser("kresources", help="list and check a kustomization's resources")
    kr.add_argument("--out", required=True, help="file to write the resource paths to")
    kr.add_argument("kustomization")
    kr.set_defaults(func=cmd_kresources)

    args = p.parse_args()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
