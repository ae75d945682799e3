//! A real HTTP/1.1 webhook receiver for tests, on 127.0.0.1:0. It records every request
//! (headers, body, the event's offset and id) and answers as scripted: a status, 429 with
//! Retry-After, 410, a redirect, a hang, or a connection reset. Written on plain tokio sockets
//! so a test can also misbehave at the connection level, which a framework would not allow.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the receiver answers one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// That status, empty body.
    Status(u16),
    /// 429 with `Retry-After: <secs>`.
    TooMany(u64),
    /// 302 to another URL.
    Redirect(String),
    /// Never answer (the client must time out).
    Hang,
    /// Close the connection without answering.
    Reset,
}

/// One received request.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub offset: i64,
    pub event_id: String,
    pub subscription: String,
    pub at: Instant,
    /// What was answered.
    pub reply: Reply,
}

#[derive(Default)]
struct State {
    log: Vec<Received>,
    script: VecDeque<Reply>,
    /// Answer for requests about these offsets, whatever the script says.
    by_offset: HashMap<i64, Reply>,
    default: Option<Reply>,
    in_flight: HashMap<String, usize>,
    max_in_flight: HashMap<String, usize>,
}

/// The receiver; cheap to clone.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    /// Delay before each answer, to make overlapping deliveries visible.
    delay: Duration,
}

impl Receiver {
    pub async fn start() -> Receiver {
        Self::start_with_delay(Duration::ZERO).await
    }

    pub async fn start_with_delay(delay: Duration) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let r = Receiver {
            addr: listener.local_addr().unwrap(),
            state: Arc::default(),
            delay,
        };
        let server = r.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let s = server.clone();
                tokio::spawn(async move { s.serve(sock).await });
            }
        });
        r
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next requests get these answers, in order; then 200s (or the default).
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().unwrap().script.extend(replies);
    }

    pub fn on_offset(&self, offset: i64, reply: Reply) {
        self.state.lock().unwrap().by_offset.insert(offset, reply);
    }

    pub fn set_default(&self, reply: Option<Reply>) {
        self.state.lock().unwrap().default = reply;
    }

    pub fn log(&self) -> Vec<Received> {
        self.state.lock().unwrap().log.clone()
    }

    /// Requests answered 2xx, for one subscription (all when `sub` is empty), in arrival order.
    pub fn acked_offsets(&self, sub: &str) -> Vec<i64> {
        self.log()
            .iter()
            .filter(|r| sub.is_empty() || r.subscription == sub)
            .filter(|r| matches!(r.reply, Reply::Status(200..=299)))
            .map(|r| r.offset)
            .collect()
    }

    /// Every request received for one subscription, in arrival order.
    pub fn offsets(&self, sub: &str) -> Vec<i64> {
        self.log()
            .iter()
            .filter(|r| sub.is_empty() || r.subscription == sub)
            .map(|r| r.offset)
            .collect()
    }

    /// Most requests of one subscription that were ever in flight at once.
    pub fn max_in_flight(&self, sub: &str) -> usize {
        *self
            .state
            .lock()
            .unwrap()
            .max_in_flight
            .get(sub)
            .unwrap_or(&0)
    }

    /// Waits until `f` holds for the log, or panics after `secs`.
    pub async fn wait_for(&self, secs: u64, what: &str, f: impl Fn(&[Received]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if f(&self.log()) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; received {:?}",
                    self.offsets("")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn serve(&self, mut sock: TcpStream) {
        let mut buf = Vec::new();
        loop {
            let Some((head, body)) = read_request(&mut sock, &mut buf).await else {
                return;
            };
            let headers = parse_headers(&head);
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let offset = json["offset"].as_i64().unwrap_or(-1);
            let sub = headers
                .get("x-event-relay-subscription-id")
                .cloned()
                .unwrap_or_default();
            let reply = {
                let mut st = self.state.lock().unwrap();
                let reply = st
                    .by_offset
                    .get(&offset)
                    .cloned()
                    .or_else(|| st.script.pop_front())
                    .or_else(|| st.default.clone())
                    .unwrap_or(Reply::Status(200));
                st.log.push(Received {
                    path: head.split(' ').nth(1).unwrap_or("").to_owned(),
                    event_id: headers.get("webhook-id").cloned().unwrap_or_default(),
                    headers: headers.clone(),
                    body: body.clone(),
                    offset,
                    subscription: sub.clone(),
                    at: Instant::now(),
                    reply: reply.clone(),
                });
                let n = st.in_flight.entry(sub.clone()).or_default();
                *n += 1;
                let n = *n;
                let max = st.max_in_flight.entry(sub.clone()).or_default();
                *max = (*max).max(n);
                reply
            };
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            let done = |s: &Self| *s.state.lock().unwrap().in_flight.get_mut(&sub).unwrap() -= 1;
            let response = match &reply {
                Reply::Status(code) => format!("HTTP/1.1 {code} X\r\ncontent-length: 2\r\n\r\nok"),
                Reply::TooMany(secs) => format!(
                    "HTTP/1.1 429 Too Many\r\nretry-after: {secs}\r\ncontent-length: 4\r\n\r\nslow"
                ),
                Reply::Redirect(to) => {
                    format!("HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\n\r\n")
                }
                Reply::Hang => {
                    // Hold the connection until the client gives up and closes it.
                    let mut sink = [0u8; 64];
                    while matches!(sock.read(&mut sink).await, Ok(n) if n > 0) {}
                    done(self);
                    return;
                }
                Reply::Reset => {
                    done(self);
                    return;
                }
            };
            done(self);
            if sock.write_all(response.as_bytes()).await.is_err() {
                return;
            }
        }
    }
}

/// Reads one request (head and Content-Length body); `None` when the peer closed.
async fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len = parse_headers(&head)
                .get("content-length")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let mut chunk = [0u8; 16384];
                let n = sock.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[end + 4..end + 4 + len].to_vec();
            buf.drain(..end + 4 + len);
            return Some((head, body));
        }
        let mut chunk = [0u8; 16384];
        let n = sock.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn parse_headers(head: &str) -> HashMap<String, String> {
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect()
}

/// True when `offsets` is in order with nothing skipped from `first` to `last`, allowing an
/// event to repeat right after itself (the at-least-once redelivery of an in-flight event).
pub fn in_order_at_least_once(offsets: &[i64], first: i64, last: i64) -> bool {
    let mut expect = first;
    for &o in offsets {
        if o == expect {
            expect += 1;
        } else if o != expect - 1 {
            return false;
        }
    }
    expect == last + 1
}
