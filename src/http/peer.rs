//! Where a long-lived connection (websocket, SSE stream) comes from, and how many of them one
//! source may hold open on this node.
//!
//! The source is the TCP peer, unless the peer is a proxy listed in `ER_TRUSTED_PROXIES`:
//! then it is the rightmost `X-Forwarded-For` entry that is not itself a trusted proxy (the
//! entries to its left were written by the client and prove nothing). Without trusted proxies
//! the header is ignored, so a client cannot choose its own address. An IPv6 source counts by
//! its /64, which one host usually has to itself.

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

/// The source of a request from `peer` with these headers, trusting `X-Forwarded-For` only
/// from the `trusted` proxies (see the module header). Sign-in throttling and [`Peers`] both
/// count this address.
pub fn source(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(&ip));
    if !is_trusted(peer) {
        return peer;
    }
    // Every X-Forwarded-For line, in order, read from the right.
    let mut source = peer;
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            break; // garbage: the last hop we could read stands
        };
        source = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    source
}

/// The TCP peer of a request, when the server recorded it (it does: see `app::run`).
pub struct PeerAddr(pub Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for PeerAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>();
        Ok(PeerAddr(peer.map(|c| c.0)))
    }
}

/// The sources of this node's long-lived connections.
pub struct Peers {
    trusted: Vec<IpNet>,
    per_source: usize,
    // A std mutex: held only to bump a count.
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// A place held by one connection of a source; dropping it frees the place.
pub struct SourcePermit {
    peers: Arc<Peers>,
    key: IpAddr,
}

/// A source already holds its limit of connections.
#[derive(Debug)]
pub struct TooMany {
    /// The source, as counted.
    pub source: IpAddr,
    /// The limit.
    pub limit: usize,
}

impl std::fmt::Display for TooMany {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "too many connections from {}: at most {} per address on a node",
            self.source, self.limit
        )
    }
}

impl Peers {
    /// Trusting `X-Forwarded-For` from `trusted`, with `per_source` places each (0 = no limit).
    pub fn new(trusted: Vec<IpNet>, per_source: usize) -> Arc<Peers> {
        Arc::new(Peers {
            trusted,
            per_source,
            open: Mutex::default(),
        })
    }

    /// The source of a request from `peer` with these headers.
    pub fn source(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> IpAddr {
        let peer = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.ip());
        source(peer, headers, &self.trusted)
    }

    /// A place for one more connection of `source`.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Result<SourcePermit, TooMany> {
        let key = bucket(source);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(key).or_insert(0);
        if self.per_source > 0 && *n >= self.per_source {
            return Err(TooMany {
                source: key,
                limit: self.per_source,
            });
        }
        *n += 1;
        Ok(SourcePermit {
            peers: self.clone(),
            key,
        })
    }

    /// Connections counted for `source` now.
    pub fn open(&self, source: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&bucket(source)).copied().unwrap_or(0)
    }
}

impl Drop for SourcePermit {
    fn drop(&mut self) {
        let mut open = self.peers.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// What one source counts as: the address, or an IPv6 address's /64.
fn bucket(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// One `X-Forwarded-For` entry: an address, with a port or in brackets as some proxies write.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .or_else(|_| hop.trim_matches(['[', ']']).parse::<IpAddr>())
        .ok()
        .map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let peers = Peers::new(vec!["10.0.0.0/8".parse().unwrap()], 0);
        let from = |peer: &str, xff: &[&str]| {
            peers
                .source(Some(peer.parse().unwrap()), &headers(xff))
                .to_string()
        };
        // Not a proxy: the header is the client's own claim.
        assert_eq!(from("203.0.113.9:5000", &["1.2.3.4"]), "203.0.113.9");
        // A trusted proxy: the rightmost untrusted hop, over several header lines.
        assert_eq!(
            from("10.0.0.2:5000", &["1.2.3.4, 198.51.100.7"]),
            "198.51.100.7"
        );
        assert_eq!(
            from("10.0.0.2:5000", &["6.6.6.6", "198.51.100.7, 10.1.1.1"]),
            "198.51.100.7"
        );
        assert_eq!(from("10.0.0.2:5000", &["[2001:db8::1]:443"]), "2001:db8::1");
        assert_eq!(from("[::ffff:10.0.0.2]:5000", &["1.2.3.4:80"]), "1.2.3.4");
        // No header, or only proxies, or garbage: the nearest hop we can name.
        assert_eq!(from("10.0.0.2:5000", &[]), "10.0.0.2");
        assert_eq!(from("10.0.0.2:5000", &["10.0.0.3"]), "10.0.0.3");
        assert_eq!(from("10.0.0.2:5000", &["1.2.3.4, junk"]), "10.0.0.2");
        assert_eq!(
            peers.source(None, &headers(&["1.2.3.4"])).to_string(),
            "0.0.0.0"
        );
    }

    #[test]
    fn places_are_counted_per_source_and_freed_on_drop() {
        let peers = Peers::new(vec![], 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let v6a: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:0:1::2".parse().unwrap();
        let p1 = peers.admit(a).unwrap();
        let _p2 = peers.admit(a).unwrap();
        let refused = peers.admit(a).err().unwrap();
        assert_eq!(refused.limit, 2);
        assert!(refused.to_string().contains("192.0.2.1"));
        drop(p1);
        let _p3 = peers.admit(a).unwrap();
        assert_eq!(peers.open(a), 2);
        // One /64 is one source.
        let _q1 = peers.admit(v6a).unwrap();
        let _q2 = peers.admit(v6b).unwrap();
        assert!(peers.admit("2001:db8:0:1::3".parse().unwrap()).is_err());
        assert!(peers.admit("2001:db8:0:2::1".parse().unwrap()).is_ok());
        drop((_p2, _p3));
        assert_eq!(peers.open(a), 0);
        assert!(Peers::new(vec![], 0).admit(a).is_ok());
    }
}
