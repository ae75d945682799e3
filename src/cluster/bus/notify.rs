//! The Postgres side of the bus: announcements over NOTIFY when Redis is absent or down, and
//! the LISTEN connection every node keeps.
//!
//! NOTIFY takes a cluster-wide lock at commit and payloads are capped at 8000 bytes, so the
//! announcer coalesces: one statement per flush, one payload per topic holding the offset
//! range it covers (receivers read the rows), with non-durable events inline when they fit and
//! otherwise written to the unlogged `live_spill` table, whose row id the NOTIFY carries. The
//! listener has its own connection (never inside a transaction, never pooled).

use super::Announcement;
use crate::live::Batch;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The NOTIFY channel (per database, so per cluster).
pub(super) const CHANNEL: &str = "er_live";
/// Largest payload sent; Postgres refuses more than 8000 bytes.
const PAYLOAD_MAX: usize = 7_900;

/// Sends one coalesced round of announcements. Errors are logged: the other nodes' sweeps
/// recover durable events; non-durable ones are best effort.
pub(super) async fn send(pool: &PgPool, node: Uuid, batches: &[(String, Batch)]) {
    let mut ranges: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    let mut payloads = Vec::new();
    for (topic, batch) in batches {
        let a = Announcement::of(node, topic, batch, false);
        if a.last == 0 {
            // Non-durable: inline if it fits, else through a spill row.
            match serde_json::to_string(&Announcement::of(node, topic, batch, true)) {
                Ok(p) if p.len() <= PAYLOAD_MAX => payloads.push(p),
                Ok(p) => match spill(pool, &p).await {
                    Ok(id) => {
                        let pointer = Announcement { spill: id, ..a };
                        payloads.extend(serde_json::to_string(&pointer).ok());
                    }
                    Err(e) => tracing::warn!(topic, error = %e, "non-durable events not spilled"),
                },
                Err(e) => tracing::warn!(topic, error = %e, "non-durable events not encoded"),
            }
            continue;
        }
        let r = ranges.entry(topic).or_insert((a.first, a.last));
        *r = (r.0.min(a.first), r.1.max(a.last));
    }
    for (topic, (first, last)) in ranges {
        let a = Announcement {
            node,
            topic: topic.to_owned(),
            first,
            last,
            events: vec![],
            sent_ms: super::now_ms(),
            spill: 0,
        };
        if let Ok(p) = serde_json::to_string(&a) {
            payloads.push(p);
        }
    }
    if payloads.is_empty() {
        return;
    }
    let sent = sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
        .bind(CHANNEL)
        .bind(&payloads)
        .execute(pool)
        .await;
    if let Err(e) = sent {
        tracing::warn!(error = %e, "NOTIFY of live events failed; other nodes' sweeps recover");
    }
}

/// How long spilled announcements are kept: far longer than any listener takes to read one.
const SPILL_KEEP: &str = "1 minute";

/// Writes an announcement too large for NOTIFY; returns its row id. Also deletes spills older
/// than [`SPILL_KEEP`], so the table stays small without a janitor of its own.
async fn spill(pool: &PgPool, payload: &str) -> Result<i64, sqlx::Error> {
    sqlx::query("DELETE FROM live_spill WHERE created_at < now() - $1::interval")
        .bind(SPILL_KEEP)
        .execute(pool)
        .await?;
    sqlx::query_scalar("INSERT INTO live_spill (payload) VALUES ($1) RETURNING id")
        .bind(payload)
        .fetch_one(pool)
        .await
}

/// The announcement of a spill row; `None` when it is gone or unreadable (best effort).
pub(super) async fn unspill(pool: &PgPool, id: i64) -> Option<Announcement> {
    let payload: Option<String> =
        sqlx::query_scalar("SELECT payload FROM live_spill WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await
            .ok()?;
    serde_json::from_str(&payload?).ok()
}

/// Keeps a LISTEN connection open (reconnecting as needed) and forwards announcements.
pub(super) async fn listen(url: String, tx: mpsc::Sender<Announcement>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let mut listener = match connect(&url).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN connection failed; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                n = listener.try_recv() => n,
            };
            match next {
                Ok(Some(n)) => {
                    if let Ok(a) = serde_json::from_str::<Announcement>(n.payload())
                        && tx.try_send(a).is_err()
                    {
                        tracing::debug!("bus receive queue full: the sweep recovers");
                    }
                }
                // The connection dropped and is being re-established; what was sent meanwhile
                // is lost, and the sweep recovers it.
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                    break;
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn connect(url: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
