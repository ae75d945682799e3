//! The webhook address guard: which destination addresses a webhook may connect to.
//!
//! "Internal" is every range of the IANA special-purpose registries that is not globally
//! reachable, plus the IPv6 forms that carry an IPv4 address a gateway would translate (NAT64,
//! 6to4, Teredo, IPv4-compatible and -translated): through those an IPv4 check is bypassed. No
//! well-kept crate has this notion on stable Rust (`IpAddr::is_global` is unstable, and the
//! backports are unmaintained and treat NAT64 and 6to4 as global), so it is a table here.

use ipnet::IpNet;
use std::net::IpAddr;
use std::sync::LazyLock;

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

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

    proptest::proptest! {
        #[test]
        fn ipv6_forms_carrying_ipv4_are_refused_whatever_they_carry(a in proptest::num::u32::ANY) {
            let strict = NetworkPolicy::default();
            let v4 = Ipv4Addr::from(a);
            let [h, l] = [(a >> 16) as u16, a as u16];
            let carriers = [
                Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, h, l),          // NAT64
                Ipv6Addr::new(0x2002, h, l, 0, 0, 0, 0, 1),             // 6to4
                Ipv6Addr::new(0, 0, 0, 0, 0, 0, h, l),                  // IPv4-compatible
                Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, h, l),             // IPv4-translated
                Ipv6Addr::new(0x2001, 0, 0x4136, 0xe378, 0x8000, 0x63bf, !h, !l), // Teredo
            ];
            for ip in carriers {
                proptest::prop_assert!(!strict.permits(IpAddr::V6(ip)), "{} carrying {}", ip, v4);
            }
            // IPv4-mapped is read as the IPv4 address itself.
            proptest::prop_assert_eq!(
                strict.permits(IpAddr::V6(v4.to_ipv6_mapped())),
                strict.permits(IpAddr::V4(v4))
            );
        }

        #[test]
        fn every_address_of_an_internal_range_is_refused(i in 0..INTERNAL.len(), bits in proptest::num::u128::ANY) {
            let net = &INTERNAL_NETS[i];
            let ip = match net {
                IpNet::V4(n) => {
                    let host = (bits as u32) & !u32::from(n.netmask());
                    IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) | host))
                }
                IpNet::V6(n) => {
                    let host = bits & !u128::from(n.netmask());
                    IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) | host))
                }
            };
            proptest::prop_assert!(!NetworkPolicy::default().permits(ip), "{} in {}", ip, net);
        }

        #[test]
        fn webhook_urls_parse_to_http_with_a_host_or_are_refused(url in "\\PC{0,60}|(https?|ftp|file|javascript)://[a-z0-9.:@\\[\\]%/-]{0,30}") {
            if let Ok(u) = crate::subscriptions::validate_endpoint(&url) {
                proptest::prop_assert!(matches!(u.scheme(), "http" | "https"));
                proptest::prop_assert!(u.host_str().is_some_and(|h| !h.is_empty()));
            }
        }
    }
}
