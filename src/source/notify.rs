//! Makes sure Redis sends the keyspace notifications the watcher needs.
//!
//! Needed: `K` (keyspace channel) with `g` (DEL, RENAME, EXPIRE…), `$` (string writes),
//! `x` (expired) and `e` (evicted), plus `h` (hash writes) when a source is a hash. The
//! letters already set are kept (other consumers rely on them); only missing ones are
//! added. `A` stands for every class.
//!
//! Wanted too, not needed: `lshzt` (list, set, hash, sorted set and stream writes), so a
//! flag key deleted and recreated as another type (`LPUSH`, `SADD`, `HSET`, `XADD`…) is
//! noticed at the event rather than at the next poll (issue 17). Without them the poll
//! still finds it, so a refused CONFIG SET of these letters alone is not a warning.

use super::Timing;
use crate::status::Trigger;
use redis::aio::MultiplexedConnection;
use tracing::{info, warn};

pub const NEEDED: &str = "Kg$xe";
/// Also needed when a source is stored as a hash.
pub const NEEDED_HASH: &str = "Kg$xeh";
/// Wanted on top of the needed letters: the writes that create a key of another type.
/// (`d`, module types, is left out: Redis < 7 refuses the letter and the whole SET.)
pub const TYPE_CHANGES: &str = "lshzt";
const CLASSES_IN_A: &str = "g$lshzxetd";

/// The letters to set so that `current` covers `NEEDED`, or `None` if it already does.
pub fn merged(current: &str) -> Option<String> {
    merged_with(current, NEEDED)
}

/// The letters to set so that `current` covers `needed`, or `None` if it already does.
pub fn merged_with(current: &str, needed: &str) -> Option<String> {
    let has = |c: char| current.contains(c) || (current.contains('A') && CLASSES_IN_A.contains(c));
    let missing: String = needed.chars().filter(|c| !has(*c)).collect();
    (!missing.is_empty()).then(|| format!("{current}{missing}"))
}

/// Reads and, if needed, extends `notify-keyspace-events`. Says once, clearly, when
/// CONFIG is refused; the subscription is made either way and the poll covers the rest.
pub async fn ensure(
    con: &mut MultiplexedConnection,
    timing: &Timing,
    needed: &str,
    warned: &mut bool,
) -> Trigger {
    let poll = timing.poll.as_secs();
    let current: redis::RedisResult<redis::Value> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(con)
        .await;
    let current = match current.map(|v| config_value(&v)) {
        Ok(Some(c)) => c,
        Ok(None) | Err(_) => {
            if !std::mem::replace(warned, true) {
                warn!(
                    poll_seconds = poll,
                    "cannot read notify-keyspace-events (CONFIG GET refused); subscribing anyway. \
                     If changes arrive only every poll, set notify-keyspace-events to include '{needed}' \
                     in redis.conf or your provider's parameter group"
                );
            }
            return Trigger::KeyspaceUnverified;
        }
    };
    let Some(wanted) = merged_with(&current, &format!("{needed}{TYPE_CHANGES}")) else {
        return Trigger::Keyspace;
    };
    let covered = merged_with(&current, needed).is_none();
    let set: redis::RedisResult<()> = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg(&wanted)
        .query_async(con)
        .await;
    match set {
        Ok(()) => {
            info!(from = %current, to = %wanted, "enabled keyspace notifications (notify-keyspace-events)");
            Trigger::Keyspace
        }
        Err(e) if covered => {
            info!(current = %current, error = %e, poll_seconds = poll,
                "cannot add '{TYPE_CHANGES}' to notify-keyspace-events (CONFIG SET refused): a flag key \
                 recreated as a list, set, hash, sorted set or stream is noticed at the next poll");
            Trigger::Keyspace
        }
        Err(e) => {
            if !std::mem::replace(warned, true) {
                warn!(
                    current = %current, error = %e, poll_seconds = poll,
                    "keyspace notifications are off and CONFIG SET was refused: changes will be seen only by the \
                     poll. Set notify-keyspace-events to include '{needed}' in redis.conf or your provider's \
                     parameter group"
                );
            }
            Trigger::PollOnly
        }
    }
}

/// Arms RESP3 client tracking for the keys' prefixes on this connection (lost with the
/// connection, so called after every connect). Returns whether Redis accepted it.
pub async fn track(con: &mut MultiplexedConnection, keys: &[&str], warned: &mut bool) -> bool {
    let mut cmd = redis::cmd("CLIENT");
    cmd.arg("TRACKING").arg("ON").arg("BCAST");
    for prefix in prefixes(keys) {
        cmd.arg("PREFIX").arg(prefix);
    }
    let r: redis::RedisResult<()> = cmd.query_async(con).await;
    match r {
        Ok(()) => {
            info!(prefixes = ?keys, "keyspace notifications unconfirmed: using CLIENT TRACKING invalidations as the change trigger");
            true
        }
        Err(e) => {
            if !std::mem::replace(warned, true) {
                warn!(error = %e, "CLIENT TRACKING refused too (needs +client|tracking); relying on keyspace events if the server sends them, and on the poll");
            }
            false
        }
    }
}

/// The tracking prefixes for `keys`: Redis refuses overlapping BCAST prefixes, and a key
/// that starts with another key is covered by that one's prefix already.
fn prefixes<'a>(keys: &[&'a str]) -> Vec<&'a str> {
    let mut out: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|k| !keys.iter().any(|other| other != k && k.starts_with(other)))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The value out of a CONFIG GET reply (a map in RESP3, a pair list in RESP2).
fn config_value(v: &redis::Value) -> Option<String> {
    use redis::Value;
    let as_string = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    match v {
        Value::Map(pairs) => pairs.first().and_then(|(_, v)| as_string(v)),
        Value::Array(items) if items.len() == 2 => as_string(&items[1]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{merged, merged_with, prefixes, NEEDED, TYPE_CHANGES};

    #[test]
    fn tracking_prefixes_never_overlap() {
        assert_eq!(prefixes(&["flags", "flags:b", "other"]), ["flags", "other"]);
        assert_eq!(prefixes(&["a:x", "a:y"]), ["a:x", "a:y"]);
        assert_eq!(prefixes(&["k", "k"]), ["k"]);
    }

    #[test]
    fn merges_without_dropping_letters() {
        assert_eq!(merged("").as_deref(), Some("Kg$xe"));
        assert_eq!(merged("KEA"), None);
        assert_eq!(merged("AK"), None);
        assert_eq!(merged("Ex").as_deref(), Some("ExKg$e"));
        assert_eq!(merged("K$").as_deref(), Some("K$gxe"));
        assert_eq!(merged("Kg$xe"), None);
        let wanted = format!("{NEEDED}{TYPE_CHANGES}");
        assert_eq!(merged_with("KEA", &wanted), None);
        assert_eq!(merged_with("Kg$xe", &wanted).as_deref(), Some("Kg$xelshzt"));
        assert_eq!(
            merged_with("Kg$xeh", &wanted).as_deref(),
            Some("Kg$xehlszt")
        );
    }
}
