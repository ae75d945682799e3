#!/usr/bin/env python3
"""Durable publishing measured from outside: real node processes driven by h2load, set beside
pgbench doing the same rows' plain INSERTs on the same Postgres, in turns (ABCCBA slices).

Each node under test (one or more `eventrelay` binaries, named on the command line) runs as its
own process against a fresh database. h2load sends PublishEvents (gRPC over h2c: a 0x00 byte,
a 4-byte big-endian length, the protobuf PublishEventsRequest) with a fixed number of requests
in flight. h2load does not read grpc-status, so a slice's figure is what was stored: the
growth of max("offset") of the slice's tables over the measured seconds. The raw baselines run
pgbench scripts writing the same rows into tables made LIKE the topic's events table.

Scenarios (see loadtest/h2load/README.md):
  one     1 topic, 50 requests in flight, 1 event each      vs pgbench: 50 clients, 1 INSERT/txn
  hundred 1 topic, 50 requests in flight, 100 events each   vs pgbench: 50 clients, 100-row INSERT
  t10     10 topics, one 1-event request in flight on each  vs 10 pgbench clients over 10 tables
  t50     50 topics, one 1-event request in flight on each  vs 50 pgbench clients over 50 tables

Usage: bench.py [--node LABEL=PATH[,VAR=VALUE...] ...] [--scenarios one,hundred,t10,t50] [--seconds 8]
Needs h2load (Debian: nghttp2-client), pgbench and psql, and Postgres on --admin-url.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

# ------------------------------------------------------------------------------------------
# Protobuf, by hand: only the messages this bench sends.


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(num, payload):
    """A length-delimited field (strings, bytes, messages)."""
    if isinstance(payload, str):
        payload = payload.encode()
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def new_event(worker, seq):
    """The event er-loadgen sends (loadtest/loadgen/scenarios.rs `new_event`)."""
    data = (
        '{"order_id":%d,"customer":"c%d","amount_cents":1999,"currency":"EUR",'
        '"items":[{"sku":"sku-1","qty":2}]}' % (seq, worker)
    )
    context_entry = field(1, "ip_address") + field(2, "127.0.0.1")
    return (
        field(1, "order.created")
        + field(2, data)
        + field(3, "er-h2load")
        + field(6, "w%d-%d" % (worker, seq))
        + field(7, "user-%d" % worker)
        + field(10, context_entry)
    )


def grpc_frame(message):
    return b"\x00" + len(message).to_bytes(4, "big") + message


def publish_body(topic, events):
    msg = field(1, topic)
    for i in range(events):
        msg += field(2, new_event(0, i))
    msg += varint(3 << 3 | 0) + varint(1)  # durable = true
    return grpc_frame(msg)


# ------------------------------------------------------------------------------------------
# Postgres.


def psql(url, sql):
    out = subprocess.run(
        ["psql", url, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def db_url(admin_url, db):
    return re.sub(r"/[^/]*$", "/" + db, admin_url)


def max_offsets(url, tables):
    """Sum of max("offset") over `tables` (index-only: cheap while the load runs)."""
    parts = " + ".join(
        '(SELECT coalesce(max("offset"), 0) FROM "%s")' % t for t in tables
    )
    return int(psql(url, "SELECT " + parts))


RAW_ONE = """\\set n random(1, 1000000000)
INSERT INTO "{table}" ("offset", id, name, data, source, trace_key, user_id, occurred_at, context)
VALUES (nextval('"{table}_seq"'), gen_random_uuid(), 'order.created',
        ('{{"order_id":' || :n || ',"customer":"c0","amount_cents":1999,"currency":"EUR","items":[{{"sku":"sku-1","qty":2}}]}}')::jsonb,
        'er-h2load', 'w0-' || :n, 'user-0', now(), '{{"ip_address": "127.0.0.1"}}'::jsonb);
"""

RAW_HUNDRED = """\\set n random(1, 1000000000)
INSERT INTO "{table}" ("offset", id, name, data, source, trace_key, user_id, occurred_at, context)
SELECT nextval('"{table}_seq"'), gen_random_uuid(), 'order.created',
       ('{{"order_id":' || (:n + g) || ',"customer":"c0","amount_cents":1999,"currency":"EUR","items":[{{"sku":"sku-1","qty":2}}]}}')::jsonb,
       'er-h2load', 'w0-' || g, 'user-0', now(), '{{"ip_address": "127.0.0.1"}}'::jsonb
FROM generate_series(1, 100) g;
"""


# ------------------------------------------------------------------------------------------
# Nodes.


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """One `eventrelay` process against a fresh database."""

    def __init__(self, label, binary, admin_url, workdir, env=()):
        self.label = label
        self.binary = binary
        self.db = "er_bench_h2_%s_%s" % (label, uuid.uuid4().hex[:8])
        psql(admin_url, 'CREATE DATABASE "%s"' % self.db)
        self.url = db_url(admin_url, self.db)
        self.grpc = free_port()
        self.http = free_port()
        self.env = dict(
            os.environ,
            DATABASE_URL=self.url,
            ER_GRPC_ADDR="127.0.0.1:%d" % self.grpc,
            ER_HTTP_ADDR="127.0.0.1:%d" % self.http,
            ER_NODE_NAME="h2load-" + label,
            ER_CLUSTER_NAME="h2load-" + self.db,
            ER_RATE_LIMIT_DURABLE_PUBLISH_PER_SECOND="0",
            ER_LOG_FORMAT="text",
            RUST_LOG="warn",
        )
        self.env.update(env)
        out = subprocess.run(
            [binary, "api-key", "create", "--type", "admin", "--name", "h2load"],
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        )
        self.token = json.loads(out.stdout.strip().splitlines()[-1])["bearer_token"]
        self.log = open(os.path.join(workdir, "node-%s.log" % label), "w")
        self.proc = subprocess.Popen(
            [binary], env=self.env, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(
                    "http://127.0.0.1:%d/readyz" % self.http, timeout=1
                ) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("node %s did not become ready" % label)
            time.sleep(0.2)

    def create_topic(self, name):
        body = grpc_frame(field(1, name))
        out = subprocess.run(
            [
                "curl", "-s", "-o", "/dev/null", "-D", "-", "--http2-prior-knowledge",
                "-H", "content-type: application/grpc", "-H", "te: trailers",
                "-H", "authorization: Bearer " + self.token,
                "--data-binary", "@-",
                "http://127.0.0.1:%d/eventrelay.EventRelay/CreateTopic" % self.grpc,
            ],
            input=body,
            capture_output=True,
            check=True,
        )
        text = out.stdout.decode(errors="replace")
        if "grpc-status: 0" not in text:
            raise RuntimeError("CreateTopic %s failed: %s" % (name, text))

    def stop(self, admin_url):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        psql(admin_url, 'DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % self.db)


# ------------------------------------------------------------------------------------------
# Scenarios and slices.

SCENARIOS = {
    # name: (topics, events per request, h2load connections, streams per connection)
    "one": (1, 1, 5, 10),
    "hundred": (1, 100, 5, 10),
    "t10": (10, 1, 1, 1),
    "t50": (50, 1, 1, 1),
}


def topics_of(scenario):
    n = SCENARIOS[scenario][0]
    return [scenario] if n == 1 else ["%s_%d" % (scenario, i) for i in range(n)]


def run_length(warmup, seconds):
    """Whole seconds the load runs: the warm-up, the measured seconds and one more."""
    return int(warmup + seconds + 0.999) + 1


def run_procs(cmds):
    return [
        subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for c in cmds
    ]


def cpu_seconds():
    """(busy, total) CPU seconds of the whole host so far, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(parts) - parts[3] - parts[4]) / hz, sum(parts) / hz


WAITS = """SELECT coalesce(wait_event_type || ':' || wait_event, state) AS w, count(*)
           FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
             AND state <> 'idle' GROUP BY 1"""


def measure(url, tables, cmds, warmup, seconds, waits=None):
    """Starts the load, counts what is stored over `seconds` after `warmup`; returns rows/s,
    the host's busy CPU µs per row, and the load processes' outputs. With `waits` (a dict),
    samples what the database's active backends wait for meanwhile, into it."""
    procs = run_procs(cmds)
    time.sleep(warmup)
    t0, n0, c0 = time.monotonic(), max_offsets(url, tables), cpu_seconds()[0]
    while waits is not None and time.monotonic() - t0 < seconds:
        for line in psql(url, WAITS).splitlines():
            w, n = line.rsplit("|", 1)
            waits[w] = waits.get(w, 0) + int(n)
        waits["(samples)"] = waits.get("(samples)", 0) + 1
        time.sleep(0.05)
    time.sleep(max(0, seconds - (time.monotonic() - t0)))
    t1, n1, c1 = time.monotonic(), max_offsets(url, tables), cpu_seconds()[0]
    outs = [p.communicate()[0] for p in procs]
    for p, out in zip(procs, outs):
        if p.returncode != 0:
            raise RuntimeError("load process failed:\n" + out[-2000:])
    rows = max(1, n1 - n0)
    return (n1 - n0) / (t1 - t0), (c1 - c0) * 1e6 / rows, outs


def node_slice(node, scenario, workdir, warmup, seconds, waits=None):
    topics = topics_of(scenario)
    _, events, conns, streams = SCENARIOS[scenario]
    cmds = []
    for t in topics:
        body = os.path.join(workdir, "body-%s-%d.bin" % (t, events))
        with open(body, "wb") as f:
            f.write(publish_body(t, events))
        cmds.append([
            "h2load", "-c", str(conns), "-m", str(streams), "-t", "1",
            "-D", str(run_length(warmup, seconds)), "-d", body,
            "-H", "content-type: application/grpc", "-H", "te: trailers",
            "-H", "authorization: Bearer " + node.token,
            "http://127.0.0.1:%d/eventrelay.EventRelay/PublishEvents" % node.grpc,
        ])
    before = max_offsets(node.url, [t + "_events" for t in topics])
    rate, cpu, outs = measure(
        node.url, [t + "_events" for t in topics], cmds, warmup, seconds, waits
    )
    # h2load counts 2xx answers; every stored event must have been answered and vice versa
    # (a gRPC error is a 200 too, so this is what shows refused publishes).
    done = sum(int(re.search(r"(\d+) succeeded", o).group(1)) for o in outs)
    stored = max_offsets(node.url, [t + "_events" for t in topics]) - before
    return rate, cpu, (done * events, stored)


def raw_slice(url, scenario, workdir, warmup, seconds):
    topics = topics_of(scenario)
    _, events, conns, streams = SCENARIOS[scenario]
    template = RAW_HUNDRED if events == 100 else RAW_ONE
    clients = conns * streams
    cmds = []
    for t in topics:
        script = os.path.join(workdir, "raw-%s.sql" % t)
        with open(script, "w") as f:
            f.write(template.format(table="raw_" + t))
        cmds.append([
            "pgbench", "-n", "-M", "prepared", "-c", str(clients), "-j", "1",
            "-T", str(run_length(warmup, seconds)), "-f", script, url,
        ])
    rate, cpu, _ = measure(url, ["raw_" + t for t in topics], cmds, warmup, seconds)
    return rate, cpu


def settle(url):
    psql(url, "CHECKPOINT")
    time.sleep(1)


def host_busy():
    """CPU seconds used by the whole host in the last second, from /proc/stat (2.0 = both
    cores of this host busy)."""

    def sample():
        with open("/proc/stat") as f:
            parts = [int(x) for x in f.readline().split()[1:]]
        return sum(parts), parts[3] + parts[4]

    (t0, i0), _ = sample(), time.sleep(1)
    t1, i1 = sample()
    return os.cpu_count() * (1 - (i1 - i0) / max(1, t1 - t0))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--node", action="append", default=[],
                    help="LABEL=PATH[,VAR=VALUE...]: an eventrelay binary and its environment "
                         "(repeat to pair builds or settings)")
    ap.add_argument("--scenarios", default="one,hundred,t10,t50")
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--warmup", type=float, default=2)
    ap.add_argument("--admin-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--waits", action="store_true",
                    help="sample what the nodes' backends wait for (pg_stat_activity)")
    a = ap.parse_args()
    for tool in ("h2load", "pgbench", "psql", "curl"):
        if not shutil.which(tool):
            sys.exit("%s is required (h2load: apt-get install nghttp2-client)" % tool)
    nodes_spec = [n.split("=", 1) for n in a.node] or [["node", "target/release/eventrelay"]]
    scenarios = a.scenarios.split(",")
    workdir = tempfile.mkdtemp(prefix="er-h2load-")
    nodes = []
    results = {}
    try:
        for label, spec in nodes_spec:
            path, *env = spec.split(",")
            env = [e.split("=", 1) for e in env]
            nodes.append(Node(label, path, a.admin_url, workdir, env))
        base = nodes[-1]
        for node in nodes:
            for s in scenarios:
                for t in topics_of(s):
                    node.create_topic(t)
        for s in scenarios:
            for t in topics_of(s):
                psql(base.url, 'CREATE TABLE "raw_%s" (LIKE "%s_events" INCLUDING ALL);'
                     'CREATE SEQUENCE "raw_%s_seq"' % (t, t, t))
        print("host CPU busy before the run: %.2f of %d cores" % (host_busy(), os.cpu_count()))
        for s in scenarios:
            # ABC..CBA: each node and the baseline twice, mirrored, so a linear drift of the
            # host falls on every side alike.
            order = [n.label for n in nodes] + ["raw"]
            order = order + order[::-1]
            figures = {k: [] for k in order}
            cpu = {k: [] for k in order}
            waits = {k: {} for k in order}
            checks = []
            for who in order:
                settle(base.url)
                if who == "raw":
                    rate, us = raw_slice(base.url, s, workdir, a.warmup, a.seconds)
                else:
                    node = next(n for n in nodes if n.label == who)
                    rate, us, check = node_slice(
                        node, s, workdir, a.warmup, a.seconds, waits[who] if a.waits else None
                    )
                    checks.append((who, check))
                figures[who].append(rate)
                cpu[who].append(us)
            mean = {k: sum(v) / len(v) for k, v in figures.items()}
            us = {k: sum(v) / len(v) for k, v in cpu.items()}
            results[s] = {"figures": figures, "cpu_us_per_event": cpu,
                          "answered_vs_stored": checks, "waits": waits}
            line = "%-8s raw %8.0f/s (%3.0f us CPU/ev)" % (s, mean["raw"], us["raw"])
            for n in nodes:
                line += " | %s %8.0f/s %.2fx (%3.0f us)" % (
                    n.label, mean[n.label], mean[n.label] / mean["raw"], us[n.label])
            print(line, flush=True)
            topics, events, conns, streams = SCENARIOS[s]
            in_flight = topics * conns * streams * events
            for who, (answered, stored) in checks:
                # Requests still in flight when h2load stops are stored but not counted.
                if not 0 <= stored - answered <= in_flight:
                    print("  %s: %d events answered 2xx, %d stored (a gRPC error is a 2xx too)"
                          % (who, answered, stored))
            if a.waits:
                for n in nodes:
                    w = waits[n.label]
                    samples = max(1, w.pop("(samples)", 1))
                    top = sorted(w.items(), key=lambda kv: -kv[1])[:6]
                    print("  %s backends, mean per sample: %s" % (n.label, ", ".join(
                        "%s %.2f" % (k, v / samples) for k, v in top)))
        print("host CPU busy after the run: %.2f of %d cores" % (host_busy(), os.cpu_count()))
        if a.json:
            print(json.dumps(results))
    finally:
        for n in nodes:
            n.stop(a.admin_url)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
