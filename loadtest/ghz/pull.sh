#!/usr/bin/env bash
# PullEvents load with ghz (https://ghz.sh): batches of 1000 from a fixed offset.
#
# Environment (all optional but ER_TOKEN):
#   ER_TOKEN    bearer token of an admin key, or of a consumer key with a subscription
#               of $ER_TOPIC (required)
#   ER_TARGET   host:port of the gRPC listener            (default localhost:50051)
#   ER_TOPIC    topic to read                              (default bench)
#   ER_OFFSET   return events after this offset            (default 0; try 1000000 on a big topic)
#   ER_BATCH    events per pull, at most 1000              (default 1000)
#   ER_RPS      requests per second, 0 for no limit       (default 50)
#   ER_TOTAL    requests in all                            (default 2000)
#   ER_CONC     concurrent workers                         (default 10)
# Extra arguments are passed to ghz.
#
# Run it once with ER_OFFSET=0 and once deep into the topic: the two latencies should be about
# the same, since pulls seek by the offset index (keyset paging), not by skipping rows.
set -euo pipefail
source "$(dirname "$0")/common.sh"

run_ghz PullEvents 50 2000 10 \
  "{\"topic\": \"${topic}\", \"batch_size\": ${ER_BATCH:-1000}, \"offset\": ${ER_OFFSET:-0}}" "$@"
