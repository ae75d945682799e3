//! The Redis side of the bus: publishing announcements, and one subscriber connection per
//! node that follows only the topics with local listeners.
//!
//! Redis pub/sub is at-most-once (a subscriber that reconnects has missed messages), which is
//! why the bus sweeps Postgres and listeners fill gaps by offset; this file only has to be
//! fast and to fail quickly so the announcer can fall back to NOTIFY.

use super::Announcement;
use crate::live::{Batch, Live};
use fred::clients::SubscriberClient;
use fred::prelude::*;
use std::collections::HashSet;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Largest announcement sent with its events inline; larger ones carry only the offset
/// range and receivers read the rows from Postgres.
const INLINE_MAX: usize = 256 * 1024;
/// How long a PUBLISH or SUBSCRIBE may take before Redis is treated as down for it.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);
/// How often subscriptions are reconciled with the topics that have local listeners.
const RESYNC: Duration = Duration::from_secs(1);

/// A subscriber client for `url` that connects in the background and resubscribes to its
/// channels after every reconnect.
pub(super) fn subscriber(url: &str) -> anyhow::Result<SubscriberClient> {
    let mut config = Config::from_url(url)?;
    config.fail_fast = false;
    let client = Builder::from_config(config)
        .with_performance_config(|p| {
            p.default_command_timeout = COMMAND_TIMEOUT;
            // Messages wait here for the receive loop; a lag is recovered by the sweep.
            p.broadcast_channel_capacity = 4_096;
        })
        .with_connection_config(|c| c.connection_timeout = Duration::from_secs(2))
        .set_policy(ReconnectPolicy::new_constant(0, 500))
        .build_subscriber_client()?;
    Ok(client)
}

/// Publishes each queued batch on its topic's channel; returns those that could not be sent
/// (Redis down or slow), for the NOTIFY fallback.
pub(super) async fn publish(
    client: &Client,
    prefix: &str,
    node: Uuid,
    queued: &mut Vec<(String, Batch)>,
) -> Vec<(String, Batch)> {
    if !client.is_connected() {
        return std::mem::take(queued);
    }
    let mut failed = Vec::new();
    let mut down = false;
    for (topic, batch) in queued.drain(..) {
        if down {
            failed.push((topic, batch));
            continue;
        }
        let mut payload = serde_json::to_string(&Announcement::of(node, &topic, &batch, true));
        // A large durable batch goes as its offset range (receivers read the rows); a
        // non-durable one has no rows to read, so it always goes inline.
        let durable = batch.first().is_some_and(|e| e.offset > 0);
        if durable && payload.as_ref().is_ok_and(|p| p.len() > INLINE_MAX) {
            payload = serde_json::to_string(&Announcement::of(node, &topic, &batch, false));
        }
        let Ok(payload) = payload else {
            continue; // events always serialise; nothing to fall back to if not
        };
        let sent: Result<i64, _> = tokio::time::timeout(
            COMMAND_TIMEOUT,
            client.publish(format!("{prefix}{topic}"), payload),
        )
        .await
        .map_err(|_| ())
        .and_then(|r| r.map_err(|_| ()));
        if sent.is_err() {
            tracing::debug!(topic, "Redis PUBLISH failed: falling back to NOTIFY");
            down = true;
            failed.push((topic, batch));
        }
    }
    failed
}

/// Runs the subscriber: follows the topics with local listeners and forwards what arrives.
pub(super) async fn receive(
    client: SubscriberClient,
    prefix: String,
    live: Live,
    tx: mpsc::Sender<Announcement>,
    stop: CancellationToken,
) {
    let mut messages = client.message_rx();
    let _connection = client.connect();
    let _resubscriber = client.manage_subscriptions();
    let mut subscribed: HashSet<String> = HashSet::new();
    // From now on joins wait (briefly) for their topic's subscription.
    live.set_carried(HashSet::new());
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = live.interest_changed() => sync(&client, &prefix, &live, &mut subscribed).await,
            _ = resync.tick() => sync(&client, &prefix, &live, &mut subscribed).await,
            m = messages.recv() => match m {
                Ok(m) => {
                    let parsed = m
                        .value
                        .as_str()
                        .and_then(|s| serde_json::from_str::<Announcement>(&s).ok());
                    if let Some(a) = parsed
                        && tx.try_send(a).is_err()
                    {
                        tracing::debug!("bus receive queue full: the sweep recovers");
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::debug!(n, "Redis messages dropped locally: the sweep recovers");
                }
                Err(RecvError::Closed) => break,
            },
        }
    }
    let _ = client.quit().await;
}

/// Subscribes to channels of topics that gained listeners, unsubscribes from the others.
/// Failures (Redis down) are retried on the next call.
async fn sync(
    client: &SubscriberClient,
    prefix: &str,
    live: &Live,
    subscribed: &mut HashSet<String>,
) {
    let wanted: HashSet<String> = live
        .topics()
        .into_iter()
        .map(|t| format!("{prefix}{t}"))
        .collect();
    if !client.is_connected() {
        // manage_subscriptions resubscribes what is tracked; new ones wait for the next try.
        return;
    }
    for channel in wanted.difference(&subscribed.clone()) {
        let ok = tokio::time::timeout(COMMAND_TIMEOUT, client.subscribe(channel.clone())).await;
        if matches!(ok, Ok(Ok(()))) {
            subscribed.insert(channel.clone());
        }
    }
    for channel in subscribed.clone().difference(&wanted) {
        let ok = tokio::time::timeout(COMMAND_TIMEOUT, client.unsubscribe(channel.clone())).await;
        if matches!(ok, Ok(Ok(()))) {
            subscribed.remove(channel);
        }
    }
    let carried = subscribed
        .iter()
        .filter_map(|c| c.strip_prefix(prefix).map(str::to_owned))
        .collect();
    live.set_carried(carried);
}
