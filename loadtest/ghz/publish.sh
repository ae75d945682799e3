#!/usr/bin/env bash
# Durable PublishEvents load with ghz (https://ghz.sh), adapted from the original README:
#
#   ghz --rps 200 --total 20000 --insecure --proto proto/event_relay.proto \
#       --call eventrelay.EventRelay.PublishEvents -d '{...}' localhost:50051
#
# Differences from the original command:
#   - `durable: true`: without it this server only broadcasts the events live and stores nothing;
#   - an `authorization: Bearer <token>` metadata header (ghz -m): every call needs an API key;
#   - the topic must exist first (CreateTopic, or `er-loadgen` creates its own).
#
# Environment (all optional but ER_TOKEN):
#   ER_TOKEN    bearer token of an admin key or of a producer key granted $ER_TOPIC (required)
#   ER_TARGET   host:port of the gRPC listener            (default localhost:50051)
#   ER_TOPIC    existing topic to publish to               (default bench)
#   ER_RPS      requests per second, 0 for no limit       (default 200)
#   ER_TOTAL    requests in all                            (default 20000)
#   ER_CONC     concurrent workers                         (default 50, ghz's default)
# Extra arguments are passed to ghz, e.g. `--duration 30s` or `-O html -o report.html`.
#
# Create a key with: eventrelay api-key create --type admin --name ghz
# (prints JSON with the bearer token), and the topic with CreateTopic, e.g. via grpcurl.
set -euo pipefail
source "$(dirname "$0")/common.sh"

run_ghz PublishEvents 200 20000 50 "{
    \"topic\": \"${topic}\",
    \"durable\": true,
    \"events\": [{
      \"name\": \"order.created\",
      \"data\": \"{\\\"order_id\\\": {{.RequestNumber}}, \\\"amount_cents\\\": 1999, \\\"currency\\\": \\\"EUR\\\"}\",
      \"source\": \"ghz\",
      \"user_id\": \"user-{{.WorkerID}}\",
      \"context\": {\"ip_address\": \"127.0.0.1\"}
    }]
  }" "$@"
