//! The resuming websocket clients of `er-live-bench --storm`: each joins `events:<sub>` with an
//! `after_offset`, keeps a [`Ledger`] of the durable offsets it is pushed, and when its socket
//! ends (a drained node's close, code 1001) reconnects to the next node and rejoins after the
//! last offset it saw, as a Phoenix client passing `after_offset` does.
//!
//! They speak the protocol as `live_clients` does, straight on a tokio `TcpStream` (its frame
//! reader and writer), so that a thousand of them cost the two cores little. Each client notes
//! when its socket closed, when its rejoin was answered (it has resumed) and when it had been
//! pushed everything published before that answer (it has caught up), and counts both events
//! in [`Progress`] so that the bench sees the moment the last one gets there.

use crate::live_clients::{client_frame, frame, read_head};
use crate::live_ledger::Ledger;
use anyhow::{Result, bail};
use bytes::{Buf, BytesMut};
use memchr::memmem::Finder;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

static PUSH: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"event:published\""));
static OFFSET: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"offset\":"));

/// Pause between failed connection attempts to the node a client moves to.
const RETRY: Duration = Duration::from_millis(100);

/// The durable offset of an `event:published` push (the bench's event data holds no
/// `"offset"` key, so the first one is the event's).
fn pushed_offset(text: &[u8]) -> Option<i64> {
    PUSH.find(text)?;
    let at = OFFSET.find(text)? + OFFSET.needle().len();
    let digits = &text[at..];
    let end = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

/// What every client updates and the bench watches.
#[derive(Default)]
pub struct Progress {
    /// Clients whose first join was answered.
    pub joined: AtomicUsize,
    /// Clients whose first socket ended.
    pub closed: AtomicUsize,
    /// Clients whose join on the node they end up on was answered.
    pub resumed: AtomicUsize,
    /// Clients pushed everything published before that answer.
    pub caught_up: AtomicUsize,
    /// The highest offset the publisher has had acknowledged.
    pub head: Arc<AtomicI64>,
    /// Ends every client.
    pub stop: CancellationToken,
}

/// Where a client joins.
#[derive(Clone, Copy)]
pub enum Plan {
    /// Joins `first` after `after`; when that socket ends, waits `pause` and resumes on `then`.
    Storm {
        first: SocketAddr,
        then: SocketAddr,
        after: i64,
        pause: Duration,
    },
    /// Joins `node` after `after` (a fresh join; the bench's timer starts at once).
    Fresh { node: SocketAddr, after: i64 },
}

/// What one client saw.
pub struct Outcome {
    pub ledger: Ledger,
    /// When the socket of the first join ended, and its close code (0: no close frame).
    pub closed: Option<(Instant, u16)>,
    /// The reason of that close, unless it was the drain's (code 1001).
    pub close_reason: Option<String>,
    /// When the client started resuming: its socket's close (storm) or its start (fresh).
    pub started: Instant,
    /// When its join on the last node was answered.
    pub resumed: Option<Instant>,
    /// When it had been pushed everything published before that answer.
    pub caught_up: Option<Instant>,
    /// Offsets to replay at that answer: the publisher's head then, minus `after_offset`.
    pub backlog: i64,
    /// Failed connection attempts before the resume was answered.
    pub retries: u32,
    /// Sockets that ended after the resume (each reconnected to the same node).
    pub later_closes: u32,
}

/// One joined socket and the bytes read past the last whole frame.
struct Conn {
    tcp: TcpStream,
    buf: BytesMut,
}

/// How a socket ended.
enum End {
    Stopped,
    /// A close frame with its code and reason, the connection's end (0), or a channel error.
    Closed(u16, String),
}

impl Conn {
    /// Connects, upgrades and joins; the answer must be `ok`.
    async fn open(http: SocketAddr, sub: &str, jwt: &str, after: i64) -> Result<Conn> {
        let mut tcp = TcpStream::connect(http).await?;
        tcp.set_nodelay(true)?;
        let upgrade = format!(
            "GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: {http}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(upgrade.as_bytes()).await?;
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let end = read_head(&mut tcp, &mut buf).await?;
        if !buf.starts_with(b"HTTP/1.1 101") {
            bail!("upgrade refused: {}", String::from_utf8_lossy(&buf[..end]));
        }
        buf.advance(end);
        let join = serde_json::json!(["1", "1", format!("events:{sub}"), "phx_join",
            {"consumer_token": jwt, "after_offset": after}]);
        tcp.write_all(&client_frame(0x1, join.to_string().as_bytes()))
            .await?;
        loop {
            if let Some((op, payload)) = frame(&buf)? {
                let text = String::from_utf8_lossy(&buf[payload.clone()]).into_owned();
                buf.advance(payload.end);
                if op == 0x1 && text.contains("phx_reply") && text.contains("\"ok\"") {
                    return Ok(Conn { tcp, buf });
                }
                bail!("join refused (opcode {op}): {text}");
            }
            if tcp.read_buf(&mut buf).await? == 0 {
                bail!("connection closed before the join reply");
            }
        }
    }

    /// Feeds the ledger until the socket ends or the bench stops; marks the catch-up moment
    /// once the ledger reaches `target`.
    async fn run(
        &mut self,
        ledger: &mut Ledger,
        target: i64,
        caught_up: &mut Option<Instant>,
        progress: &Progress,
    ) -> End {
        loop {
            loop {
                let (op, payload) = match frame(&self.buf) {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(_) => return End::Closed(0, String::new()),
                };
                let body = &self.buf[payload.clone()];
                match op {
                    0x1 => match pushed_offset(body) {
                        Some(o) => ledger.see(o),
                        // phx_error or phx_close: the channel ended; rejoin.
                        None if memchr::memmem::find(body, b"phx_").is_some() => {
                            return End::Closed(0, String::new());
                        }
                        None => {}
                    },
                    0x8 => {
                        let code = body
                            .get(..2)
                            .map_or(0, |c| u16::from_be_bytes([c[0], c[1]]));
                        let reason = String::from_utf8_lossy(body.get(2..).unwrap_or_default());
                        return End::Closed(code, reason.into_owned());
                    }
                    0x9 => {
                        let pong = client_frame(0xA, body);
                        if self.tcp.write_all(&pong).await.is_err() {
                            return End::Closed(0, String::new());
                        }
                    }
                    _ => {}
                }
                self.buf.advance(payload.end);
            }
            if caught_up.is_none() && ledger.last() >= target {
                *caught_up = Some(Instant::now());
                progress.caught_up.fetch_add(1, Ordering::Relaxed);
            }
            self.buf.reserve(16 * 1024);
            let read = tokio::select! {
                _ = progress.stop.cancelled() => return End::Stopped,
                r = self.tcp.read_buf(&mut self.buf) => r,
            };
            if !matches!(read, Ok(n) if n > 0) {
                return End::Closed(0, String::new());
            }
        }
    }
}

/// Runs one client until the bench stops it.
pub async fn client(plan: Plan, sub: Arc<str>, jwt: Arc<str>, p: Arc<Progress>) -> Outcome {
    let (node, after) = match plan {
        Plan::Storm { first, after, .. } => (first, after),
        Plan::Fresh { node, after } => (node, after),
    };
    let mut out = Outcome {
        ledger: Ledger::new(after),
        closed: None,
        close_reason: None,
        started: Instant::now(),
        resumed: None,
        caught_up: None,
        backlog: 0,
        retries: 0,
        later_closes: 0,
    };
    let mut node = node;
    if let Plan::Storm { then, pause, .. } = plan {
        // The first join (not measured): retried until it works or the bench stops.
        let Some(mut conn) = connect(node, &sub, &jwt, after, &p, &mut 0).await else {
            return out;
        };
        p.joined.fetch_add(1, Ordering::Relaxed);
        let mut never = None; // the first node's pushes are not a resume
        let end = conn.run(&mut out.ledger, i64::MAX, &mut never, &p).await;
        let End::Closed(code, reason) = end else {
            return out;
        };
        out.close_reason = (code != 1001).then_some(reason);
        drop(conn);
        out.started = Instant::now();
        out.closed = Some((out.started, code));
        p.closed.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(pause).await;
        node = then;
    }
    let mut target = None;
    loop {
        let after = out.ledger.last();
        let Some(mut conn) = connect(node, &sub, &jwt, after, &p, &mut out.retries).await else {
            return out;
        };
        let target = *target.get_or_insert_with(|| {
            out.resumed = Some(Instant::now());
            let head = p.head.load(Ordering::Relaxed);
            out.backlog = (head - after).max(0);
            p.resumed.fetch_add(1, Ordering::Relaxed);
            head
        });
        let mut caught_up = out.caught_up;
        let end = conn.run(&mut out.ledger, target, &mut caught_up, &p).await;
        out.caught_up = caught_up;
        if let End::Stopped = end {
            return out;
        }
        out.later_closes += 1;
    }
}

/// Connects and joins, retrying every [`RETRY`]; `None` once the bench stops.
async fn connect(
    node: SocketAddr,
    sub: &str,
    jwt: &str,
    after: i64,
    p: &Progress,
    retries: &mut u32,
) -> Option<Conn> {
    loop {
        tokio::select! {
            _ = p.stop.cancelled() => return None,
            c = Conn::open(node, sub, jwt, after) => match c {
                Ok(conn) => return Some(conn),
                Err(_) => *retries += 1,
            },
        }
        tokio::select! {
            _ = p.stop.cancelled() => return None,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_of_pushes_only() {
        let push = br#"[null,null,"events:x","event:published",{"data":{"t":1,"p":"xx"},"offset":4711,"context":{}}]"#;
        assert_eq!(pushed_offset(push), Some(4711));
        let reply =
            br#"["1","1","events:x","phx_reply",{"status":"ok","response":{"first_offset":1}}]"#;
        assert_eq!(pushed_offset(reply), None);
    }
}
