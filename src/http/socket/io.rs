//! The moving parts of one websocket connection: the writer task that drains the bounded
//! outgoing queue (many messages per flush), the per-channel pumps that fill it from a
//! [`Feed`] without ever waiting, and the kill switch that ends a connection with a reason.

use super::super::phoenix::{Envelope, Vsn, encode_raw};
use crate::error::Error;
use crate::live::Feed;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::SinkExt;
use futures::stream::SplitSink;
use serde_json::{Value, json};
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
/// Most queued messages written with one flush.
pub(super) const WRITE_BATCH: usize = 64;
/// How long a close frame may take to reach a client that is not reading.
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Close codes: policy violation (slow, revoked), going away (drain), unsupported data.
pub(super) const CLOSE_POLICY: u16 = 1008;
pub(super) const CLOSE_GOING_AWAY: u16 = 1001;
pub(super) const CLOSE_UNSUPPORTED: u16 = 1003;

/// The sending side of a connection's bounded queue, bounded in messages and in bytes.
#[derive(Clone)]
pub(super) struct Outbox {
    tx: mpsc::Sender<String>,
    bytes: Arc<AtomicUsize>,
}

/// The writer's side of the queue.
pub(super) struct Inbox {
    rx: mpsc::Receiver<String>,
    bytes: Arc<AtomicUsize>,
}

/// A connection's queue.
pub(super) fn queue() -> (Outbox, Inbox) {
    let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
    let bytes = Arc::new(AtomicUsize::new(0));
    (
        Outbox {
            tx,
            bytes: bytes.clone(),
        },
        Inbox { rx, bytes },
    )
}

impl Outbox {
    /// Queues a message without waiting; `false` when the client is too far behind.
    pub(super) fn push(&self, text: String) -> bool {
        let n = text.len();
        if self.bytes.fetch_add(n, Ordering::Relaxed) + n > CLIENT_BYTES
            || self.tx.try_send(text).is_err()
        {
            self.bytes.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        true
    }
}

impl Inbox {
    async fn recv(&mut self) -> Option<String> {
        let t = self.rx.recv().await?;
        self.bytes.fetch_sub(t.len(), Ordering::Relaxed);
        Some(t)
    }

    fn try_recv(&mut self) -> Option<String> {
        let t = self.rx.try_recv().ok()?;
        self.bytes.fetch_sub(t.len(), Ordering::Relaxed);
        Some(t)
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

/// Writes queued messages; on kill, sends a close frame with the reason (bounded in time).
pub(super) async fn write(mut sink: SplitSink<WebSocket, Message>, mut rx: Inbox, kill: Kill) {
    loop {
        let text = tokio::select! {
            biased;
            _ = kill.token.cancelled() => break,
            t = rx.recv() => match t {
                Some(t) => t,
                None => break,
            },
        };
        // Everything already queued goes out with one flush: far fewer syscalls when a
        // busy topic pushes to many clients.
        let batch = async {
            sink.feed(Message::Text(text.into())).await?;
            for _ in 0..WRITE_BATCH {
                match rx.try_recv() {
                    Some(t) => sink.feed(Message::Text(t.into())).await?,
                    None => break,
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
    join_ref: Value,
    topic: String,
) {
    let push = Envelope::new(vsn, &join_ref, &Value::Null, &topic, "event:published");
    loop {
        match feed.next().await {
            Ok(batch) => {
                for payload in batch.json() {
                    let text = push.wrap(payload);
                    if !out.push(text) {
                        kill.fire(CLOSE_POLICY, slow_client());
                        return;
                    }
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
