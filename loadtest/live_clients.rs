//! The websocket clients of `er-live-bench`: many Phoenix v2 connections joined to one
//! subscription, each counting deliveries and (while recording) the publish-to-receipt latency
//! read from the timestamp in the event data.

use anyhow::{Result, bail};
use futures::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

/// Microseconds since the epoch (publisher and clients share the machine's clock).
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The timestamp in a pushed event, found without parsing the whole message.
fn stamp(text: &str) -> Option<u64> {
    let at = text.find("\"data\":{\"t\":")? + 12;
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Websocket clients joined to one subscription, counting deliveries.
pub struct Clients {
    tasks: Vec<tokio::task::JoinHandle<Vec<u64>>>,
    pub received: Arc<AtomicU64>,
    pub closed: Arc<AtomicU64>,
    pub record: Arc<AtomicBool>,
    pub stop: CancellationToken,
}

impl Clients {
    /// Opens `n` connections (`parallel` at a time), each joined to `events:<sub>`.
    pub async fn connect(
        http: SocketAddr,
        n: usize,
        sub: &str,
        jwt: &str,
        parallel: usize,
    ) -> Result<Clients> {
        let mut c = Clients {
            tasks: Vec::with_capacity(n),
            received: Arc::default(),
            closed: Arc::default(),
            record: Arc::default(),
            stop: CancellationToken::new(),
        };
        let url = format!("ws://{http}/socket/websocket?vsn=2.0.0");
        let join = serde_json::json!(["1", "1", format!("events:{sub}"), "phx_join", {"consumer_token": jwt}])
            .to_string();
        let mut pending = futures::stream::iter(0..n)
            .map(|_| {
                let (url, join) = (url.clone(), join.clone());
                async move {
                    // A browser reads what has arrived; tungstenite's default 128 KiB read
                    // buffer is zeroed before every read, which would make these clients
                    // spend more CPU than the node they measure.
                    let config = WebSocketConfig::default().read_buffer_size(16 * 1024);
                    let (mut ws, _) =
                        tokio_tungstenite::connect_async_with_config(url, Some(config), true)
                            .await?;
                    ws.send(Message::text(join)).await?;
                    match ws.next().await {
                        Some(Ok(Message::Text(t))) if t.contains("\"ok\"") => Ok(ws),
                        other => bail!("join failed: {other:?}"),
                    }
                }
            })
            .buffer_unordered(parallel);
        while let Some(ws) = pending.next().await {
            let mut ws = ws?;
            let (received, closed, record, stop) = (
                c.received.clone(),
                c.closed.clone(),
                c.record.clone(),
                c.stop.clone(),
            );
            c.tasks.push(tokio::spawn(async move {
                let mut samples = Vec::new();
                loop {
                    let m = tokio::select! {
                        _ = stop.cancelled() => return samples,
                        m = ws.next() => m,
                    };
                    match m {
                        Some(Ok(Message::Text(t))) => {
                            if let Some(t0) = stamp(t.as_str()) {
                                received.fetch_add(1, Ordering::Relaxed);
                                if record.load(Ordering::Relaxed) {
                                    samples.push(now_micros().saturating_sub(t0));
                                }
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => {
                            closed.fetch_add(1, Ordering::Relaxed);
                            return samples;
                        }
                    }
                }
            }));
        }
        Ok(c)
    }

    /// Latency samples (microseconds) of every client, after `stop`.
    pub async fn samples(self) -> Vec<u64> {
        let mut all = Vec::new();
        for t in self.tasks {
            all.extend(t.await.unwrap_or_default());
        }
        all
    }
}
