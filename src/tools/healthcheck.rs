//! `flagd-redis-sync healthcheck`: probes a running instance's `/readyz` and exits 0 when
//! it answers 200, 1 otherwise with a one-line reason. For container health checks in
//! images without a shell or curl (the distroless runtime image):
//! `HEALTHCHECK CMD ["/usr/local/bin/flagd-redis-sync", "healthcheck"]`.
//!
//! A minimal HTTP/1.1 GET over a tokio `TcpStream`: no HTTP client crate needed.

use serde_json::Value;
use std::process::ExitCode;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where to connect and what to ask for.
#[derive(Debug, PartialEq)]
pub struct Probe {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Probe {
    /// `url` if given (http:// only), else `/readyz` on this host's `port`.
    pub fn new(port: u16, url: Option<&str>) -> Result<Self, String> {
        let Some(u) = url else {
            return Ok(Probe {
                host: "127.0.0.1".into(),
                port,
                path: "/readyz".into(),
            });
        };
        let url = url::Url::parse(u).map_err(|e| format!("--url {u:?}: {e}"))?;
        if url.scheme() != "http" {
            return Err(format!("--url {u:?}: only http:// is supported"));
        }
        let host = match url.host() {
            Some(url::Host::Ipv6(a)) => a.to_string(),
            Some(h) => h.to_string(),
            None => return Err(format!("--url {u:?}: no host")),
        };
        let mut path = url.path().to_string();
        if let Some(q) = url.query() {
            path = format!("{path}?{q}");
        }
        Ok(Probe {
            host,
            port: url.port().unwrap_or(80),
            path,
        })
    }

    fn display(&self) -> String {
        if self.host.contains(':') {
            format!("http://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            format!("http://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

/// An HTTP response, as far as the probe cares.
#[derive(Debug, PartialEq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// One GET with `Connection: close`; reads at most 1 MiB.
pub async fn get(probe: &Probe) -> Result<Response, String> {
    let mut stream = tokio::net::TcpStream::connect((probe.host.as_str(), probe.port))
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", probe.display()))?;
    let host = if probe.host.contains(':') {
        format!("[{}]:{}", probe.host, probe.port)
    } else {
        format!("{}:{}", probe.host, probe.port)
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: flagd-redis-sync-healthcheck\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
        probe.path
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("{}: sending the request: {e}", probe.display()))?;
    let mut raw = Vec::new();
    (&mut stream)
        .take(1 << 20)
        .read_to_end(&mut raw)
        .await
        .map_err(|e| format!("{}: reading the response: {e}", probe.display()))?;
    parse_response(&raw).map_err(|e| format!("{}: {e}", probe.display()))
}

/// Parses a complete HTTP/1.x response (content-length, chunked or close-delimited).
pub fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("not an HTTP response (no end of headers)")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1.x response: {status_line:?}"));
    }
    let status: u16 = code
        .parse()
        .map_err(|_| format!("bad status line {status_line:?}"))?;
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
        })
    });
    let rest = &raw[split + 4..];
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&b[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok());
        let Some(size) = size.filter(|s| *s > 0) else {
            break;
        };
        let start = eol + 2;
        let end = (start + size).min(b.len());
        out.extend_from_slice(&b[start..end]);
        b = b.get(end + 2..).unwrap_or_default();
    }
    out
}

/// One line saying why `/readyz` is not 200, from its JSON body when there is one.
pub fn reason(resp: &Response) -> String {
    let Ok(v) = serde_json::from_str::<Value>(&resp.body) else {
        let body = resp.body.trim();
        let body: String = body.chars().take(200).collect();
        return format!("HTTP {}: {body}", resp.status);
    };
    let mut why = Vec::new();
    if v["shutting_down"] == true {
        why.push("shutting down".to_string());
    }
    if v["grpc_listening"] == false {
        why.push("gRPC port not listening yet".to_string());
    }
    if v.get("document").is_some_and(Value::is_null) {
        let key = match v["key"]["state"].as_str() {
            Some("missing") => "the flag key does not exist".to_string(),
            Some("refused") => format!(
                "the flag key holds a refused document: {}",
                v["key"]["reason"].as_str().unwrap_or("?")
            ),
            Some("unknown") | None => "the flag key was not read yet".to_string(),
            Some(other) => format!("key {other}"),
        };
        why.push(format!("no valid flag document yet ({key})"));
    }
    match v["redis"].as_str() {
        Some("connected") | None => {}
        Some(state) => why.push(match v["redis_error"].as_str() {
            Some(e) => format!("redis {state}: {e}"),
            None => format!("redis {state}"),
        }),
    }
    if why.is_empty() {
        why.push("not ready".into());
    }
    format!("not ready (HTTP {}): {}", resp.status, why.join("; "))
}

/// One line saying what a ready instance serves.
fn summary(resp: &Response) -> String {
    let v: Value = serde_json::from_str(&resp.body).unwrap_or(Value::Null);
    match v.get("document") {
        Some(d) if d.is_object() => format!(
            "ready: digest {}, {} flags, {} streams, trigger {}",
            d["digest"]
                .as_str()
                .map_or("?", |s| s.get(..12).unwrap_or(s)),
            d["flags"],
            v["streams"],
            v["trigger"].as_str().unwrap_or("?")
        ),
        _ => format!("ok (HTTP {})", resp.status),
    }
}

/// Probes `/readyz` (or `url`) within `within`.
pub fn main(port: u16, url: Option<&str>, within: Duration) -> ExitCode {
    let probe = match Probe::new(port, url) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("flagd-redis-sync healthcheck: {e}");
            return ExitCode::from(super::EX_USAGE);
        }
    };
    super::block_on("healthcheck", async move {
        let result = match tokio::time::timeout(within, get(&probe)).await {
            Err(_) => Err(format!(
                "{}: no answer within {}s",
                probe.display(),
                within.as_secs()
            )),
            Ok(r) => r,
        };
        match result {
            Ok(resp) if resp.status == 200 => {
                println!("{}", summary(&resp));
                ExitCode::SUCCESS
            }
            Ok(resp) => {
                println!("{}", reason(&resp));
                ExitCode::FAILURE
            }
            Err(e) => {
                println!("{e}");
                ExitCode::FAILURE
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes() {
        assert_eq!(
            Probe::new(9014, None).unwrap(),
            Probe {
                host: "127.0.0.1".into(),
                port: 9014,
                path: "/readyz".into()
            }
        );
        assert_eq!(
            Probe::new(9014, Some("http://[::1]:1/healthz?x=1")).unwrap(),
            Probe {
                host: "::1".into(),
                port: 1,
                path: "/healthz?x=1".into()
            }
        );
        assert!(Probe::new(9014, Some("https://h/readyz")).is_err());
        assert!(Probe::new(9014, Some("nonsense")).is_err());
    }

    #[test]
    fn responses() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
        let r = parse_response(
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_str()), (503, "abcde"));
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK").is_err());
    }

    #[test]
    fn reasons() {
        let r = Response {
            status: 503,
            body: r#"{"ready":false,"shutting_down":false,"grpc_listening":true,"redis":"connected","redis_error":null,"key":{"state":"missing"},"document":null}"#.into(),
        };
        assert_eq!(
            reason(&r),
            "not ready (HTTP 503): no valid flag document yet (the flag key does not exist)"
        );
        let r = Response {
            status: 503,
            body: r#"{"shutting_down":true,"grpc_listening":true,"redis":"down","redis_error":"Connection refused","key":{"state":"valid"},"document":{"digest":"ab"}}"#.into(),
        };
        assert_eq!(
            reason(&r),
            "not ready (HTTP 503): shutting down; redis down: Connection refused"
        );
        let r = Response {
            status: 404,
            body: "Not Found".into(),
        };
        assert_eq!(reason(&r), "HTTP 404: Not Found");
    }
}
