//! Connecting: redis-rs connection settings for a target (RESP3, credentials, TLS files
//! read at each connect so a rotated client certificate is used), one connection with
//! connect and reply timeouts, and a hint at the usual cause of a failed connect.

use super::target::{RedisAddr, RedisTarget};
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use std::path::PathBuf;
use std::time::Duration;

/// The rustls error behind a redis-rs error, found by type. redis-rs keeps the `io::Error`
/// tokio-rustls returned as an `Arc<dyn Error>` (its `source()`), and that `io::Error`
/// holds the rustls error as its inner error (`get_ref()`: `io::Error::source()` skips
/// it), so the chain is walked through those two wrappers by downcasting.
fn tls_error(e: &redis::RedisError) -> Option<&rustls::Error> {
    use std::error::Error;
    let mut next = e.source();
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        next = if let Some(shared) = err.downcast_ref::<std::sync::Arc<dyn Error + Send + Sync>>() {
            Some(&**shared)
        } else if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner)
        } else {
            err.source()
        };
    }
    None
}

/// Where pushes (keyspace messages, invalidations) of a connection go.
pub type PushSender = tokio::sync::mpsc::UnboundedSender<redis::PushInfo>;

/// A RESP3 connection to `node` (sentinels speak RESP3 too) with connect and reply
/// timeouts, and pushes sent to `pushes` if given.
pub async fn connect(
    node: &RedisTarget,
    timeout: Duration,
    pushes: Option<PushSender>,
) -> redis::RedisResult<MultiplexedConnection> {
    let mut config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    if let Some(tx) = pushes {
        config = config.set_push_sender(tx);
    }
    node.client()?
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

impl RedisTarget {
    /// Connection settings for redis-rs. RESP3, so one connection carries commands and
    /// pushes (keyspace messages, tracking invalidations).
    pub fn connection_info(&self) -> redis::RedisResult<redis::ConnectionInfo> {
        use redis::IntoConnectionInfo;
        let addr = match &self.addr {
            RedisAddr::Tcp {
                host,
                port,
                tls: false,
            } => redis::ConnectionAddr::Tcp(host.clone(), *port),
            RedisAddr::Tcp {
                host,
                port,
                tls: true,
            } => redis::ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                insecure: self.tls.insecure,
                tls_params: None,
            },
            RedisAddr::Unix(p) => redis::ConnectionAddr::Unix(p.clone()),
            RedisAddr::Sentinel { .. } | RedisAddr::Cluster { .. } => {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "a redis+sentinel:// or redis+cluster:// target is resolved to one node before connecting",
                )))
            }
        };
        let mut settings = redis::RedisConnectionInfo::default()
            .set_db(self.db)
            .set_protocol(redis::ProtocolVersion::RESP3);
        if let Some(u) = &self.username {
            settings = settings.set_username(u);
        }
        if let Some(p) = &self.password {
            settings = settings.set_password(p);
        }
        Ok(addr.into_connection_info()?.set_redis_settings(settings))
    }

    /// What usually causes a connection error, for the message (empty if nothing useful).
    /// Judged by the error's kind and the TLS error's type, never by its text.
    pub fn connect_hint(&self, e: &redis::RedisError, timeout: Duration) -> String {
        use rustls::{AlertDescription, CertificateError};
        let RedisAddr::Tcp { host, port, tls } = &self.addr else {
            return String::new();
        };
        if !*tls {
            if e.is_connection_dropped() {
                return format!(" (if {host}:{port} is Redis's TLS port, use rediss://)");
            }
            return String::new();
        }
        let failure = tls_error(e);
        // No TLS records came back: a plain port answered, or said nothing.
        if e.is_timeout() || matches!(failure, Some(rustls::Error::InvalidMessage(_))) {
            return format!(
                " (rediss://: no TLS answer from {host}:{port} within {timeout:?}; is it \
                 Redis's TLS port (--tls-port)? A plain port needs redis://)"
            );
        }
        match failure {
            Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
                " (the Redis server's certificate is not signed by a CA this service trusts: \
                 give its CA with --redis-ca-path)"
                    .into()
            }
            Some(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => format!(
                " (the Redis server's certificate does not name {host}: connect with a host name \
                 the certificate holds)"
            ),
            Some(rustls::Error::AlertReceived(AlertDescription::CertificateRequired)) => {
                " (the Redis server requires a client certificate: give --redis-cert-path and \
                 --redis-key-path)"
                    .into()
            }
            _ => String::new(),
        }
    }

    /// A redis-rs client for the target, with the CA and client certificate files read now
    /// (so a rotated client certificate is used from the next connection on).
    pub fn client(&self) -> redis::RedisResult<redis::Client> {
        let info = self.connection_info()?;
        let is_tls = self.addr.is_tls();
        if !is_tls || (self.tls.ca.is_none() && self.tls.client.is_none()) {
            return redis::Client::open(info);
        }
        let read = |flag: &'static str, path: &PathBuf| {
            crate::files::read_secret(path).map_err(|e| {
                redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "cannot read a TLS file",
                    format!("{flag} {}: {e}", path.display()),
                ))
            })
        };
        let client_tls = match &self.tls.client {
            Some((cert, key)) => Some(redis::ClientTlsConfig {
                client_cert: read("--redis-cert-path", cert)?,
                client_key: read("--redis-key-path", key)?,
            }),
            None => None,
        };
        let root_cert = match &self.tls.ca {
            Some(ca) => Some(read("--redis-ca-path", ca)?),
            None => None,
        };
        redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls,
                root_cert,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{AlertDescription, CertificateError};
    use std::io;

    /// A connection error as redis-rs makes it from what tokio-rustls returns.
    fn tls_failure(e: rustls::Error) -> redis::RedisError {
        io::Error::new(io::ErrorKind::InvalidData, e).into()
    }

    /// The same words in a plain I/O error: no TLS error inside.
    fn words(text: &str) -> redis::RedisError {
        io::Error::other(text.to_string()).into()
    }

    fn hint(uri: &str, e: &redis::RedisError) -> String {
        RedisTarget::parse(uri)
            .unwrap()
            .connect_hint(e, Duration::from_secs(2))
    }

    #[test]
    fn tls_hints_come_from_the_error_type() {
        let tls = "rediss://h:6380/0?key=f";
        for (e, want) in [
            (
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
                "--redis-ca-path",
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
                "does not name h",
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
                "--redis-cert-path",
            ),
            (
                rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
                "no TLS answer from h:6380 within 2s",
            ),
        ] {
            let shown = e.to_string();
            let got = hint(tls, &tls_failure(e));
            assert!(got.contains(want), "{shown}: {got:?}");
            // The same text without the type behind it gets no hint.
            assert_eq!(hint(tls, &words(&shown)), "", "{shown}");
        }
        let timed_out: redis::RedisError = io::Error::from(io::ErrorKind::TimedOut).into();
        assert!(hint(tls, &timed_out).contains("no TLS answer"));
        // Another TLS failure: nothing to add.
        let other = tls_failure(rustls::Error::InvalidCertificate(CertificateError::Expired));
        assert_eq!(hint(tls, &other), "");
    }

    #[test]
    fn a_plain_connection_dropped_may_be_a_tls_port() {
        let plain = "redis://h:6380/0?key=f";
        let reset: redis::RedisError = io::Error::from(io::ErrorKind::ConnectionReset).into();
        assert!(hint(plain, &reset).contains("use rediss://"));
        assert_eq!(hint(plain, &words("connection reset by peer")), "");
        // A TLS error on a plain connection cannot happen; no TLS hint either way.
        let tls = tls_failure(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
        assert_eq!(hint(plain, &tls), "");
    }
}
