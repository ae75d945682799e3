#!/usr/bin/env bash
# Makes sure Postgres (and, with --redis, Redis) answer on this machine, installing them from
# Debian's packages and starting them when they do not. Sourced by scripts/run-node and
# scripts/test; prints the URLs it settled on as exports:
#   ER_PG_URL     a Postgres URL whose user may create databases (trust auth)
#   ER_REDIS_URL  a Redis URL (with --redis)
# Throwaway servers it starts itself live under .data/ in the repository.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA="$ROOT/.data"
want_redis=0
[[ "${1:-}" == "--redis" ]] && want_redis=1

log() { echo "[services] $*" >&2; }

apt_install() {
    if ! command -v apt-get >/dev/null; then
        log "cannot install $*: no apt-get; install it yourself"; exit 1
    fi
    log "installing $* from Debian packages"
    if [[ ! -f /var/lib/apt/periodic/er-updated ]]; then
        apt-get update -qq >/dev/null && mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/er-updated
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

pg_bin() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    [[ -n "$d" ]] && echo "$d"
}

ensure_postgres() {
    local url="postgres://postgres@127.0.0.1:5432/postgres"
    if [[ "${ER_PRIVATE_PG:-}" == 1 ]]; then
        : # asked for the private cluster: skip the system server
    elif command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432 \
        && psql "$url" -Atqc 'select 1' >/dev/null 2>&1; then
        echo "export ER_PG_URL=$url"; return
    fi
    # A system cluster that is installed but stopped: start it.
    if [[ "${ER_PRIVATE_PG:-}" != 1 ]] && command -v pg_ctlcluster >/dev/null && ls /etc/postgresql/*/main >/dev/null 2>&1; then
        local v; v=$(ls /etc/postgresql | sort -V | tail -1)
        log "starting the system Postgres $v cluster"
        pg_ctlcluster --skip-systemctl-redirect "$v" main start 2>/dev/null || true
        for _ in $(seq 1 30); do
            psql "$url" -Atqc 'select 1' >/dev/null 2>&1 && { echo "export ER_PG_URL=$url"; return; }
            sleep 1
        done
    fi
    [[ -n "$(pg_bin)" ]] || apt_install postgresql
    # A private throwaway cluster on port 54329, trust auth, owned by the postgres user.
    local bin port=54329 dir="$DATA/pg"
    bin=$(pg_bin)
    url="postgres://postgres@127.0.0.1:$port/postgres"
    if ! psql "$url" -Atqc 'select 1' >/dev/null 2>&1; then
        mkdir -p "$DATA"
        local owner=postgres
        id postgres >/dev/null 2>&1 || owner=$(id -un)
        if [[ ! -f "$dir/PG_VERSION" ]]; then
            log "creating a private Postgres cluster in $dir"
            mkdir -p "$dir"; chown "$owner" "$DATA" "$dir"
            run_as "$owner" "$bin/initdb" -D "$dir" -U postgres -A trust >/dev/null
        fi
        log "starting the private Postgres on port $port"
        run_as "$owner" "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w \
            -o "-p $port -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=400" start >/dev/null
    fi
    echo "export ER_PG_URL=$url"
}

run_as() {
    local user=$1; shift
    if [[ "$(id -un)" == "$user" ]]; then "$@"; else su "$user" -s /bin/bash -c "$(printf '%q ' "$@")"; fi
}

ensure_redis() {
    local url="redis://127.0.0.1:6379"
    if command -v redis-cli >/dev/null && redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
        echo "export ER_REDIS_URL=$url"; return
    fi
    command -v redis-server >/dev/null || apt_install redis-server redis-tools
    log "starting Redis on 6379"
    mkdir -p "$DATA/redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        --dir "$DATA/redis" --logfile "$DATA/redis/redis.log" >/dev/null
    for _ in $(seq 1 30); do
        redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG && { echo "export ER_REDIS_URL=$url"; return; }
        sleep 0.5
    done
    log "Redis did not start"; exit 1
}

ensure_postgres
[[ $want_redis == 1 ]] && ensure_redis
true
