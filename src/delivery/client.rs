//! The webhook HTTP client: one shared reqwest client with connect and total timeouts, no
//! redirects (a 3xx is a failed attempt), a capped response body, and a resolver that refuses
//! private, loopback and link-local addresses unless they are in the allow-list. Every address
//! a name resolves to is checked, and the connection only goes to checked addresses, so DNS
//! rebinding cannot slip an internal address past the check.
//!
//! "Internal" is every range of the IANA special-purpose registries that is not globally
//! reachable, plus the IPv6 forms that carry an IPv4 address a gateway would translate (NAT64,
//! 6to4, Teredo, IPv4-compatible and -translated): through those an IPv4 check is bypassed. No
//! well-kept crate has this notion on stable Rust (`IpAddr::is_global` is unstable, and the
//! backports are unmaintained and treat NAT64 and 6to4 as global), so it is a table here.

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

/// Most response-body bytes read; the rest is discarded (the connection is then closed).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Response-body bytes kept in the delivery record.
const RECORDED_BODY_BYTES: usize = 512;

/// Which destination addresses the client may connect to.
#[derive(Clone, Debug, Default)]
pub struct NetworkPolicy {
    allowed: Vec<IpNet>,
}

impl NetworkPolicy {
    /// Public addresses, plus anything inside `allowed`.
    pub fn new(allowed: Vec<IpNet>) -> Self {
        NetworkPolicy { allowed }
    }

    /// Whether the client may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.allowed.iter().any(|n| n.contains(&ip)) || !is_internal(ip)
    }
}

/// Ranges no public webhook receiver lives on, with what each is.
const INTERNAL: [(&str, &str); 31] = [
    ("0.0.0.0/8", "this network"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared address space (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved (and broadcast)"),
    ("::/96", "unspecified, loopback and IPv4-compatible"),
    ("::ffff:0:0:0/96", "IPv4-translated"),
    ("64:ff9b::/96", "NAT64"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("2001::/23", "IETF protocol assignments (Teredo among them)"),
    ("2001:db8::/32", "documentation"),
    ("2002::/16", "6to4"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "segment routing"),
    ("fc00::/7", "unique local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
    ("::1/128", "loopback"),
    ("::/128", "unspecified"),
];

static INTERNAL_NETS: LazyLock<Vec<IpNet>> = LazyLock::new(|| {
    INTERNAL
        .iter()
        .filter_map(|(net, _)| net.parse().ok())
        .collect()
});

/// Whether `ip` (IPv4-mapped IPv6 already read as IPv4) is in a range of [`INTERNAL`].
fn is_internal(ip: IpAddr) -> bool {
    INTERNAL_NETS.iter().any(|n| n.contains(&ip))
}

/// Resolves with the system resolver, then refuses the name if any address is not permitted.
struct GuardedResolver(Arc<NetworkPolicy>);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(bad) = addrs.iter().find(|a| !policy.permits(a.ip())) {
                return Err(format!(
                    "{host} resolves to {}, a private, loopback or link-local address \
                     (allow it with ER_WEBHOOK_ALLOWED_NETWORKS)",
                    bad.ip()
                )
                .into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// What one attempt produced.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// The receiver answered.
    Response {
        /// HTTP status.
        status: u16,
        /// Parsed `Retry-After`, if any.
        retry_after: Option<Duration>,
        /// The first bytes of the body, for the record.
        body: String,
    },
    /// No answer: refused address, connect error, reset, timeout.
    Error(String),
}

/// The shared webhook client.
#[derive(Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
    policy: Arc<NetworkPolicy>,
}

impl WebhookClient {
    /// A client with the given connect timeout and network policy.
    pub fn new(connect_timeout: Duration, policy: NetworkPolicy) -> reqwest::Result<Self> {
        let policy = Arc::new(policy);
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(64)
            .user_agent(concat!("EventRelay-Webhooks/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(GuardedResolver(policy.clone()))
            .build()?;
        Ok(WebhookClient { http, policy })
    }

    /// POSTs `body` to `url` with `headers`, within `timeout` in all. Never fails: every
    /// problem is an [`Outcome::Error`] to record and retry.
    pub async fn post(
        &self,
        url: &str,
        headers: reqwest::header::HeaderMap,
        body: Vec<u8>,
        timeout: Duration,
    ) -> (Outcome, Duration) {
        let start = Instant::now();
        let outcome = match tokio::time::timeout(timeout, self.post_inner(url, headers, body)).await
        {
            Ok(o) => o,
            Err(_) => Outcome::Error(format!("timed out after {} ms", timeout.as_millis())),
        };
        (outcome, start.elapsed())
    }

    async fn post_inner(
        &self,
        url: &str,
        headers: reqwest::header::HeaderMap,
        body: Vec<u8>,
    ) -> Outcome {
        let parsed = match url::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => u,
            _ => return Outcome::Error("endpoint_url is not an http(s) URL".into()),
        };
        // IP literals never reach the resolver, so they are checked here.
        let literal = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal.filter(|ip| !self.policy.permits(*ip)) {
            return Outcome::Error(format!(
                "{ip} is a private, loopback or link-local address \
                 (allow it with ER_WEBHOOK_ALLOWED_NETWORKS)"
            ));
        }
        let mut resp = match self
            .http
            .post(parsed)
            .headers(headers)
            .body(body)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return Outcome::Error(error_chain(&e)),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let mut kept = Vec::new();
        let mut read = 0usize;
        // Read at most MAX_RESPONSE_BYTES; a receiver streaming an endless body is cut off.
        while read < MAX_RESPONSE_BYTES {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    read += chunk.len();
                    let room = RECORDED_BODY_BYTES.saturating_sub(kept.len());
                    kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                // The status already decides the attempt; a broken body does not change it.
                Ok(None) | Err(_) => break,
            }
        }
        Outcome::Response {
            status,
            retry_after,
            body: String::from_utf8_lossy(&kept).into_owned(),
        }
    }
}

/// The error and its causes on one line ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

/// `Retry-After` as delay-seconds or an HTTP date; capped at one day.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
        (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
            .to_std()
            .unwrap_or_default()
    };
    Some(d.min(Duration::from_secs(86_400)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused_unless_allowed() {
        let strict = NetworkPolicy::default();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!strict.permits(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(strict.permits(ip.parse().unwrap()), "{ip}");
        }
        let loose = NetworkPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(loose.permits("127.0.0.1".parse().unwrap()));
        assert!(loose.permits("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!loose.permits("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn every_class_of_the_guard_is_refused() {
        assert_eq!(INTERNAL_NETS.len(), INTERNAL.len(), "every range parses");
        let strict = NetworkPolicy::default();
        // One address inside each class (and at its edges where it matters).
        let refused = [
            "0.1.2.3",
            "10.255.255.255",
            "100.127.0.1",
            "127.8.8.8",
            "169.254.0.1",
            "172.31.255.1",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.0.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.7",
            "224.0.0.1",
            "239.255.255.255",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::8.8.8.8",
            "::ffff:0:8.8.8.8",
            "::ffff:10.0.0.1",
            "64:ff9b::8.8.8.8",
            "64:ff9b::7f00:1",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",
            "2001:db8::1",
            "2002:7f00:1::1",
            "2002:808:808::1",
            "3fff::1",
            "5f00::1",
            "fc00::1",
            "fdff::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "feff::1",
            "ff02::1",
        ];
        for ip in refused {
            assert!(!strict.permits(ip.parse().unwrap()), "{ip} was permitted");
        }
        let public = [
            "8.8.8.8",
            "1.1.1.1",
            "100.128.0.1",
            "172.32.0.1",
            "198.20.0.1",
            "223.255.255.255",
            "::ffff:8.8.8.8",
            "2606:4700::1111",
            "2a00:1450::1",
            "2001:4860:4860::8888",
        ];
        for ip in public {
            assert!(strict.permits(ip.parse().unwrap()), "{ip} was refused");
        }
    }

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("999999999"),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
