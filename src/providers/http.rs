//! What the HTTP adapters share: clients, bounded reads, result downloads (no credentials,
//! redirects off, https only except towards the configured base host, a size cap), image
//! inspection, `Retry-After` parsing and error mapping that never prints a signed URL.

use std::{io::Cursor, time::Duration};

use base64::Engine;
use bytes::{Bytes, BytesMut};
use reqwest::{StatusCode, header::HeaderMap, redirect::Policy};
use url::Url;

use super::{Image, ProviderError};

/// The largest image we accept (downloaded or inline).
pub const MAX_IMAGE_BYTES: usize = 30 * 1024 * 1024;
/// The largest JSON response we read (base64 images inline: 4/3 of the image cap, plus room).
pub const MAX_JSON_BYTES: usize = 48 * 1024 * 1024;
/// The longest `Retry-After` we honour; a longer one is treated as this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// A client with our user agent, redirects off and the given overall timeout.
pub fn client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(timeout)
        .redirect(Policy::none())
        .user_agent(concat!("faceoff/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// A reqwest error as a transient provider error, without its URL (which may be signed).
pub fn transient(who: &str, what: &str, err: &reqwest::Error) -> ProviderError {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else if err.is_body() || err.is_decode() {
        "the response broke off"
    } else {
        "request failed"
    };
    ProviderError::Transient(format!("{who}: {what}: {kind}"))
}

/// Reads a response body, refusing more than `cap` bytes.
pub async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
    who: &str,
    what: &str,
) -> Result<Bytes, ProviderError> {
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Err(ProviderError::Fatal(format!("{who}: the {what} is larger than {} MB", cap / (1024 * 1024))));
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transient(who, what, &e))? {
        if buf.len() + chunk.len() > cap {
            return Err(ProviderError::Fatal(format!("{who}: the {what} is larger than {} MB", cap / (1024 * 1024))));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// How long the server asks us to wait: `retry-after-ms`, then `retry-after` (seconds or an
/// HTTP date), capped at [`MAX_RETRY_AFTER`].
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let wait = if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        Duration::from_secs_f64((ms / 1000.0).max(0.0))
    } else {
        let raw = header("retry-after")?;
        match raw.parse::<f64>() {
            Ok(secs) if secs.is_finite() => Duration::from_secs_f64(secs.max(0.0)),
            _ => {
                let when = httpdate_seconds(raw)?;
                Duration::from_secs(when)
            }
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Seconds from now until an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`); 0 if past.
fn httpdate_seconds(raw: &str) -> Option<u64> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let when = time::PrimitiveDateTime::parse(raw, &format).ok()?.assume_utc();
    let left = when - time::OffsetDateTime::now_utc();
    Some(left.whole_seconds().max(0) as u64)
}

/// 429 as a rate-limit error carrying the server's wait, if any.
pub fn rate_limited(who: &str, headers: &HeaderMap, detail: &str) -> ProviderError {
    ProviderError::RateLimited {
        message: format!("{who}: rate limited (HTTP 429){}", suffix(detail)),
        retry_after: retry_after(headers),
    }
}

/// `": detail"` or nothing.
pub fn suffix(detail: &str) -> String {
    let detail = detail.trim();
    if detail.is_empty() { String::new() } else { format!(": {}", detail.chars().take(300).collect::<String>()) }
}

/// The usual mapping of an HTTP error status: 429 rate limited; 408, 409 and 5xx transient;
/// anything else fatal.
pub fn status_error(who: &str, what: &str, status: StatusCode, headers: &HeaderMap, detail: &str) -> ProviderError {
    match status {
        StatusCode::TOO_MANY_REQUESTS => rate_limited(who, headers, detail),
        StatusCode::REQUEST_TIMEOUT | StatusCode::CONFLICT => {
            ProviderError::Transient(format!("{who}: {what} answered HTTP {status}{}", suffix(detail)))
        }
        s if s.is_server_error() => {
            ProviderError::Transient(format!("{who}: {what} answered HTTP {status}{}", suffix(detail)))
        }
        _ => ProviderError::Fatal(format!("{who}: {what} answered HTTP {status}{}", suffix(detail))),
    }
}

/// The format and size of image bytes (decoding only the header).
pub fn inspect(bytes: &[u8], who: &str) -> Result<(&'static str, u32, u32), ProviderError> {
    let reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ProviderError::Fatal(format!("{who}: unreadable result: {e}")))?;
    let content_type = match reader.format() {
        Some(image::ImageFormat::Jpeg) => "image/jpeg",
        Some(image::ImageFormat::Png) => "image/png",
        Some(image::ImageFormat::WebP) => "image/webp",
        _ => return Err(ProviderError::Fatal(format!("{who}: the result is not a JPEG, PNG or WebP image"))),
    };
    let (width, height) =
        reader.into_dimensions().map_err(|e| ProviderError::Fatal(format!("{who}: unreadable result: {e}")))?;
    Ok((content_type, width, height))
}

/// An image from base64 (inline results), checked like a download.
pub fn image_from_base64(data: &str, who: &str) -> Result<Image, ProviderError> {
    if data.len() > MAX_IMAGE_BYTES / 3 * 4 + 4 {
        return Err(ProviderError::Fatal(format!("{who}: the result is larger than 30 MB")));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|_| ProviderError::Fatal(format!("{who}: the result is not valid base64")))?;
    let (content_type, width, height) = inspect(&bytes, who)?;
    Ok(Image { bytes: Bytes::from(bytes), content_type: content_type.into(), width, height, usage_usd: None })
}

/// `data:` URI of an image, for APIs that take images inline.
pub fn data_uri(bytes: &[u8]) -> String {
    let mime = match image::guess_format(bytes) {
        Ok(image::ImageFormat::Png) => "image/png",
        Ok(image::ImageFormat::WebP) => "image/webp",
        _ => "image/jpeg",
    };
    format!("data:{mime};base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Whether we may fetch `url`: https on one of `hosts` (a host or a parent domain), or plain
/// http / https towards the configured base host (local mocks, self-hosted gateways).
pub fn allowed(url: &Url, base: &Url, hosts: &[&str]) -> bool {
    let host = url.host_str().unwrap_or("");
    let on_base = Some(host) == base.host_str() && url.port_or_known_default() == base.port_or_known_default();
    match url.scheme() {
        "https" => on_base || hosts.iter().any(|h| host == *h || host.ends_with(&format!(".{h}"))),
        "http" => base.scheme() == "http" && on_base,
        _ => false,
    }
}

/// `scheme://host/path` of a URL (no query: it may carry a signature).
pub fn redact(url: &Url) -> String {
    format!("{}://{}{}", url.scheme(), url.host_str().unwrap_or(""), url.path())
}

/// Downloads a result image at once: no credentials, redirects off, allowed hosts only, at most
/// [`MAX_IMAGE_BYTES`]. 403/404/410 mean the (short-lived) URL expired: fatal.
pub async fn download(
    client: &reqwest::Client,
    raw: &str,
    base: &Url,
    hosts: &[&str],
    who: &str,
) -> Result<Image, ProviderError> {
    let url = Url::parse(raw).map_err(|_| ProviderError::Fatal(format!("{who}: bad result URL")))?;
    if !allowed(&url, base, hosts) {
        return Err(ProviderError::Fatal(format!("{who}: refusing to download from {}", redact(&url))));
    }
    let response = client.get(url).send().await.map_err(|e| transient(who, "downloading", &e))?;
    let status = response.status();
    if matches!(status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND | StatusCode::GONE) {
        return Err(ProviderError::Fatal(format!(
            "{who}: the result expired before it could be downloaded (HTTP {status})"
        )));
    }
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        return Err(ProviderError::Transient(format!("{who}: the result host answered HTTP {status}")));
    }
    if !status.is_success() {
        return Err(ProviderError::Fatal(format!("{who}: the result host answered HTTP {status}")));
    }
    let bytes = read_capped(response, MAX_IMAGE_BYTES, who, "result").await?;
    let (content_type, width, height) = inspect(&bytes, who)?;
    Ok(Image { bytes, content_type: content_type.into(), width, height, usage_usd: None })
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The bytes of a small PNG (tests and mocks).
pub fn sample_png(width: u32, height: u32) -> Bytes {
    let img = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x % 256) as u8, 90, (y % 256) as u8]));
    let mut out = Cursor::new(Vec::new());
    let _ = img.write_to(&mut out, image::ImageFormat::Png);
    Bytes::from(out.into_inner())
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderName, HeaderValue};

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(HeaderName::from_static(k), HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn retry_after_reads_milliseconds_seconds_and_dates_capped() {
        assert_eq!(retry_after(&headers(&[("retry-after", "7")])), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after(&headers(&[("retry-after-ms", "1500"), ("retry-after", "9")])),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "3600")])), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(&headers(&[("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT")])), Some(Duration::ZERO));
        assert_eq!(retry_after(&headers(&[])), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")])), None);
    }

    #[test]
    fn only_trusted_hosts_or_the_base_host() {
        let base = Url::parse("http://127.0.0.1:9999/").expect("url");
        let ok = |u: &str| allowed(&Url::parse(u).expect("url"), &base, &["fal.media"]);
        assert!(ok("https://v3b.fal.media/files/x.png"));
        assert!(ok("http://127.0.0.1:9999/files/x.png"));
        assert!(!ok("http://v3b.fal.media/x.png"));
        assert!(!ok("https://evil.example/x.png"));
        assert!(!ok("http://127.0.0.1:1/x.png"));
        assert!(!ok("file:///etc/passwd"));
    }
}
