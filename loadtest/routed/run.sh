#!/usr/bin/env bash
# What one statement for every topic of a batch would save Postgres (issue 18, many topics):
# 50 one-event shares of a batch stored as today (one transaction, one statement per topic
# table: reserve the offset, insert the row) against one statement that reserves every
# topic's offsets in one upsert and inserts all 50 rows through a parent list-partitioned by
# topic, which routes each row to its topic's table. pgbench, one client, prepared,
# synchronous_commit off (CPU, not the flush), in turns ABAB on a scratch database.
# The statement alone: built in the node (loadtest/routed/node.patch, against 1092d75), the
# whole publish path did not get faster beyond the host's noise (docs/benchmarks.md, issue 18
# run 6; docs/decisions.md).
# Usage: loadtest/routed/run.sh [admin-url]   (Postgres with pgbench and psql on PATH)
set -euo pipefail
cd "$(dirname "$0")"
ADMIN=${1:-postgres://postgres@127.0.0.1:5432/postgres}
DB="er_bench_routed_$$"
URL="${ADMIN%/*}/$DB"
psql "$ADMIN" -qc "CREATE DATABASE $DB"
trap 'psql "$ADMIN" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)"' EXIT
psql "$URL" -q -v ON_ERROR_STOP=1 -f setup.sql
for f in per_topic.sql routed.sql per_topic.sql routed.sql; do
    ms=$(PGOPTIONS='-c synchronous_commit=off' pgbench -n -M prepared -c 1 -T 6 -f "$f" "$URL" 2>&1 \
        | sed -n 's/^latency average = \([0-9.]*\) ms/\1/p')
    echo "$f: $ms ms per 50 events ($(awk -v ms="$ms" 'BEGIN { printf "%d", ms * 1000 / 50 }') us per event)"
done
