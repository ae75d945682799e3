//! The moving parts of one websocket connection: the writer task that drains the bounded
//! outgoing queue (many messages per flush) and pings an idle client, the per-channel pumps
//! that fill the queue from a [`Feed`] without ever waiting, and the kill switch that ends a
//! connection with a reason.

use super::super::phoenix::{Envelope, Ref, Vsn, encode_raw};
use crate::error::Error;
use crate::live::Feed;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::SinkExt;
use futures::stream::SplitSink;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Messages waiting to be written to one client before it counts as too slow.
pub const CLIENT_BUFFER: usize = 4_096;
/// Bytes of messages waiting for one client before it counts as too slow (large events fill
/// this before the message count).
pub const CLIENT_BYTES: usize = 4 * 1024 * 1024;
/// Bytes gathered before a write reaches the socket (the writer flushes explicitly).
pub(super) const WRITE_BUFFER: usize = 32 * 1024;
/// Queued messages after which the writer flushes (it may go past this by one entry).
pub(super) const WRITE_BATCH: usize = 64;
/// How long a close frame may take to reach a client that is not reading.
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Close codes: policy violation (slow, revoked, silent, never joined, too many from one
/// address), going away (drain, age), unsupported data, message too big.
pub(super) const CLOSE_POLICY: u16 = 1008;
pub(super) const CLOSE_GOING_AWAY: u16 = 1001;
pub(super) const CLOSE_UNSUPPORTED: u16 = 1003;
pub(super) const CLOSE_TOO_BIG: u16 = 1009;

/// What the queue counts against its bounds.
#[derive(Default)]
struct Queued {
    messages: AtomicUsize,
    bytes: AtomicUsize,
}

/// The sending side of a connection's bounded queue, bounded in messages and in bytes. An
/// entry is a run of messages (a pump queues a whole batch's pushes as one entry, so a batch
/// costs the queue one send and the writer one wake-up, not one per event).
#[derive(Clone)]
pub(super) struct Outbox {
    tx: mpsc::Sender<Vec<String>>,
    queued: Arc<Queued>,
}

/// The writer's side of the queue.
pub(super) struct Inbox {
    rx: mpsc::Receiver<Vec<String>>,
    queued: Arc<Queued>,
}

/// A connection's queue.
pub(super) fn queue() -> (Outbox, Inbox) {
    // Every entry holds at least one message, so the message bound is reached first.
    let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
    let queued = Arc::new(Queued::default());
    (
        Outbox {
            tx,
            queued: queued.clone(),
        },
        Inbox { rx, queued },
    )
}

impl Outbox {
    /// Queues a message without waiting; `false` when the client is too far behind.
    pub(super) fn push(&self, text: String) -> bool {
        self.push_all(vec![text])
    }

    /// Queues messages, in order, without waiting; `false` (and nothing queued) when the
    /// client is too far behind.
    pub(super) fn push_all(&self, texts: Vec<String>) -> bool {
        let (n, size) = (texts.len(), texts.iter().map(String::len).sum::<usize>());
        let q = &self.queued;
        // Both counters are raised first (and both lowered on failure), so they stay exact.
        let messages = q.messages.fetch_add(n, Ordering::Relaxed) + n;
        let bytes = q.bytes.fetch_add(size, Ordering::Relaxed) + size;
        if messages > CLIENT_BUFFER || bytes > CLIENT_BYTES || self.tx.try_send(texts).is_err() {
            q.messages.fetch_sub(n, Ordering::Relaxed);
            q.bytes.fetch_sub(size, Ordering::Relaxed);
            return false;
        }
        true
    }
}

impl Inbox {
    fn took(&self, texts: Vec<String>) -> Vec<String> {
        let size = texts.iter().map(String::len).sum::<usize>();
        self.queued
            .messages
            .fetch_sub(texts.len(), Ordering::Relaxed);
        self.queued.bytes.fetch_sub(size, Ordering::Relaxed);
        texts
    }

    async fn recv(&mut self) -> Option<Vec<String>> {
        let t = self.rx.recv().await?;
        Some(self.took(t))
    }

    fn try_recv(&mut self) -> Option<Vec<String>> {
        let t = self.rx.try_recv().ok()?;
        Some(self.took(t))
    }
}

/// Why a connection is being closed; the first reason wins.
#[derive(Clone, Default)]
pub(super) struct Kill {
    pub(super) token: CancellationToken,
    reason: Arc<OnceLock<(u16, String)>>,
}

impl Kill {
    pub(super) fn fire(&self, code: u16, reason: impl Into<String>) {
        let _ = self.reason.set((code, reason.into()));
        self.token.cancel();
    }
}

/// Writes queued messages, and a ping every `keepalive` so that proxies see traffic and the
/// client's pong proves it is there; on kill, sends a close frame with the reason (bounded
/// in time).
pub(super) async fn write(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: Inbox,
    kill: Kill,
    keepalive: Duration,
) {
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let texts = tokio::select! {
            biased;
            _ = kill.token.cancelled() => break,
            t = rx.recv() => match t {
                Some(t) => t,
                None => break,
            },
            _ = ping.tick() => {
                let sent = tokio::select! {
                    _ = kill.token.cancelled() => break,
                    r = sink.send(Message::Ping(Default::default())) => r,
                };
                if sent.is_err() {
                    kill.token.cancel();
                    return;
                }
                continue;
            }
        };
        // Everything already queued goes out with one flush: far fewer syscalls when a
        // busy topic pushes to many clients.
        let batch = async {
            let mut written = texts.len();
            for t in texts {
                sink.feed(Message::Text(t.into())).await?;
            }
            while written < WRITE_BATCH {
                let Some(more) = rx.try_recv() else { break };
                written += more.len();
                for t in more {
                    sink.feed(Message::Text(t.into())).await?;
                }
            }
            sink.flush().await
        };
        tokio::select! {
            _ = kill.token.cancelled() => break,
            r = batch => if r.is_err() {
                kill.token.cancel();
                return;
            },
        }
    }
    let frame = kill.reason.get().map(|(code, reason)| CloseFrame {
        code: *code,
        reason: reason.as_str().into(),
    });
    if let Some((code, reason)) = kill.reason.get() {
        tracing::info!(code, reason, "closing websocket");
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(Message::Close(frame))).await;
}

pub(super) fn slow_client() -> String {
    format!(
        "slow client: more than {CLIENT_BUFFER} messages or {} MiB waiting to be sent; disconnected",
        CLIENT_BYTES / (1024 * 1024)
    )
}

/// Moves a channel's feed into the connection's queue, never waiting for the client.
pub(super) async fn pump(
    mut feed: Feed,
    out: Outbox,
    kill: Kill,
    vsn: Vsn,
    join_ref: Ref,
    topic: String,
) {
    let push = Envelope::new(vsn, &join_ref, &Ref::Null, &topic, "event:published");
    loop {
        match feed.next().await {
            Ok(batch) => {
                let texts = batch.json().iter().map(|p| push.wrap(p)).collect();
                if !out.push_all(texts) {
                    kill.fire(CLOSE_POLICY, slow_client());
                    return;
                }
            }
            Err(Error::ResourceExhausted(reason)) => {
                kill.fire(CLOSE_POLICY, reason);
                return;
            }
            Err(e) => {
                // The channel errors (topic dropped, database away); Phoenix clients rejoin,
                // resuming with `after_offset` when they pass it.
                tracing::debug!(error = %e, topic, "websocket channel feed failed");
                let payload = json!({ "reason": e.to_string() }).to_string();
                let text = encode_raw(vsn, &join_ref, &join_ref, &topic, "phx_error", &payload);
                let _ = out.push(text);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_refuses_whole_runs_past_its_bounds_and_stays_exact() {
        let (out, mut inbox) = queue();
        let counts = |i: &Inbox| {
            let q = &i.queued;
            (
                q.messages.load(Ordering::Relaxed),
                q.bytes.load(Ordering::Relaxed),
            )
        };
        assert!(out.push_all(vec!["ab".into(), "c".into()]));
        assert_eq!(counts(&inbox), (2, 3));
        // Too many messages, then too many bytes: nothing of either run is queued.
        assert!(!out.push_all(vec![String::new(); CLIENT_BUFFER]));
        assert!(!out.push("x".repeat(CLIENT_BYTES)));
        assert_eq!(counts(&inbox), (2, 3));
        assert!(out.push("d".into()));
        assert_eq!(
            inbox.try_recv(),
            Some(vec!["ab".to_owned(), "c".to_owned()])
        );
        assert_eq!(inbox.try_recv(), Some(vec!["d".to_owned()]));
        assert_eq!(inbox.try_recv(), None);
        assert_eq!(counts(&inbox), (0, 0));
    }
}
