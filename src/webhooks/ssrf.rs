//! Webhook URLs point at servers our users run, so a URL must never make us call something
//! inside our own network (SSRF): in production only `https://` URLs are accepted, and every
//! address their host resolves to must be public. The check runs when an endpoint is registered
//! (a clear 422) and again on every delivery, inside the HTTP client's DNS resolver
//! ([`PublicOnly`]): the addresses checked are the addresses connected to, so a name that
//! resolves to a public address at registration and to a private one later (DNS rebinding) is
//! refused too. IP literals (which the HTTP client does not resolve) are checked from the URL.
//! Development and tests may allow plain `http://` and private addresses
//! (`FACEOFF_WEBHOOK_ALLOW_PRIVATE`, see `config::WebhookSettings`).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use url::{Host, Url};

/// The longest URL accepted.
pub const MAX_URL_CHARS: usize = 2048;

/// Why a URL is refused, in words for the API and the page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlProblem {
    #[error("the URL is not valid (e.g. https://example.com/hooks/faceoff)")]
    Invalid,
    #[error("the URL may be at most {MAX_URL_CHARS} characters")]
    TooLong,
    #[error("the URL must start with https://")]
    NotHttps,
    #[error("the URL may not contain a user name, a password or a #fragment")]
    Credentials,
    #[error(
        "{0} is a private, loopback, link-local or otherwise internal address: webhooks only go to public addresses"
    )]
    Private(String),
    #[error("{0} could not be resolved")]
    Unresolvable(String),
}

/// Whether `ip` is an address on the public internet (not loopback, private, link-local,
/// carrier-grade NAT, multicast, broadcast, documentation, benchmarking, reserved or
/// unspecified; IPv4 embedded in IPv6 is judged as IPv4).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT, 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments, 192.0.0.0/24
        || (a == 198 && (18..20).contains(&b)) // benchmarking, 198.18.0.0/15
        || a >= 240) // reserved, 240.0.0.0/4
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let segments = ip.segments();
    // NAT64 (64:ff9b::/96) carries an IPv4 address in its last 32 bits.
    if segments[0] == 0x64 && segments[1] == 0xff9b && segments[2..6].iter().all(|&s| s == 0) {
        let [.., hi, lo] = segments;
        return is_public_v4(Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (segments[0] & 0xfe00) == 0xfc00 // unique local, fc00::/7
        || (segments[0] & 0xffc0) == 0xfe80 // link-local, fe80::/10
        || (segments[0] & 0xffc0) == 0xfec0 // site-local (deprecated), fec0::/10
        || (segments[0] == 0x2001 && segments[1] == 0x0db8) // documentation, 2001:db8::/32
        || segments[..6].iter().all(|&s| s == 0)) // IPv4-compatible (deprecated), ::/96
}

/// Checks a URL's shape: `https` (or `http` when `allow_private`), a host, no credentials and
/// no fragment, an IP literal only when public. Returns the parsed URL.
pub fn check_shape(raw: &str, allow_private: bool) -> Result<Url, UrlProblem> {
    let raw = raw.trim();
    if raw.chars().count() > MAX_URL_CHARS {
        return Err(UrlProblem::TooLong);
    }
    let url = Url::parse(raw).map_err(|_| UrlProblem::Invalid)?;
    match url.scheme() {
        "https" => {}
        "http" if allow_private => {}
        "http" => return Err(UrlProblem::NotHttps),
        _ => return Err(if allow_private { UrlProblem::Invalid } else { UrlProblem::NotHttps }),
    }
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return Err(UrlProblem::Credentials);
    }
    match url.host() {
        None => return Err(UrlProblem::Invalid),
        Some(Host::Ipv4(ip)) if !allow_private && !is_public(IpAddr::V4(ip)) => {
            return Err(UrlProblem::Private(ip.to_string()));
        }
        Some(Host::Ipv6(ip)) if !allow_private && !is_public(IpAddr::V6(ip)) => {
            return Err(UrlProblem::Private(ip.to_string()));
        }
        Some(Host::Domain(name)) if !allow_private && is_internal_name(name) => {
            return Err(UrlProblem::Private(name.to_string()));
        }
        Some(_) => {}
    }
    Ok(url)
}

/// Names that are internal by definition, refused without asking DNS.
fn is_internal_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || [".localhost", ".local", ".internal", ".home.arpa", ".lan"].iter().any(|suffix| name.ends_with(suffix))
        || !name.contains('.')
}

/// Checks a URL completely, resolving its host: every address must be public (unless
/// `allow_private`). Used when an endpoint is registered or changed.
pub async fn check(raw: &str, allow_private: bool) -> Result<Url, UrlProblem> {
    let url = check_shape(raw, allow_private)?;
    if allow_private {
        return Ok(url);
    }
    if let Some(Host::Domain(name)) = url.host() {
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs = resolve(name, port).await.map_err(|_| UrlProblem::Unresolvable(name.to_string()))?;
        if let Some(private) = addrs.iter().find(|a| !is_public(a.ip())) {
            return Err(UrlProblem::Private(format!("{name} ({})", private.ip())));
        }
    }
    Ok(url)
}

async fn resolve(name: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    let lookup = tokio::net::lookup_host((name.to_string(), port));
    match tokio::time::timeout(Duration::from_secs(5), lookup).await {
        Ok(Ok(addrs)) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() { Err(std::io::Error::other("no addresses")) } else { Ok(addrs) }
        }
        Ok(Err(err)) => Err(err),
        Err(_) => Err(std::io::Error::other("DNS timed out")),
    }
}

/// The HTTP client's DNS resolver for deliveries: resolves as usual and refuses a name any of
/// whose addresses is not public, so the client never connects to one.
#[derive(Debug, Clone, Copy)]
pub struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let name = name.as_str().to_string();
        Box::pin(async move {
            if is_internal_name(&name) {
                return Err(Box::new(UrlProblem::Private(name)) as Box<dyn std::error::Error + Send + Sync>);
            }
            let addrs = resolve(&name, 0).await?;
            if let Some(private) = addrs.iter().find(|a| !is_public(a.ip())) {
                return Err(Box::new(UrlProblem::Private(format!("{name} ({})", private.ip())))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_not_public() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "192.0.0.8",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "::127.0.0.1",
            "2001:db8::1",
        ] {
            assert!(!is_public(internal.parse().expect("ip")), "{internal} is internal");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"] {
            assert!(is_public(public.parse().expect("ip")), "{public} is public");
        }
    }

    #[test]
    fn urls_are_https_without_credentials_and_never_internal() {
        assert!(check_shape("https://hooks.example.com/faceoff", false).is_ok());
        assert_eq!(check_shape("http://hooks.example.com/", false), Err(UrlProblem::NotHttps));
        assert_eq!(check_shape("ftp://hooks.example.com/", false), Err(UrlProblem::NotHttps));
        assert_eq!(check_shape("https://user:pw@hooks.example.com/", false), Err(UrlProblem::Credentials));
        assert_eq!(check_shape("https://hooks.example.com/#x", false), Err(UrlProblem::Credentials));
        assert!(matches!(check_shape("https://10.0.0.1/", false), Err(UrlProblem::Private(_))));
        assert!(matches!(check_shape("https://[::1]:8443/", false), Err(UrlProblem::Private(_))));
        assert!(matches!(check_shape("https://localhost/", false), Err(UrlProblem::Private(_))));
        assert!(matches!(check_shape("https://metadata.internal/", false), Err(UrlProblem::Private(_))));
        assert!(matches!(check_shape("https://intranet/", false), Err(UrlProblem::Private(_))));
        assert_eq!(check_shape("not a url", false), Err(UrlProblem::Invalid));
        assert_eq!(check_shape(&format!("https://x.com/{}", "a".repeat(2100)), false), Err(UrlProblem::TooLong));
        // Development and tests: loopback over plain HTTP.
        assert!(check_shape("http://127.0.0.1:8080/hook", true).is_ok());
    }
}
