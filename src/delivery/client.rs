//! The webhook HTTP client: one shared reqwest client with connect and total timeouts, no
//! redirects (a 3xx is a failed attempt), a capped response body, and a resolver that refuses
//! private, loopback and link-local addresses unless they are in the allow-list
//! ([`NetworkPolicy`]). Every address a name resolves to is checked, and the connection only
//! goes to checked addresses, so DNS rebinding cannot slip an internal address past the check.

pub use super::guard::NetworkPolicy;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most response-body bytes read; the rest is discarded (the connection is then closed).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Response-body bytes kept in the delivery record.
const RECORDED_BODY_BYTES: usize = 512;

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
pub enum PostOutcome {
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
    /// problem is a [`PostOutcome::Error`] to record and retry.
    pub async fn post(
        &self,
        url: &str,
        headers: reqwest::header::HeaderMap,
        body: Vec<u8>,
        timeout: Duration,
    ) -> (PostOutcome, Duration) {
        let start = Instant::now();
        let outcome = match tokio::time::timeout(timeout, self.post_inner(url, headers, body)).await
        {
            Ok(o) => o,
            Err(_) => PostOutcome::Error(format!("timed out after {} ms", timeout.as_millis())),
        };
        (outcome, start.elapsed())
    }

    async fn post_inner(
        &self,
        url: &str,
        headers: reqwest::header::HeaderMap,
        body: Vec<u8>,
    ) -> PostOutcome {
        let parsed = match url::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => u,
            _ => return PostOutcome::Error("endpoint_url is not an http(s) URL".into()),
        };
        // IP literals never reach the resolver, so they are checked here.
        let literal = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal.filter(|ip| !self.policy.permits(*ip)) {
            return PostOutcome::Error(format!(
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
            Err(e) => return PostOutcome::Error(error_chain(&e)),
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
        PostOutcome::Response {
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
