//! The client's IP address, for rate limits: the TCP peer, or, behind a reverse proxy named by
//! `FACEOFF_CLIENT_IP_HEADER`, the address that proxy reports. Only set that variable behind a
//! proxy that writes the header: otherwise any client could pick its own address.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use axum::{
    extract::{ConnectInfo, FromRef, FromRequestParts},
    http::{HeaderMap, HeaderName, request::Parts},
};

use crate::{config::Config, web::error::AppError};

/// The address rate limits count a request against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl<S> FromRequestParts<S> for ClientIp
where
    Arc<Config>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let config = Arc::<Config>::from_ref(state);
        let proxied = config.client_ip_header.as_ref().and_then(|name| from_header(&parts.headers, name));
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip());
        proxied
            .or(peer)
            .map(ClientIp)
            .ok_or_else(|| AppError::Internal(anyhow::anyhow!("no client address: serve with connect info")))
    }
}

/// The client address in header `name`. A list (`X-Forwarded-For: client, proxy1, proxy2`) is
/// read from the right: each proxy appends the address it saw, so only the last entry was
/// written by our own proxy; the ones before it are whatever the client sent.
pub fn from_header(headers: &HeaderMap, name: &HeaderName) -> Option<IpAddr> {
    let value = headers.get_all(name).iter().next_back()?.to_str().ok()?;
    parse_addr(value.rsplit(',').next()?.trim())
}

/// `203.0.113.7`, `2001:db8::1`, `203.0.113.7:4711` or `[2001:db8::1]:4711`.
fn parse_addr(entry: &str) -> Option<IpAddr> {
    entry.parse::<IpAddr>().ok().or_else(|| entry.parse::<SocketAddr>().ok().map(|addr| addr.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().expect("header value"));
        }
        map
    }

    const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");

    #[test]
    fn the_last_entry_written_by_our_proxy_wins() {
        let h = headers(&[("x-forwarded-for", "198.51.100.1, 10.0.0.2, 203.0.113.7")]);
        assert_eq!(from_header(&h, &XFF), "203.0.113.7".parse().ok());
        let h = headers(&[("x-forwarded-for", "198.51.100.1"), ("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(from_header(&h, &XFF), "203.0.113.9".parse().ok());
    }

    #[test]
    fn ports_and_ipv6_are_understood() {
        let real_ip = HeaderName::from_static("x-real-ip");
        for (value, want) in [
            ("203.0.113.7:4711", "203.0.113.7"),
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            (" 203.0.113.7 ", "203.0.113.7"),
        ] {
            let mut h = HeaderMap::new();
            h.insert(real_ip.clone(), value.parse().expect("value"));
            assert_eq!(from_header(&h, &real_ip), want.parse().ok(), "{value}");
        }
    }

    #[test]
    fn missing_or_garbage_headers_give_nothing() {
        assert_eq!(from_header(&HeaderMap::new(), &XFF), None);
        assert_eq!(from_header(&headers(&[("x-forwarded-for", "unknown")]), &XFF), None);
        assert_eq!(from_header(&headers(&[("x-forwarded-for", "203.0.113.7, ")]), &XFF), None);
    }
}
