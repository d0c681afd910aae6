//! Who may connect and how: authentication and transport encryption.

use crate::finding::Finding;
use crate::redis::{RedisAddr, RedisTarget};

pub(super) fn auth(target: &RedisTarget) -> Finding {
    const C: &str = "auth";
    match (&target.username, &target.password) {
        (Some(u), Some(_)) => Finding::ok(C, format!("authenticated as ACL user {u}")),
        (None, Some(_)) => Finding::ok(C, "authenticated with a password (user default)"),
        _ => Finding::warn(
            C,
            "no password: Redis accepted an unauthenticated connection, so anyone who can reach it \
             can change or delete the flags",
            "set requirepass, or better an ACL user for the service (docs/doctor.md), and give the \
             credentials in --redis-uri: redis://USER:PASSWORD@host:port/db?key=NAME",
        ),
    }
}

pub(super) fn tls(target: &RedisTarget) -> Finding {
    const C: &str = "tls";
    match &target.addr {
        // The same judgement as for the node they lead to.
        RedisAddr::Sentinel { sentinels: n, .. } | RedisAddr::Cluster { seeds: n, .. } => {
            tls(&target.at_node(&n[0].0, n[0].1))
        }
        RedisAddr::Tcp { tls: true, .. } if target.tls.insecure => Finding::warn(
            C,
            "TLS, but the server's certificate is not verified (--redis-tls-insecure): anyone on the \
             network path can pose as Redis",
            "drop --redis-tls-insecure and give the server's CA with --redis-ca-path",
        ),
        RedisAddr::Tcp { tls: true, .. } => Finding::ok(C, "TLS (rediss://), certificate verified"),
        RedisAddr::Unix(_) => Finding::ok(C, "Unix socket: traffic stays on this host"),
        RedisAddr::Tcp { host, .. } if is_loopback(host) => Finding::ok(
            C,
            format!("plaintext, but to {host} (loopback): traffic stays on this host"),
        ),
        RedisAddr::Tcp { host, .. } => Finding::warn(
            C,
            format!("plaintext TCP to {host}: flags and the password cross the network unencrypted"),
            "enable TLS on Redis (tls-port, tls-cert-file, tls-key-file) and use rediss:// in --redis-uri",
        ),
    }
}

pub(super) fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Level;

    #[test]
    fn tls_and_auth_by_address() {
        let t = |uri: &str| RedisTarget::parse(uri).unwrap();
        assert_eq!(tls(&t("rediss://h/0?key=f")).level, Level::Ok);
        assert_eq!(tls(&t("redis://127.0.0.1/0?key=f")).level, Level::Ok);
        assert_eq!(tls(&t("redis://[::1]/0?key=f")).level, Level::Ok);
        assert_eq!(tls(&t("unix:///s.sock?key=f")).level, Level::Ok);
        assert_eq!(tls(&t("redis://redis.internal/0?key=f")).level, Level::Warn);
        assert_eq!(auth(&t("redis://h/0?key=f")).level, Level::Warn);
        assert_eq!(auth(&t("redis://u@h/0?key=f")).level, Level::Warn);
        assert_eq!(auth(&t("redis://:pw@h/0?key=f")).level, Level::Ok);
        assert_eq!(auth(&t("redis://u:pw@h/0?key=f")).level, Level::Ok);
    }
}
