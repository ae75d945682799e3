//! The baselines of `er-live-bench`, measured in the same run as the nodes: raw Redis pub/sub
//! latency, and the fan-out floor.
//!
//! The floor is what this machine itself costs to push the same frames to the same clients,
//! with no node in the way. A child process of the bench (the bench's own
//! binary with the hidden `--floor-sender`) accepts the clients' websocket upgrades and joins,
//! then runs one loop that, for every frame due by now, writes all of them to each socket in
//! turn (many frames per write when behind, as a node does). Each frame carries the moment it
//! was due as its publish time, so its latency is measured exactly like a node's.
//!
//! No Postgres, no Redis, no second node, no per-client state: what is left is loopback TCP
//! (the send, the receiving side's softirq, waking the reader) and the clients themselves. A
//! node's figure divided by this one says how much the node adds; the floor says what no
//! server on this machine could beat.

use crate::live_clients::{Clients, now_micros, read_head};
use anyhow::{Context, Result, bail};
use bytes::{Buf, BytesMut};
use fred::prelude::*;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio::task::JoinSet;

/// Raw Redis pub/sub latency at `rate` messages per second, one subscriber.
pub async fn redis(url: &str, rate: u64, seconds: u64) -> Result<Vec<u64>> {
    let publisher = Builder::from_config(Config::from_url(url)?).build()?;
    let subscriber = Builder::from_config(Config::from_url(url)?).build_subscriber_client()?;
    publisher.init().await?;
    subscriber.init().await?;
    let channel = format!("bench-baseline-{}", uuid::Uuid::new_v4().simple());
    subscriber.subscribe(channel.clone()).await?;
    let mut rx = subscriber.message_rx();
    let n = rate * seconds;
    let collect = tokio::spawn(async move {
        let mut v = Vec::with_capacity(n as usize);
        while v.len() < n as usize {
            match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
                Ok(Ok(m)) => {
                    let t0: u64 = m.value.convert().unwrap_or(0);
                    v.push(now_micros().saturating_sub(t0));
                }
                _ => break,
            }
        }
        v
    });
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    for _ in 0..n {
        tick.tick().await;
        let _: i64 = publisher.publish(channel.as_str(), now_micros()).await?;
    }
    let mut v = collect.await?;
    v.sort_unstable();
    let _ = publisher.quit().await;
    let _ = subscriber.quit().await;
    Ok(v)
}

/// Runs the floor with `n` clients at `rate` frames per second for `seconds`; returns every
/// delivery's latency in microseconds, sorted.
pub async fn measure(n: usize, rate: u64, seconds: u64) -> Result<Vec<u64>> {
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "--floor-sender",
            &n.to_string(),
            "--rate",
            &rate.to_string(),
        ])
        .args(["--seconds", &seconds.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the floor sender")?;
    let mut lines = BufReader::new(child.stdout.take().context("sender stdout")?).lines();
    let addr: SocketAddr = lines
        .next_line()
        .await?
        .context("the floor sender printed no address")?
        .parse()?;
    let clients = Clients::connect(addr, n, "floor", "none", 100).await?;
    clients.record.store(true, Ordering::Relaxed);
    let mut go = child.stdin.take().context("sender stdin")?;
    go.write_all(b"go\n").await?;
    tokio::time::sleep(Duration::from_secs(seconds + 2)).await;
    clients.stop.cancel();
    let mut lat = clients.samples().await;
    lat.sort_unstable();
    let _ = child.kill().await;
    Ok(lat)
}

/// The child's side: accept `n` clients, then fan frames out until `seconds` have passed.
pub async fn sender(n: usize, rate: u64, seconds: u64) -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?);
    // The bench writes one line to start; its end of the pipe closing (it is done, or was
    // killed before it could stop this process) ends this process, so none is left behind.
    let (go_tx, go) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut stdin = BufReader::new(tokio::io::stdin());
        let mut line = String::new();
        if matches!(stdin.read_line(&mut line).await, Ok(n) if n > 0) {
            let _ = go_tx.send(());
            while matches!(stdin.read_line(&mut line).await, Ok(n) if n > 0) {}
        }
        std::process::exit(0);
    });
    let mut joining = JoinSet::new();
    let mut socks = Vec::with_capacity(n);
    while socks.len() < n {
        tokio::select! {
            accepted = listener.accept() => {
                joining.spawn(handshake(accepted?.0));
            }
            Some(joined) = joining.join_next() => socks.push(joined??),
        }
    }
    go.await?; // the bench is recording
    fan_out(socks, rate, seconds).await
}

/// Answers the upgrade (the bench's clients do not check the accept key) and the join.
async fn handshake(mut tcp: TcpStream) -> Result<TcpStream> {
    tcp.set_nodelay(true)?;
    let mut buf = BytesMut::with_capacity(4096);
    let end = read_head(&mut tcp, &mut buf).await?;
    buf.advance(end);
    tcp.write_all(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
    )
    .await?;
    // The join: one masked frame, whatever it says.
    while masked_frame_len(&buf).is_none_or(|len| buf.len() < len) {
        if tcp.read_buf(&mut buf).await? == 0 {
            bail!("closed before the join");
        }
    }
    let reply = r#"["1","1","events:floor","phx_reply",{"status":"ok","response":{}}]"#;
    tcp.write_all(&server_frame(reply.as_bytes())).await?;
    Ok(tcp)
}

/// The length of the masked client frame at the start of `buf`, once its header is in.
fn masked_frame_len(buf: &[u8]) -> Option<usize> {
    let len = match *buf.get(1)? & 0x7f {
        126 => u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize + 4,
        127 => u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize + 10,
        n => n as usize + 2,
    };
    Some(len + 4)
}

/// An unmasked text frame, as a server sends it.
fn server_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x81];
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= 0xffff => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

/// A push as a node sends it for a bench event (same fields and about the same length).
fn push(i: u64, stamp: u64) -> Vec<u8> {
    let text = format!(
        r#"[null,null,"events:00000000-0000-0000-0000-000000000000","event:published",{{"id":"{}","topic_name":"bench","topic_identifier":"","name":"p{i}_0","data":{{"t":{stamp}}},"source":"","group_key":"","reference_key":"","trace_key":"","user_id":"","anonymous_id":"","occurred_at":"2026-11-28T00:00:00.000000Z","offset":{},"context":{{}},"errors":[]}}]"#,
        uuid::Uuid::new_v4(),
        i + 1
    );
    server_frame(text.as_bytes())
}

/// One loop: every frame due by now, to every socket, then wait for the next one.
async fn fan_out(mut socks: Vec<TcpStream>, rate: u64, seconds: u64) -> Result<()> {
    let period = 1_000_000 / rate.max(1);
    let total = rate * seconds;
    let start = now_micros();
    let (mut sent, mut buf, mut woke) = (0u64, Vec::new(), 0);
    while sent < total {
        let due = ((now_micros() - start) / period + 1).min(total);
        if due == sent {
            let next = start + due * period;
            tokio::time::sleep(Duration::from_micros(next.saturating_sub(now_micros()))).await;
            woke = now_micros();
            continue;
        }
        buf.clear();
        for i in sent..due {
            // A frame due while this loop slept is published when the timer fires, as the
            // bench's paced publisher does; one due while it was writing, when it was due.
            buf.extend_from_slice(&push(i, (start + i * period).max(woke)));
        }
        sent = due;
        for s in socks.iter_mut() {
            s.write_all(&buf).await?;
        }
    }
    // Leave the sockets open until the bench has stopped its clients and closes stdin.
    std::future::pending().await
}
