//! The operator tools' client of the service's management port (`/fleet`,
//! `/changes/{digest}`): hyper-util's client (already in the tree through tonic), plain
//! HTTP/1.1 as the management port speaks. A `--service` host name that resolves to
//! several addresses (a Kubernetes headless service) means each address.

use crate::fleet_http::FleetBody;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::http::{HeaderMap, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// Per request: the management port answers at once, or something is wrong.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read: a flag document (4 MiB by default) or a page of 1,000 streams.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// What can go wrong talking to a service's management port.
#[derive(Debug, thiserror::Error)]
pub enum FleetClientError {
    #[error("--service {url}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("--service {url}: cannot resolve {host}: {source}")]
    Resolve {
        url: String,
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{url}: {source}")]
    Request {
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("{url}: no answer within {REQUEST_TIMEOUT:?}")]
    Timeout { url: String },
    #[error("{url}: reading the answer: {source}")]
    Body {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("{url}: not the expected JSON: {source}")]
    Json {
        url: String,
        #[source]
        source: serde_json::Error,
    },
}

/// One service address: `http://IP:PORT` (its management port).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint(pub String);

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a `--service` URL (`http://HOST:PORT`, the management port) and resolves it to
/// one endpoint per address.
pub async fn endpoints(url: &str) -> Result<Vec<Endpoint>, FleetClientError> {
    let bad = |reason: &str| FleetClientError::BadUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let parsed = url::Url::parse(url).map_err(|e| {
        bad(&format!(
            "{e}; expected http://HOST:PORT (the management port)"
        ))
    })?;
    if parsed.scheme() != "http" {
        return Err(bad(
            "expected http://HOST:PORT: the management port speaks plain HTTP",
        ));
    }
    if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
        return Err(bad(
            "give only http://HOST:PORT; the tool adds the path (/fleet, /changes)",
        ));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| bad("no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = parsed
        .port()
        .ok_or_else(|| bad("no port: give the management port (--management-port)"))?;
    let mut addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|source| FleetClientError::Resolve {
            url: url.to_string(),
            host: host.clone(),
            source,
        })?
        .collect();
    addrs.sort();
    addrs.dedup();
    Ok(addrs
        .into_iter()
        .map(|a| Endpoint(format!("http://{a}")))
        .collect())
}

/// A management-port client.
pub struct FleetClient {
    http: Client<HttpConnector, Empty<Bytes>>,
}

impl Default for FleetClient {
    fn default() -> Self {
        FleetClient {
            http: Client::builder(TokioExecutor::new()).build_http(),
        }
    }
}

impl FleetClient {
    /// GETs `url`: headers and body of a 200 answer.
    async fn get(&self, url: &str) -> Result<(HeaderMap, Bytes), FleetClientError> {
        let uri: Uri = url.parse().map_err(|e| FleetClientError::BadUrl {
            url: url.to_string(),
            reason: format!("{e}"),
        })?;
        let answer = async {
            let res = self
                .http
                .get(uri)
                .await
                .map_err(|source| FleetClientError::Request {
                    url: url.to_string(),
                    source,
                })?;
            let (parts, body) = res.into_parts();
            let body = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|source| FleetClientError::Body {
                    url: url.to_string(),
                    source,
                })?
                .to_bytes();
            if parts.status != StatusCode::OK {
                return Err(FleetClientError::Status {
                    url: url.to_string(),
                    status: parts.status,
                    body: String::from_utf8_lossy(&body).trim().to_string(),
                });
            }
            Ok((parts.headers, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, answer)
            .await
            .map_err(|_| FleetClientError::Timeout {
                url: url.to_string(),
            })?
    }

    /// `GET /fleet` with a query (`behind=1&limit=1000`, or empty).
    pub async fn fleet(&self, at: &Endpoint, query: &str) -> Result<FleetBody, FleetClientError> {
        let url = format!("{at}/fleet?{query}");
        let (_, body) = self.get(&url).await?;
        serde_json::from_slice(&body).map_err(|source| FleetClientError::Json { url, source })
    }

    /// `GET /changes/{digest}`: the document and the source it belonged to.
    pub async fn document(
        &self,
        at: &Endpoint,
        digest: &str,
    ) -> Result<(Option<String>, Bytes), FleetClientError> {
        let url = format!("{at}/changes/{digest}");
        let (headers, body) = self.get(&url).await?;
        let source = headers
            .get(crate::changes_http::SOURCE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok((source, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn service_urls_are_checked_and_resolved_to_each_address() {
        let one = endpoints("http://127.0.0.1:8014").await.unwrap();
        assert_eq!(one, [Endpoint("http://127.0.0.1:8014".into())]);
        let v6 = endpoints("http://[::1]:8014/").await.unwrap();
        assert_eq!(v6, [Endpoint("http://[::1]:8014".into())]);
        for bad in [
            "127.0.0.1:8014",
            "https://127.0.0.1:8014",
            "http://127.0.0.1",
            "http://127.0.0.1:8014/fleet",
        ] {
            let e = endpoints(bad).await.unwrap_err();
            assert!(matches!(e, FleetClientError::BadUrl { .. }), "{bad}: {e}");
        }
    }
}
