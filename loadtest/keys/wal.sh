#!/usr/bin/env bash
# WAL bytes per stored event of each idempotency-key layout (issue 19), on a scratch database:
# each variant's table is made anew, filled with 25,000 rows by 4 pgbench clients, then after a
# CHECKPOINT 300 statements of 100 rows run on one client and the WAL written is divided by
# the 30,000 rows. WAL is what each row costs whatever else the host runs; the latency printed
# beside it is only a hint. Usage: loadtest/keys/wal.sh [variant ...] (default: all), with
# PGHOST/PGUSER set as for psql; it makes and drops the database er_keys_wal.
set -euo pipefail
cd "$(dirname "$0")"
db=er_keys_wal
psql -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
trap 'psql -qc "DROP DATABASE IF EXISTS $db"' EXIT
variants=("$@")
[ ${#variants[@]} -eq 0 ] && variants=(plain keys_0020 text_c text_c_random text_c_btree topic_id_digest one_digest)
for v in "${variants[@]}"; do
    psql -d $db -q -f setup.sql 2>/dev/null
    pgbench -n -f "$v.sql" -c 4 -t 250 $db >/dev/null 2>&1
    psql -d $db -qc "CHECKPOINT"
    lsn=$(psql -d $db -Atc "SELECT pg_current_wal_lsn()")
    latency=$(pgbench -n -f "$v.sql" -c 1 -t 300 $db 2>&1 | awk '/^latency average/ {print $4}')
    per_row=$(psql -d $db -Atc "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn')::bigint / 30000")
    echo "$v: $per_row WAL bytes per row, $latency ms per statement"
done
