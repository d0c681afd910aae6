//! Makes sure Redis sends the keyspace notifications the watcher needs (the letters:
//! [`crate::redis::keyspace`]), or arms CLIENT TRACKING where it cannot.

use super::Timing;
use crate::redis::keyspace::{merged_with, TYPE_CHANGES};
use crate::redis::reply::config_value;
use crate::status::Trigger;
use redis::aio::MultiplexedConnection;
use tracing::{info, warn};

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

#[cfg(test)]
mod tests {
    use super::prefixes;

    #[test]
    fn tracking_prefixes_never_overlap() {
        assert_eq!(prefixes(&["flags", "flags:b", "other"]), ["flags", "other"]);
        assert_eq!(prefixes(&["a:x", "a:y"]), ["a:x", "a:y"]);
        assert_eq!(prefixes(&["k", "k"]), ["k"]);
    }
}
