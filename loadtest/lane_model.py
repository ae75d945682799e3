#!/usr/bin/env python3
"""A discrete-event model of one topic's writer lane under er-loadgen's closed loop.

Why it exists: scenario a (1-event durable publishes, 32 clients) sits at its baseline c on
the 2-core bench host, and several lane policies that looked faster on paper were measured
slower or equal. This model reproduces those measurements from four numbers, so the next idea
can be tried here in seconds before it is built (docs/benchmarks.md, eighth session).

The model: N clients each keep one request in flight. A request answered by the lane comes back
after the path time P (answer to gRPC thread, reply to client, next request to the node and
into the lane; uniform in 0.7-1.3 P). The lane's transactions hold the topic's offset lock for
`fixed + per * events` ms, plus `flush` ms when they commit synchronously (the lock is held
through the WAL flush). Policies:

  sync     one transaction at a time, each commits synchronously (the node's policy for small
           batches)
  ahead    a second transaction is sent while one runs; it does its `pre` work meanwhile and
           takes the lock when the first ends
  marked   every transaction commits without the flush and a separate mark (one at a time,
           `mark` ms plus a flush) makes all batches committed before it durable

Figures measured on the bench host (eighth session): with P = 0.65 ms the model gives ~19,900
events/s for `sync` where er-loadgen measured 17,400-20,400, and it ranks `ahead` and `marked`
at or below `sync`, as measured. No CPU contention is modelled: smaller batches cost Postgres
more CPU per event, which makes `ahead` worse still in reality.

Usage: python3 loadtest/lane_model.py [--path-ms P]
"""

import argparse
import heapq
import random


def run(policy, n=32, path=0.65, fixed=0.2, per=0.012, flush=0.28, pre=0.1, mark=0.1,
        horizon=2000.0, seed=1):
    """Events per second and mean events per transaction of `policy` over `horizon` ms."""
    rng = random.Random(seed)
    events = [(rng.uniform(0, path), "arrive", i) for i in range(n)]
    heapq.heapify(events)
    queue, running, stored, batches = [], [], [], []
    state = {"lock_free": 0.0, "marking": False, "done": 0}

    def answer(now, clients):
        for c in clients:
            state["done"] += 1
            heapq.heappush(events, (now + rng.uniform(0.7 * path, 1.3 * path), "arrive", c))

    def launch(now):
        nonlocal queue
        limit = 2 if policy == "ahead" else 1
        while queue and len(running) < limit:
            batch, queue = queue, []
            held = fixed + per * len(batch) + (0.0 if policy == "marked" else flush)
            start = now
            if policy == "ahead":
                # The statement's own work (decoding, JSON) happens before the lock.
                start = max(now + pre, state["lock_free"])
                held -= pre
            end = start + held
            state["lock_free"] = end
            running.append(id(batch))
            batches.append(len(batch))
            heapq.heappush(events, (end, "end", batch))

    def start_mark(now):
        nonlocal stored
        if stored and not state["marking"]:
            cohort, stored = stored, []
            state["marking"] = True
            heapq.heappush(events, (now + mark + flush, "marked", cohort))

    while events:
        now, kind, data = heapq.heappop(events)
        if now > horizon:
            break
        if kind == "arrive":
            queue.append(data)
        elif kind == "end":
            running.remove(id(data))
            if policy == "marked":
                stored.extend(data)
                start_mark(now)
            else:
                answer(now, data)
        else:  # a mark ended
            state["marking"] = False
            answer(now, data)
            start_mark(now)
        launch(now)
    return state["done"] / horizon * 1000.0, sum(batches) / max(len(batches), 1)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--path-ms", type=float, nargs="*", default=[0.5, 0.65, 0.8])
    args = p.parse_args()
    print(f"{'path ms':>8} {'policy':>8} {'events/s':>10} {'events/txn':>11}")
    for path in args.path_ms:
        for policy in ("sync", "ahead", "marked"):
            rate, size = run(policy, path=path)
            print(f"{path:>8.2f} {policy:>8} {rate:>10,.0f} {size:>11.1f}")


if __name__ == "__main__":
    main()
