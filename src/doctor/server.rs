//! What the server says about itself (INFO, or HELLO where INFO is refused) and the
//! checks on it: version, mode against the URI, replication, clients.

use super::helpers::reason;
use super::limits::{NEAR_LIMIT, REPLICA_LAG_WARN_SECONDS};
use crate::finding::Finding;
use crate::redis::reply::{as_text as text, query};
use crate::redis::{RedisAddr, RedisTarget};
use redis::aio::MultiplexedConnection;
use redis::Value;
use std::collections::HashMap;

/// What the server says about itself, gathered once: `INFO` (every default section), or
/// where INFO is refused, the little `HELLO` tells (version, mode, role).
pub(super) struct ServerInfo {
    pub(super) fields: HashMap<String, String>,
    /// Why INFO could not be read (None: it could).
    pub(super) info_error: Option<String>,
}

impl ServerInfo {
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    pub(super) fn int(&self, name: &str) -> Option<i64> {
        self.get(name).and_then(|v| v.trim().parse().ok())
    }

    /// "could not check: INFO refused (…)".
    pub(super) fn missing(&self, what: &str) -> String {
        match &self.info_error {
            Some(e) => format!("{what}: INFO refused ({e})"),
            None => format!("{what}: not in the INFO reply"),
        }
    }
}

pub(super) async fn server_info(con: &mut MultiplexedConnection) -> ServerInfo {
    match query(con, &["INFO"]).await {
        Ok(v) => ServerInfo {
            fields: text(&v).map(|t| parse_info(&t)).unwrap_or_default(),
            info_error: None,
        },
        Err(e) => {
            let mut fields = HashMap::new();
            if let Ok(Value::Map(pairs)) = query(con, &["HELLO", "3"]).await {
                for (k, v) in pairs {
                    if let (Some(k), Some(v)) = (text(&k), text(&v)) {
                        let k = match k.as_str() {
                            "version" => "redis_version".to_string(),
                            "mode" => "redis_mode".to_string(),
                            _ => k,
                        };
                        fields.insert(k, v);
                    }
                }
            }
            ServerInfo {
                fields,
                info_error: Some(reason(&e)),
            }
        }
    }
}

/// `field:value` lines of an INFO reply.
pub(super) fn parse_info(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

pub(super) fn version(info: &ServerInfo) -> Finding {
    const C: &str = "version";
    let Some(v) = info.get("redis_version") else {
        return Finding::skipped(C, info.missing("server version"));
    };
    let major: Option<u32> = v.split('.').next().and_then(|m| m.parse().ok());
    match major {
        Some(m) if m >= 7 => Finding::ok(C, format!("Redis {v}")),
        Some(6) => Finding::warn(
            C,
            format!(
                "Redis {v}: works (RESP3, keyspace notifications, CLIENT TRACKING need 6+), but 7.0+ is \
                 recommended: cheap read-only polls (EVALSHA_RO) and ACL DRYRUN need it"
            ),
            "upgrade to Redis 7.0 or later",
        ),
        _ => Finding::fail(
            C,
            format!("Redis {v}: the service needs 6.0+ (RESP3); 7.0+ is recommended"),
            "upgrade to Redis 7.0 or later",
        ),
    }
}

pub(super) fn topology(info: &ServerInfo, target: &RedisTarget) -> Finding {
    const C: &str = "topology";
    let (sentinel_uri, cluster_uri) = (
        matches!(target.addr, RedisAddr::Sentinel { .. }),
        matches!(target.addr, RedisAddr::Cluster { .. }),
    );
    match info.get("redis_mode") {
        None => Finding::skipped(C, info.missing("server mode")),
        Some("standalone") if sentinel_uri => Finding::ok(
            C,
            "the master the sentinels name (the service asks them again at every reconnect and follows failovers)",
        ),
        Some("standalone") if cluster_uri => Finding::fail(
            C,
            "redis+cluster:// names a server that is not in cluster mode",
            "use redis:// (or redis+sentinel://) for this server",
        ),
        Some("standalone") => Finding::ok(C, "standalone server"),
        Some("cluster") if cluster_uri => Finding::ok(
            C,
            "cluster mode: connected to the master that owns the key's slot (followed through failovers and resharding)",
        ),
        Some("cluster") => Finding::warn(
            C,
            "cluster mode, but the URI is redis://: the service talks to this node only, so slot moves and \
             failovers are not followed",
            "use redis+cluster://node1:port,node2:port/?key=NAME (see docs/topologies.md)",
        ),
        Some("sentinel") => Finding::fail(
            C,
            "this is a Sentinel, not a Redis holding data",
            "use redis+sentinel://sentinel1:26379,sentinel2:26379/MASTER_NAME/DB?key=NAME (see docs/topologies.md)",
        ),
        Some(other) => Finding::ok(C, format!("server mode {other}")),
    }
}

pub(super) fn replication(info: &ServerInfo) -> Finding {
    const C: &str = "replication";
    match info.get("role") {
        None => Finding::skipped(C, info.missing("role")),
        Some("master") => {
            let replicas = info.int("connected_slaves");
            match replicas {
                Some(n) => Finding::ok(C, format!("master with {n} connected replica(s)")),
                None => Finding::ok(C, "master"),
            }
        }
        Some("slave" | "replica") => {
            let master = match (info.get("master_host"), info.get("master_port")) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                _ => "its master".to_string(),
            };
            let Some(link) = info.get("master_link_status") else {
                return Finding::skipped(
                    C,
                    format!(
                        "connected to a replica; {}",
                        info.missing("link state and lag")
                    ),
                );
            };
            let fix =
                "point --redis-uri at the master, or repair replication (see the replica's log)";
            if link != "up" {
                let since = info
                    .int("master_link_down_since_seconds")
                    .map(|s| format!(" for {s} s"))
                    .unwrap_or_default();
                return Finding::fail(
                    C,
                    format!(
                        "connected to a replica whose link to {master} is {link}{since}: flag changes made on the master do not arrive"
                    ),
                    fix,
                );
            }
            if info.get("master_sync_in_progress") == Some("1") {
                return Finding::warn(
                    C,
                    format!("connected to a replica of {master} that is resynchronising"),
                    fix,
                );
            }
            match info.int("master_last_io_seconds_ago") {
                Some(lag) if lag > REPLICA_LAG_WARN_SECONDS => Finding::warn(
                    C,
                    format!(
                        "connected to a replica of {master}, last heard from it {lag} s ago: changes arrive late"
                    ),
                    fix,
                ),
                Some(lag) => Finding::ok(
                    C,
                    format!("replica of {master}, link up, last contact {lag} s ago (changes arrive after replication)"),
                ),
                None => Finding::ok(C, format!("replica of {master}, link up")),
            }
        }
        Some(other) => Finding::ok(C, format!("role {other}")),
    }
}

pub(super) fn clients(info: &ServerInfo) -> Finding {
    const C: &str = "clients";
    match (info.int("connected_clients"), info.int("maxclients")) {
        (Some(n), Some(max)) if max > 0 && n as f64 > NEAR_LIMIT * max as f64 => Finding::warn(
            C,
            format!("{n} of maxclients {max} connections in use: new connections (a reconnect) may be refused"),
            "raise maxclients, or find the clients that hold connections",
        ),
        (Some(n), Some(max)) => Finding::ok(C, format!("{n} of maxclients {max} connections")),
        _ => Finding::skipped(C, info.missing("client counts")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Level;

    #[test]
    fn info_parsing() {
        let m = parse_info("# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n\r\n# Memory\r\nmaxmemory:0\r\n");
        assert_eq!(m["redis_version"], "7.0.15");
        assert_eq!(m["maxmemory"], "0");
        let info = ServerInfo {
            fields: m,
            info_error: None,
        };
        assert_eq!(version(&info).level, Level::Ok);
        let plain = RedisTarget::parse("redis://h/0?key=f").unwrap();
        assert_eq!(topology(&info, &plain).level, Level::Ok);
    }

    #[test]
    fn old_versions() {
        let info = |v: &str| ServerInfo {
            fields: [("redis_version".to_string(), v.to_string())].into(),
            info_error: None,
        };
        assert_eq!(version(&info("6.2.14")).level, Level::Warn);
        assert_eq!(version(&info("5.0.7")).level, Level::Fail);
        assert_eq!(version(&info("7.2.4")).level, Level::Ok);
    }

    #[test]
    fn replica_states() {
        let info = |pairs: &[(&str, &str)]| ServerInfo {
            fields: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            info_error: None,
        };
        let base = [
            ("role", "slave"),
            ("master_host", "m"),
            ("master_port", "1"),
        ];
        let up = [
            &base[..],
            &[
                ("master_link_status", "up"),
                ("master_last_io_seconds_ago", "1"),
            ],
        ]
        .concat();
        assert_eq!(replication(&info(&up)).level, Level::Ok);
        let lagging = [
            &base[..],
            &[
                ("master_link_status", "up"),
                ("master_last_io_seconds_ago", "60"),
            ],
        ]
        .concat();
        assert_eq!(replication(&info(&lagging)).level, Level::Warn);
        let down = [&base[..], &[("master_link_status", "down")]].concat();
        assert_eq!(replication(&info(&down)).level, Level::Fail);
        assert_eq!(replication(&info(&[("role", "master")])).level, Level::Ok);
        let refused = ServerInfo {
            fields: HashMap::new(),
            info_error: Some("NOPERM".into()),
        };
        let r = replication(&refused);
        assert_eq!(r.level, Level::Skipped);
        assert!(r.message.starts_with("could not check"), "{}", r.message);
    }
}
