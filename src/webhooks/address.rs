//! Where a webhook may go: public addresses only, unless `webhooks.allow_private_addresses`.
//!
//! A URL is checked twice. `webhooks add` refuses one whose host is, or resolves to, a
//! loopback, private, link-local (cloud metadata at 169.254.169.254), CGNAT, multicast,
//! unspecified or otherwise non-public address. Every delivery is checked again on the address
//! it actually connects to: the sender's HTTP client resolves names through [`PublicOnly`],
//! which drops non-public addresses before the connection is made, so a name that answered
//! with a public address at `add` and a private one later (DNS rebinding) reaches nothing.
//! A URL naming an IP literal is checked before the request (no resolver is asked). Proxies
//! from the environment are not used (the connection would go to the proxy, which then
//! resolves again), and redirects are not followed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Whether connecting to `ip` stays off this host and its private networks.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || a == 0 // "this network"
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16: link-local, cloud metadata
        || (a == 100 && (64..128).contains(&b)) // 100.64/10: CGNAT
        || (a == 192 && b == 0 && c == 0) // 192.0.0/24: IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // documentation
        || (a == 198 && (18..20).contains(&b)) // 198.18/15: benchmarking
        || (a == 198 && b == 51 && c == 100) // documentation
        || (a == 203 && b == 0 && c == 113) // documentation
        || ip.is_multicast() // 224/4
        || a >= 240) // 240/4 reserved, and the broadcast address
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    // An IPv4 address carried in IPv6 (mapped ::ffff:a.b.c.d, NAT64 64:ff9b::/96, or the
    // deprecated compatible ::a.b.c.d) is judged as that IPv4 address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return is_public_v4(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ));
    }
    if s[..6] == [0; 6] && !ip.is_loopback() && !ip.is_unspecified() {
        return false; // ::a.b.c.d, deprecated
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // fc00::/7 unique local
        || (s[0] & 0xffc0) == 0xfe80 // fe80::/10 link-local
        || (s[0] & 0xffc0) == 0xfec0 // fec0::/10 site-local, deprecated
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0])) // 100::/64 discard
}

/// Why an address may not be a webhook's target, for operators and the delivery log.
pub fn refusal(host: &str, ip: IpAddr) -> String {
    format!(
        "refused: {host} is {ip}, not a public address (loopback, private, link-local, CGNAT, \
         multicast or reserved); set webhooks.allow_private_addresses to allow it"
    )
}

/// The address a URL's host names when it is an IP literal.
pub fn literal(url: &reqwest::Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// `webhooks add`'s check: the host, and every address it resolves to now, is public.
pub async fn check_target(url: &reqwest::Url) -> Result<(), String> {
    let host = url.host_str().unwrap_or_default().to_string();
    if let Some(ip) = literal(url) {
        return if is_public(ip) {
            Ok(())
        } else {
            Err(refusal(&host, ip))
        };
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("{host} does not resolve: {e}"))?
        .collect();
    if found.is_empty() {
        return Err(format!("{host} does not resolve to any address"));
    }
    match found.iter().find(|a| !is_public(a.ip())) {
        Some(bad) => Err(refusal(&host, bad.ip())),
        None => Ok(()),
    }
}

/// A resolution that found only non-public addresses: the delivery is refused, not retried.
#[derive(Debug)]
pub struct NonPublic(pub String);

impl std::fmt::Display for NonPublic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NonPublic {}

/// The sender's resolver: the system's answer without its non-public addresses.
pub struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> =
                all.iter().copied().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                let shown = all.first().map(|a| a.ip());
                let why = match shown {
                    Some(ip) => refusal(&host, ip),
                    None => format!("{host} does not resolve to any address"),
                };
                return Err(Box::new(NonPublic(why)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The [`NonPublic`] refusal somewhere in an error's chain.
pub fn non_public(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(refused) = e.downcast_ref::<NonPublic>() {
            return Some(refused.0.clone());
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::10.0.0.1",
            "2001:db8::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn add_refuses_literals_and_names_that_resolve_to_private_addresses() {
        for url in [
            "http://169.254.169.254/latest/meta-data",
            "http://127.0.0.1:9000/hook",
            "http://[::1]/hook",
            "http://[::ffff:10.0.0.1]/hook",
            "http://localhost:9000/hook",
        ] {
            let parsed = reqwest::Url::parse(url).unwrap();
            let err = check_target(&parsed).await.unwrap_err();
            assert!(err.starts_with("refused: "), "{url}: {err}");
        }
        let public = reqwest::Url::parse("https://93.184.216.34/hook").unwrap();
        assert!(check_target(&public).await.is_ok());
    }

    #[tokio::test]
    async fn the_senders_resolver_keeps_no_private_address() {
        use reqwest::dns::Resolve;
        let err = PublicOnly
            .resolve("localhost".parse().unwrap())
            .await
            .err()
            .expect("localhost is refused");
        assert!(non_public(err.as_ref()).is_some(), "{err}");
    }
}
