//! Where a webhook may go. Addresses are checked after resolution, and the HTTP
//! client connects only to checked addresses, so DNS rebinding gets nowhere.

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

#[derive(Debug, Clone, Default)]
pub struct Guard {
    /// Ranges allowed even though they are special (tests, local mode).
    pub allowed: Vec<IpNet>,
}

fn special_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (64..128).contains(&o[1])) // shared address space (CGNAT)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] == 18 || o[1] == 19)) // benchmarking
        || o[0] >= 240 // reserved
}

fn special_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return special_v4(v4);
    }
    let seg = ip.segments();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || seg[..6] == [0; 6] // IPv4-compatible (::a.b.c.d), deprecated: reaches the embedded IPv4 address
        || seg[0] == 0x2002 // 6to4: an IPv4 address inside
        || (seg[0] == 0x2001 && seg[1] == 0x0000) // Teredo: an IPv4 address inside
        || (seg[0] & 0xfe00) == 0xfc00 // unique local
        || (seg[0] & 0xffc0) == 0xfe80 // link-local
        || (seg[0] & 0xffc0) == 0xfec0 // site-local, deprecated but still routed inside some networks
        || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
        || (seg[0] == 0x0064 && seg[1] == 0xff9b) // NAT64
        || seg[0] == 0x0100 // discard-only
}

/// Private, loopback, link-local and other non-public ranges.
pub fn is_special(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

impl Guard {
    pub fn permits(&self, ip: IpAddr) -> bool {
        !is_special(ip) || self.allowed.iter().any(|n| n.contains(&ip))
    }

    /// What can be said of an endpoint's host without asking DNS: a literal
    /// address must be allowed, and `localhost` names loopback by definition
    /// (RFC 6761). Names are checked where they are used, after resolution,
    /// so creating an endpoint never waits on a resolver, and a refusal never
    /// tells the sender what an internal name resolves to.
    pub fn check_literal(&self, host: &str) -> Result<(), String> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let name = bare.trim_end_matches('.').to_ascii_lowercase();
        if name == "localhost" || name.ends_with(".localhost") {
            return if self.permits(IpAddr::V4(Ipv4Addr::LOCALHOST)) { Ok(()) } else { Err(format!("{host} is a loopback name")) };
        }
        match bare.parse::<IpAddr>() {
            Ok(ip) if !self.permits(ip) => Err(format!("{host} is a private or reserved address")),
            _ => Ok(()),
        }
    }

    /// Resolves `host` and refuses it if any address is forbidden: a name that
    /// points anywhere special is refused, not partly used. The refusal does
    /// not say which address (it may reach a merchant); the log does.
    pub async fn check_host(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host, port)).await.map_err(|e| format!("{host} does not resolve: {e}"))?.collect(),
        };
        if addrs.is_empty() {
            return Err(format!("{host} does not resolve"));
        }
        if let Some(bad) = addrs.iter().find(|a| !self.permits(a.ip())) {
            tracing::warn!(host, address = %bad.ip(), "webhook host resolves to a private or reserved address; not contacted");
            return Err(format!("{host} resolves to a private or reserved address; not contacted"));
        }
        Ok(addrs)
    }
}

/// The HTTP client's resolver: the guard, at connection time.
pub struct GuardedResolver(pub Arc<Guard>);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = guard.check_host(&host, 0).await.map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e.into() })?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_ranges_are_refused_and_public_ones_pass() {
        let g = Guard::default();
        for bad in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "::10.0.0.1",
            "::a9fe:a9fe",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "fec0::1",
            "224.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!g.permits(bad.parse().unwrap()), "{bad}");
        }
        for good in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert!(g.permits(good.parse().unwrap()), "{good}");
        }
    }

    #[test]
    fn the_allow_list_opens_exactly_its_ranges() {
        let g = Guard { allowed: vec!["127.0.0.0/8".parse().unwrap()] };
        assert!(g.permits("127.0.0.1".parse().unwrap()));
        assert!(!g.permits("10.0.0.1".parse().unwrap()));
    }

    #[tokio::test]
    async fn names_are_checked_after_resolution_and_the_address_is_not_told() {
        let g = Guard::default();
        let e = g.check_host("localhost", 80).await.unwrap_err();
        assert!(e.contains("private or reserved") && !e.contains("127.0.0.1"), "{e}");
        assert!(g.check_host("[::1]", 80).await.is_err());
    }

    #[test]
    fn literals_are_checked_without_dns() {
        let g = Guard::default();
        for bad in ["127.0.0.1", "[::1]", "localhost", "LocalHost.", "api.localhost", "[::127.0.0.1]", "10.1.2.3"] {
            assert!(g.check_literal(bad).is_err(), "{bad}");
        }
        for fine in ["hooks.example.com", "93.184.216.34", "[2606:4700::1111]", "internal.corp"] {
            assert!(g.check_literal(fine).is_ok(), "{fine}");
        }
        assert!(Guard { allowed: vec!["127.0.0.0/8".parse().unwrap()] }.check_literal("localhost").is_ok());
    }
}
