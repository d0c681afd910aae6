//! Whether the flags survive: persistence, memory limit, eviction of the key.

use super::helpers::{config_get, human, reason};
use super::key::KeyFacts;
use super::limits::NEAR_LIMIT;
use super::server::ServerInfo;
use crate::finding::Finding;
use redis::aio::MultiplexedConnection;

pub(super) async fn persistence(con: &mut MultiplexedConnection, info: &ServerInfo) -> Finding {
    const C: &str = "persistence";
    let fix = "appendonly yes and appendfsync everysec in redis.conf (or CONFIG SET appendonly yes; CONFIG REWRITE)";
    let aof = match info.get("aof_enabled") {
        Some(v) => Ok(v == "1"),
        None => config_get(con, "appendonly").await.map(|v| v == "yes"),
    };
    match aof {
        Err(e) => Finding::skipped(C, format!("AOF state: {e}")),
        Ok(true) => match config_get(con, "appendfsync").await {
            Ok(f) if f == "no" => Finding::warn(
                C,
                "AOF on, but appendfsync no: the OS decides when writes reach the disk, and a crash can lose \
                 the last ~30 s of flag changes",
                "appendfsync everysec",
            ),
            Ok(f) => Finding::ok(C, format!("AOF on (appendfsync {f})")),
            Err(e) => Finding::ok(C, format!("AOF on (appendfsync not readable: {e})")),
        },
        Ok(false) => match config_get(con, "save").await {
            Ok(save) if save.trim().is_empty() => Finding::warn(
                C,
                "no persistence (no AOF, no RDB snapshots): a restart of Redis loses the flag key, and the \
                 fleet falls back to code defaults",
                fix,
            ),
            Ok(save) => Finding::warn(
                C,
                format!(
                    "RDB snapshots only (save \"{save}\"): a crash or restart loses flag changes made since the \
                     last snapshot"
                ),
                fix,
            ),
            Err(e) => Finding::warn(
                C,
                format!("AOF off; whether RDB snapshots are taken could not be read ({e})"),
                fix,
            ),
        },
    }
}

pub(super) async fn maxmemory(con: &mut MultiplexedConnection, info: &ServerInfo) -> Finding {
    const C: &str = "maxmemory";
    let limit = match info.int("maxmemory") {
        Some(m) => Ok(m),
        None => config_get(con, "maxmemory")
            .await
            .and_then(|v| v.parse::<i64>().map_err(|e| e.to_string())),
    };
    match limit {
        Err(e) => Finding::skipped(C, format!("maxmemory: {e}")),
        Ok(0) => Finding::warn(
            C,
            "no memory limit (maxmemory 0): Redis grows until the machine runs out of memory and it is killed",
            "set maxmemory (e.g. 75% of the memory available to Redis) with maxmemory-policy noeviction or volatile-lru",
        ),
        Ok(limit) => match info.int("used_memory") {
            Some(used) if used as f64 > NEAR_LIMIT * limit as f64 => Finding::warn(
                C,
                format!(
                    "{} of maxmemory {} used ({:.0}%): close to the limit",
                    human(used),
                    human(limit),
                    100.0 * used as f64 / limit as f64
                ),
                "raise maxmemory, or free memory",
            ),
            Some(used) => Finding::ok(
                C,
                format!(
                    "{} of maxmemory {} used ({:.0}%)",
                    human(used),
                    human(limit),
                    100.0 * used as f64 / limit as f64
                ),
            ),
            None => Finding::ok(C, format!("maxmemory {}", human(limit))),
        },
    }
}

pub(super) async fn eviction(
    con: &mut MultiplexedConnection,
    info: &ServerInfo,
    key: &KeyFacts,
) -> Finding {
    const C: &str = "eviction";
    let policy = match info.get("maxmemory_policy") {
        Some(p) => Ok(p.to_string()),
        None => config_get(con, "maxmemory-policy").await,
    };
    let policy = match policy {
        Ok(p) => p,
        Err(e) => return Finding::skipped(C, format!("maxmemory-policy: {e}")),
    };
    let fix = "maxmemory-policy volatile-lru (or noeviction) in redis.conf or CONFIG SET maxmemory-policy volatile-lru";
    if policy == "noeviction" {
        return Finding::ok(
            C,
            "maxmemory-policy noeviction: no key is ever evicted (writes fail when memory is full)",
        );
    }
    if policy.starts_with("allkeys-") {
        return Finding::warn(
            C,
            format!(
                "maxmemory-policy {policy}: the flag key can be evicted when memory is full, and every client \
                 then falls back to code defaults"
            ),
            fix,
        );
    }
    if policy.starts_with("volatile-") {
        return match &key.pttl {
            Ok(ms) if *ms >= 0 => Finding::warn(
                C,
                format!(
                    "maxmemory-policy {policy} evicts keys with a TTL, and the flag key has one: it can be evicted"
                ),
                "remove the TTL from the flag key (PERSIST KEY); see the ttl check",
            ),
            Ok(_) => Finding::ok(
                C,
                format!("maxmemory-policy {policy}: only keys with a TTL are evicted, and the flag key has none"),
            ),
            Err(e) => Finding::ok(
                C,
                format!(
                    "maxmemory-policy {policy}: only keys with a TTL are evicted (the flag key's TTL could not be \
                     read: {})",
                    reason(e)
                ),
            ),
        };
    }
    Finding::ok(C, format!("maxmemory-policy {policy}"))
}
