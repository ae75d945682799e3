# Shared by the ghz scripts (sourced, not run): checks the environment, moves to the
# repository root, and defines `run_ghz CALL RPS TOTAL CONC DATA [ghz args...]`, which runs ghz
# against $ER_TARGET with the bearer token, the given defaults for $ER_RPS, $ER_TOTAL and
# $ER_CONC, and the JSON request DATA.

: "${ER_TOKEN:?set ER_TOKEN to the bearer token of an API key (Base64 key:secret)}"
target="${ER_TARGET:-localhost:50051}"
topic="${ER_TOPIC:-bench}"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."   # repository root, for proto/event_relay.proto

command -v ghz >/dev/null || { echo "ghz is not installed: see https://ghz.sh/docs/install" >&2; exit 1; }

run_ghz() {
  local call=$1 rps=$2 total=$3 conc=$4 data=$5
  shift 5
  exec ghz \
    --rps "${ER_RPS:-$rps}" \
    --total "${ER_TOTAL:-$total}" \
    --concurrency "${ER_CONC:-$conc}" \
    --insecure \
    --proto proto/event_relay.proto \
    --import-paths proto \
    --call "eventrelay.EventRelay.$call" \
    -m "{\"authorization\": \"Bearer ${ER_TOKEN}\"}" \
    -d "$data" \
    "$@" \
    "$target"
}
