//! The websocket endpoint `/socket/websocket`, speaking the Phoenix Channels protocol of the
//! original: heartbeats, `phx_join` on `events:<subscription_id>` with consumer and/or
//! producer JWTs (and `after_offset` to resume), `event:published` pushes, `publish_events`
//! from producers, `refresh_token`, `phx_leave`.
//!
//! Each connection is a reader (this task), a writer task draining a bounded queue of
//! outgoing messages and pinging, and one pump task per joined channel moving its [`Feed`]
//! into that queue. Nothing ever waits for a client: a pump that finds the queue full, or a
//! feed that fell behind the hub, disconnects the client with a close reason.
//!
//! An unauthenticated socket is cheap and short-lived: it holds a place of the node and of its
//! source address ([`Peers`]), its messages are limited to 64 KiB and may only be heartbeats,
//! joins and leaves, and it is closed when it has not joined a channel within
//! `ER_WS_JOIN_TIMEOUT_SECONDS`. Any socket that sends nothing at all (not even a pong to the
//! node's pings) for `ER_WS_IDLE_TIMEOUT_SECONDS` is closed, as are sockets older than their
//! drawn lifetime ([`Drain::lifetime`]); a draining node closes each at its slot.
//!
//! [`Feed`]: crate::live::Feed
//! [`Drain::lifetime`]: crate::drain::Drain::lifetime

mod channels;
mod io;

pub use io::{CLIENT_BUFFER, CLIENT_BYTES};

use super::peer::{PeerAddr, Peers, TooMany};
use super::phoenix::Vsn;
use crate::app::App;
use crate::config::WebSocketLimits;
use crate::drain::DRAINING;
use crate::error::Error;
use crate::live::ACCESS_CHECK;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use channels::Conn;
use futures::StreamExt;
use io::{
    CLOSE_GOING_AWAY, CLOSE_POLICY, CLOSE_TIMEOUT, CLOSE_TOO_BIG, CLOSE_UNSUPPORTED, Kill,
    WRITE_BUFFER, write,
};
use std::sync::Arc;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};

/// Largest message a socket may send before it has joined a channel.
pub const UNJOINED_MAX_MESSAGE: usize = 64 * 1024;

/// State of the websocket route.
#[derive(Clone)]
pub struct Sockets {
    app: App,
    peers: Arc<Peers>,
    limits: WebSocketLimits,
}

/// The `/socket/websocket` route; `peers` counts places per source address.
pub fn route(app: &App, peers: Arc<Peers>) -> MethodRouter<App> {
    let limits = app.http.websocket;
    get(upgrade).with_state(Sockets {
        app: app.clone(),
        peers,
        limits,
    })
}

/// The query of the upgrade request (other parameters of a Phoenix client are ignored).
#[derive(serde::Deserialize)]
struct Params {
    vsn: Option<String>,
}

async fn upgrade(
    State(s): State<Sockets>,
    PeerAddr(peer): PeerAddr,
    headers: HeaderMap,
    Query(q): Query<Params>,
    ws: WebSocketUpgrade,
) -> Response {
    if s.app.is_draining() {
        return Error::Unavailable(format!("{DRAINING}; connect to another node")).into_response();
    }
    let Some(permit) = s.app.live.admit() else {
        return Error::Unavailable("node is at its connection limit; connect to another".into())
            .into_response();
    };
    let source = s.peers.source(peer, &headers);
    let place = s.peers.admit(source);
    let vsn = Vsn::parse(q.vsn.as_deref());
    let max = s.limits.max_message;
    let drain = s.app.drain.clone();
    // Small read buffers keep an idle connection cheap; a larger message or frame is refused
    // from its header, before its payload is read.
    ws.read_buffer_size(4 * 1024)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| {
            drain.track(async move {
                match place {
                    Ok(place) => {
                        run(s, vsn, socket).await;
                        drop(place);
                    }
                    Err(too_many) => refuse(socket, too_many).await,
                }
                drop(permit);
            })
        })
}

/// Closes a socket whose source holds its limit, saying so (a browser cannot read the body
/// of a refused upgrade, but it sees a close reason).
async fn refuse(mut socket: WebSocket, too_many: TooMany) {
    tracing::info!(source = %too_many.source, "refusing a websocket: too many from its address");
    let frame = CloseFrame {
        code: CLOSE_POLICY,
        reason: too_many.to_string().into(),
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
}

/// Why a read failed, as a close: a message over the limit says so; anything else just ends.
fn read_failed(e: axum::Error, limit: usize, kill: &Kill) {
    let too_big = e.into_inner().downcast::<WsError>().is_ok_and(|e| {
        matches!(
            *e,
            WsError::Capacity(CapacityError::MessageTooLong { .. } | CapacityError::TooManyHeaders)
        )
    });
    if too_big {
        kill.fire(
            CLOSE_TOO_BIG,
            format!("message too big: at most {limit} bytes"),
        );
    } else {
        kill.token.cancel();
    }
}

async fn run(s: Sockets, vsn: Vsn, socket: WebSocket) {
    let limits = s.limits;
    let (sink, mut stream) = socket.split();
    let (out, rx) = io::queue();
    let kill = Kill::default();
    let writer = tokio::spawn(write(sink, rx, kill.clone(), limits.keepalive));
    let drain = s.app.drain.clone();
    let turn = drain.turn(drain.slot());
    tokio::pin!(turn);
    let opened = Instant::now();
    let join_by = sleep_until(opened + limits.join_timeout);
    let idle = sleep(limits.idle_timeout);
    let lifetime = drain.lifetime();
    let recycles = lifetime.is_some();
    let retire = sleep_until(opened + lifetime.unwrap_or(limits.idle_timeout));
    tokio::pin!(join_by, idle, retire);
    let mut conn = Conn::new(s.app, vsn, out, kill.clone());
    let mut check = tokio::time::interval(ACCESS_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = kill.token.cancelled() => break,
            _ = &mut turn => {
                kill.fire(CLOSE_GOING_AWAY, DRAINING);
                break;
            }
            _ = &mut join_by, if !conn.joined() => {
                let secs = limits.join_timeout.as_secs();
                kill.fire(CLOSE_POLICY, format!("no channel joined within {secs} s"));
                break;
            }
            _ = &mut idle => {
                let secs = limits.idle_timeout.as_secs();
                kill.fire(CLOSE_POLICY, format!("idle: nothing received for {secs} s"));
                break;
            }
            _ = &mut retire, if recycles => {
                kill.fire(CLOSE_GOING_AWAY, "connection age limit: reconnect");
                break;
            }
            _ = check.tick() => if let Err(revoked) = conn.check_access().await {
                kill.fire(CLOSE_POLICY, revoked.to_string());
                break;
            },
            m = stream.next() => {
                // Anything the client sends, a pong included, shows it is there.
                idle.as_mut().reset(Instant::now() + limits.idle_timeout);
                match m {
                    Some(Ok(Message::Text(t))) => {
                        if !conn.joined() && t.len() > UNJOINED_MAX_MESSAGE {
                            kill.fire(CLOSE_TOO_BIG, format!(
                                "message too big: at most {UNJOINED_MAX_MESSAGE} bytes before a join"
                            ));
                            break;
                        }
                        conn.handle(t.as_str()).await;
                    }
                    Some(Ok(Message::Binary(_))) => {
                        kill.fire(CLOSE_UNSUPPORTED, "binary messages are not supported");
                    }
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Err(e)) => {
                        read_failed(e, limits.max_message, &kill);
                        break;
                    }
                    Some(Ok(_)) => {} // pings are answered by the websocket library
                }
            }
        }
    }
    drop(conn); // stops the pumps
    kill.token.cancel();
    let _ = tokio::time::timeout(CLOSE_TIMEOUT * 2, writer).await;
}
