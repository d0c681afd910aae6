//! `flagd-redis-sync watch HOST:PORT`: a sync client, like flagd or an in-process
//! provider, that prints one line per document received: time, digest (the first 12 hex
//! digits of the SHA-256 of the JSON, as `/readyz` shows it), size and flag count.
//! `--json` prints JSON lines; `--count N` exits after N documents.
//!
//! Exit codes: 0 after `--count` documents; 1 when the stream cannot be opened or ends
//! (the status is printed: a live stream only ever ends with an error); 64 bad target or
//! unreadable `--ca-path` / `--token-file`.

use crate::flags::Digest;
use crate::wire::client::flagd::flag_sync_service_client::FlagSyncServiceClient;
use crate::wire::client::flagd::{SyncFlagsRequest, SyncFlagsResponse};
use serde_json::Value;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// What to follow and how to print it, checked by the command line.
#[derive(Debug, Clone)]
pub struct Options {
    /// HOST:PORT, http://HOST:PORT or https://HOST:PORT (empty with `fleet`).
    pub target: String,
    /// `--fleet`: management ports whose fleet view to print instead of a stream.
    pub fleet: Vec<String>,
    /// CA to verify the server with (TLS on).
    pub ca_path: Option<std::path::PathBuf>,
    /// Name to verify the server's certificate against.
    pub tls_server_name: Option<String>,
    /// Bearer token file (first line).
    pub token_file: Option<std::path::PathBuf>,
    /// flagd selector, sent in the header and the request.
    pub selector: String,
    /// JSON lines instead of text.
    pub json: bool,
    /// Each document's JSON after its line.
    pub print_document: bool,
    /// Exit after this many documents.
    pub count: Option<u64>,
    /// provider_id in the request.
    pub provider_id: String,
    /// Limit for connecting.
    pub connect_timeout: Duration,
}

/// What `watch` prints about one document.
#[derive(Debug, PartialEq, serde::Serialize)]
pub struct Received {
    pub time: String,
    /// First 12 hex digits of `sha256`.
    pub digest: String,
    pub sha256: String,
    pub bytes: usize,
    /// Number of flags (`flags` as a map or an array); `null` when the JSON is unreadable.
    pub flags: Option<usize>,
}

impl Received {
    pub fn of(json: &str, at: SystemTime) -> Self {
        let digest = Digest::of(json.as_bytes());
        let flags =
            serde_json::from_str::<Value>(json)
                .ok()
                .and_then(|v| match v.get("flags")? {
                    Value::Object(m) => Some(m.len()),
                    Value::Array(a) => Some(a.len()),
                    _ => None,
                });
        Received {
            time: super::rfc3339(at),
            digest: digest.short(),
            sha256: digest.to_string(),
            bytes: json.len(),
            flags,
        }
    }

    pub fn line(&self) -> String {
        let flags = self
            .flags
            .map_or_else(|| "? (unreadable JSON)".to_string(), |n| n.to_string());
        format!(
            "{} digest={} bytes={} flags={}",
            self.time, self.digest, self.bytes, flags
        )
    }
}

/// The URI to connect to: `HOST:PORT` gets `http://`, or `https://` with `tls`.
pub fn endpoint_uri(target: &str, tls: bool) -> Result<String, String> {
    let uri = if target.contains("://") {
        target.to_string()
    } else if tls {
        format!("https://{target}")
    } else {
        format!("http://{target}")
    };
    let parsed = url::Url::parse(&uri).map_err(|e| format!("target {target:?}: {e}"))?;
    match (parsed.scheme(), tls) {
        ("http", false) | ("https", true) => {}
        ("https", false) => {
            return Err(format!(
                "target {target:?}: https:// needs --ca-path (the CA that signed the server's certificate)"
            ))
        }
        ("http", true) => {
            return Err(format!(
                "target {target:?}: --ca-path turns TLS on; use HOST:PORT or https://"
            ))
        }
        _ => {
            return Err(format!(
                "target {target:?}: use HOST:PORT, http://HOST:PORT or https://HOST:PORT"
            ))
        }
    }
    if parsed.host_str().is_none_or(str::is_empty) || parsed.port().is_none() {
        return Err(format!(
            "target {target:?}: expected HOST:PORT, e.g. localhost:8016"
        ));
    }
    Ok(uri)
}

pub fn main(args: &Options) -> ExitCode {
    if !args.fleet.is_empty() {
        return super::block_on(
            "watch",
            super::fleet_watch::run(&args.fleet, args.json, args.count),
        );
    }
    super::block_on("watch", run(args))
}

/// The endpoint (with TLS when asked) and the token, or a usage error.
fn prepare(args: &Options) -> Result<(Endpoint, Option<String>), String> {
    let uri = endpoint_uri(&args.target, args.ca_path.is_some())?;
    let mut endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|e| format!("target {:?}: {e}", args.target))?
        .connect_timeout(args.connect_timeout);
    if let Some(ca) = &args.ca_path {
        let pem = crate::files::read_secret(ca)
            .map_err(|e| format!("--ca-path {}: cannot read: {e}", ca.display()))?;
        let host = url::Url::parse(&uri)
            .ok()
            .and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_string()))
            .unwrap_or_default();
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(pem))
            .domain_name(args.tls_server_name.clone().unwrap_or(host));
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| format!("--ca-path {}: {}", ca.display(), error_chain(&e)))?;
    }
    let token = match &args.token_file {
        None => None,
        Some(f) => {
            let text = crate::files::read_secret_string(f)
                .map_err(|e| format!("--token-file {}: cannot read: {e}", f.display()))?;
            let token = text.lines().map(str::trim).find(|l| !l.is_empty());
            Some(
                token
                    .ok_or_else(|| format!("--token-file {}: empty", f.display()))?
                    .to_string(),
            )
        }
    };
    Ok((endpoint, token))
}

async fn run(args: &Options) -> ExitCode {
    let (endpoint, token) = match prepare(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("flagd-redis-sync watch: {e}");
            return ExitCode::from(super::EX_USAGE);
        }
    };
    let channel = match endpoint.connect().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot connect to {}: {}", args.target, error_chain(&e));
            return ExitCode::FAILURE;
        }
    };
    let mut request = tonic::Request::new(SyncFlagsRequest {
        provider_id: args.provider_id.clone(),
        selector: args.selector.clone(),
    });
    if let Some(token) = token {
        match format!("Bearer {token}").parse() {
            Ok(v) => {
                request.metadata_mut().insert("authorization", v);
            }
            Err(_) => {
                eprintln!("flagd-redis-sync watch: the token must be printable ASCII");
                return ExitCode::from(super::EX_USAGE);
            }
        }
    }
    if !args.selector.is_empty() {
        match args.selector.parse() {
            Ok(v) => {
                request.metadata_mut().insert("flagd-selector", v);
            }
            Err(_) => {
                eprintln!("flagd-redis-sync watch: --selector must be printable ASCII");
                return ExitCode::from(super::EX_USAGE);
            }
        }
    }
    let mut stream = match FlagSyncServiceClient::new(channel)
        .sync_flags(request)
        .await
    {
        Ok(r) => r.into_inner(),
        Err(status) => {
            eprintln!("SyncFlags refused: {}", describe(&status));
            return ExitCode::FAILURE;
        }
    };
    let mut seen = 0u64;
    loop {
        match stream.message().await {
            Ok(Some(msg)) => {
                print(args, &msg);
                seen += 1;
                if args.count.is_some_and(|n| seen >= n) {
                    return ExitCode::SUCCESS;
                }
            }
            Ok(None) => {
                eprintln!(
                    "stream ended with status OK after {seen} documents (a sync server should end streams with an error status so clients reconnect)"
                );
                return ExitCode::FAILURE;
            }
            Err(status) => {
                eprintln!("stream ended after {seen} documents: {}", describe(&status));
                return ExitCode::FAILURE;
            }
        }
    }
}

fn print(args: &Options, msg: &SyncFlagsResponse) {
    use std::io::Write;
    let r = Received::of(&msg.flag_configuration, SystemTime::now());
    let mut out = std::io::stdout().lock();
    let line = if args.json {
        serde_json::to_string(&r).expect("serialisable")
    } else {
        r.line()
    };
    let _ = writeln!(out, "{line}");
    if args.print_document {
        let _ = writeln!(out, "{}", msg.flag_configuration);
    }
    // Line by line even into a pipe: `watch | grep` and tests see each document at once.
    let _ = out.flush();
}

fn describe(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            endpoint_uri("localhost:8016", false).unwrap(),
            "http://localhost:8016"
        );
        assert_eq!(
            endpoint_uri("http://10.0.0.1:9", false).unwrap(),
            "http://10.0.0.1:9"
        );
        assert_eq!(
            endpoint_uri("[::1]:8016", false).unwrap(),
            "http://[::1]:8016"
        );
        assert_eq!(
            endpoint_uri("sync:8016", true).unwrap(),
            "https://sync:8016"
        );
        assert!(endpoint_uri("localhost", false)
            .unwrap_err()
            .contains("HOST:PORT"));
        assert!(endpoint_uri("https://h:1", false)
            .unwrap_err()
            .contains("--ca-path"));
        assert!(endpoint_uri("http://h:1", true)
            .unwrap_err()
            .contains("turns TLS on"));
        assert!(endpoint_uri("ftp://h:1", false).is_err());
        assert!(endpoint_uri("", false).is_err());
    }

    #[test]
    fn received_line() {
        let json = r#"{"flags":{"a":{},"b":{}}}"#;
        let r = Received::of(json, std::time::UNIX_EPOCH);
        assert_eq!(r.flags, Some(2));
        assert_eq!(r.bytes, json.len());
        assert_eq!(r.digest, Digest::of(json.as_bytes()).short());
        assert_eq!(
            r.line(),
            format!(
                "1970-01-01T00:00:00.000Z digest={} bytes={} flags=2",
                r.digest,
                json.len()
            )
        );
        assert_eq!(Received::of("{", std::time::UNIX_EPOCH).flags, None);
    }
}
