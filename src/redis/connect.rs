//! Connecting: redis-rs connection settings for a target (RESP3, credentials, TLS files
//! read at each connect so a rotated client certificate is used), one connection with
//! connect and reply timeouts, and a hint at the usual cause of a failed connect.

use super::target::{RedisAddr, RedisTarget};
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use std::path::PathBuf;
use std::time::Duration;

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
    pub fn connect_hint(&self, e: &redis::RedisError, timeout: Duration) -> String {
        let text = e.to_string();
        let RedisAddr::Tcp { host, port, tls } = &self.addr else {
            return String::new();
        };
        let has = |s: &str| text.contains(s);
        if *tls {
            if e.is_timeout() || has("InvalidContentType") || has("corrupt message") {
                return format!(
                    " (rediss://: no TLS answer from {host}:{port} within {timeout:?}; is it \
                     Redis's TLS port (--tls-port)? A plain port needs redis://)"
                );
            }
            if has("UnknownIssuer") {
                return " (the Redis server's certificate is not signed by a CA this service \
                         trusts: give its CA with --redis-ca-path)"
                    .into();
            }
            if has("NotValidForName") || has("not valid for name") {
                return format!(
                    " (the Redis server's certificate does not name {host}: connect with a host \
                     name the certificate holds)"
                );
            }
            if has("CertificateRequired") || has("certificate required") {
                return " (the Redis server requires a client certificate: give \
                         --redis-cert-path and --redis-key-path)"
                    .into();
            }
        } else if e.is_connection_dropped() || has("reset") || has("broken pipe") {
            return format!(" (if {host}:{port} is Redis's TLS port, use rediss://)");
        }
        String::new()
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
