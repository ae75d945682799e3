//! The websocket clients of `er-live-bench`: many Phoenix v2 connections joined to one
//! subscription, each counting deliveries and (while recording) the publish-to-receipt latency
//! read from the timestamp in the event data.
//!
//! The clients stand in for browsers on other machines, but here they share the node's two
//! cores, so every microsecond they spend is taken from the node they measure. They therefore
//! speak the little of RFC 6455 they need directly on a tokio `TcpStream`: one upgrade request,
//! masked text frames out (the join), unmasked frames in, read into a buffer that is never
//! zeroed, many frames per read, one clock reading and one shared-counter update per read.
//! (tokio-tungstenite clients spent ~19 µs of CPU per delivery, a third of the machine, in
//! `perf`: buffer zeroing, a substring searcher built per message, a task wake-up per frame.)

use anyhow::{Context, Result, bail};
use bytes::{Buf, BytesMut};
use futures::StreamExt;
use memchr::memmem::Finder;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Microseconds since the epoch (publisher and clients share the machine's clock).
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Where the publish timestamp starts in a pushed event (the bench publishes `{"t":<µs>}`).
static STAMP: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"data\":{\"t\":"));

/// The timestamp in a pushed event, found without parsing the whole message.
fn stamp(text: &[u8]) -> Option<u64> {
    let at = STAMP.find(text)? + STAMP.needle().len();
    let digits = text[at..].iter().take_while(|b| b.is_ascii_digit());
    let mut n = None;
    for d in digits {
        n = Some(n.unwrap_or(0u64) * 10 + u64::from(d - b'0'));
    }
    n
}

/// One complete frame at the start of `buf`: its opcode, payload range and total length.
pub(crate) fn frame(buf: &[u8]) -> Result<Option<(u8, std::ops::Range<usize>)>> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b0 & 0x80 == 0 || b1 & 0x80 != 0 {
        bail!("fragmented or masked frame from the server (not sent by this node)");
    }
    let (len, header) = match b1 & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into()?) as usize, 10),
        126 | 127 => return Ok(None),
        n => (n as usize, 2),
    };
    Ok((buf.len() >= header + len).then(|| (b0 & 0x0f, header..header + len)))
}

/// A masked client frame (RFC 6455 requires clients to mask; the key need not be secret here).
pub(crate) fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&KEY);
    f.extend(payload.iter().zip(KEY.iter().cycle()).map(|(b, k)| b ^ k));
    f
}

/// Reads until `buf` holds an HTTP head (request or response); returns its length.
pub(crate) async fn read_head(tcp: &mut TcpStream, buf: &mut BytesMut) -> Result<usize> {
    loop {
        if let Some(i) = memchr::memmem::find(buf, b"\r\n\r\n") {
            return Ok(i + 4);
        }
        if tcp.read_buf(buf).await? == 0 {
            bail!("connection closed during the websocket upgrade");
        }
    }
}

/// One joined connection, with whatever the server sent after the join reply.
struct Conn {
    tcp: TcpStream,
    buf: BytesMut,
}

impl Conn {
    async fn open(http: SocketAddr, join: &str) -> Result<Conn> {
        let mut tcp = TcpStream::connect(http).await?;
        tcp.set_nodelay(true)?; // as browsers do
        let upgrade = format!(
            "GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: {http}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(upgrade.as_bytes()).await?;
        let mut buf = BytesMut::with_capacity(4096);
        let end = read_head(&mut tcp, &mut buf).await?;
        if !buf.starts_with(b"HTTP/1.1 101") {
            bail!("upgrade refused: {}", String::from_utf8_lossy(&buf[..end]));
        }
        buf.advance(end);
        tcp.write_all(&client_frame(0x1, join.as_bytes())).await?;
        let mut conn = Conn { tcp, buf };
        loop {
            if let Some((op, payload)) = frame(&conn.buf)? {
                let text = conn.buf[payload.clone()].to_vec();
                conn.buf.advance(payload.end);
                let text = String::from_utf8_lossy(&text);
                match op {
                    0x1 if text.contains("phx_reply") && text.contains("\"ok\"") => {
                        return Ok(conn);
                    }
                    0x1 => bail!("join failed: {text}"),
                    op => bail!("join failed: frame with opcode {op}"),
                }
            }
            // No complete frame yet.
            if conn.tcp.read_buf(&mut conn.buf).await? == 0 {
                bail!("connection closed before the join reply");
            }
        }
    }

    /// Reads until stopped or closed; answers pings; returns the latency samples.
    async fn run(mut self, shared: Shared) -> Vec<u64> {
        let mut samples = Vec::new();
        loop {
            self.buf.reserve(16 * 1024);
            let read = tokio::select! {
                _ = shared.stop.cancelled() => return samples,
                r = self.tcp.read_buf(&mut self.buf) => r,
            };
            if !matches!(read, Ok(n) if n > 0) {
                shared.closed.fetch_add(1, Ordering::Relaxed);
                return samples;
            }
            let now = now_micros();
            let record = shared.record.load(Ordering::Relaxed);
            let mut got = 0;
            loop {
                let (op, payload) = match frame(&self.buf) {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(_) => {
                        shared.closed.fetch_add(1, Ordering::Relaxed);
                        return samples;
                    }
                };
                match op {
                    0x1 => {
                        if let Some(t0) = stamp(&self.buf[payload.clone()]) {
                            got += 1;
                            if record {
                                samples.push(now.saturating_sub(t0));
                            }
                        }
                    }
                    0x9 => {
                        let pong = client_frame(0xA, &self.buf[payload.clone()]);
                        if self.tcp.write_all(&pong).await.is_err() {
                            shared.closed.fetch_add(1, Ordering::Relaxed);
                            return samples;
                        }
                    }
                    0x8 => {
                        shared.closed.fetch_add(1, Ordering::Relaxed);
                        return samples;
                    }
                    _ => {}
                }
                self.buf.advance(payload.end);
            }
            shared.received.fetch_add(got, Ordering::Relaxed);
        }
    }
}

/// What every client of a set updates or watches (the bench reads it through [`Clients`]).
#[derive(Clone, Default)]
pub struct Shared {
    /// Deliveries counted.
    pub received: Arc<AtomicU64>,
    /// Clients whose connection ended (closed by the server, or an error).
    pub closed: Arc<AtomicU64>,
    /// Whether latency samples are kept.
    pub record: Arc<AtomicBool>,
    /// Ends every client's task.
    pub stop: CancellationToken,
}

/// Websocket clients joined to one subscription, counting deliveries.
pub struct Clients {
    tasks: Vec<tokio::task::JoinHandle<Vec<u64>>>,
    shared: Shared,
}

impl std::ops::Deref for Clients {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
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
        let shared = Shared::default();
        let join = serde_json::json!(["1", "1", format!("events:{sub}"), "phx_join", {"consumer_token": jwt}])
            .to_string();
        let mut pending = futures::stream::iter(0..n)
            .map(|_| Conn::open(http, &join))
            .buffer_unordered(parallel);
        let mut tasks = Vec::with_capacity(n);
        while let Some(conn) = pending.next().await {
            let conn = conn.context("opening a bench websocket")?;
            tasks.push(tokio::spawn(conn.run(shared.clone())));
        }
        Ok(Clients { tasks, shared })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_stamps() {
        let text = br#"[null,null,"events:x","event:published",{"data":{"t":1234},"offset":1}]"#;
        let mut wire = vec![0x81, 126];
        wire.extend_from_slice(&(text.len() as u16).to_be_bytes());
        wire.extend_from_slice(text);
        assert_eq!(frame(&wire[..3]).unwrap(), None);
        let (op, payload) = frame(&wire).unwrap().unwrap();
        assert_eq!((op, stamp(&wire[payload])), (1, Some(1234)));
        let masked = client_frame(1, b"hi");
        assert_eq!(&masked[..2], &[0x81, 0x82]);
        assert_eq!(masked[6] ^ masked[2], b'h');
    }
}
