//! Which Redis node to watch: the URI's own node, the master a Sentinel names, or the
//! Cluster master that owns the keys' hash slot. Resolved again at every reconnect,
//! because that is when it changes (failover, resharding), and checked while connected
//! (see [`Placement::verify`]) so a move that does not drop the connection is followed too.

use super::connect::{connect, PushSender};
use super::reply::{as_int, as_string};
use super::target::{RedisAddr, RedisTarget};
use redis::aio::MultiplexedConnection;
use redis::{RedisError, Value};
use std::time::Duration;
use tracing::debug;

/// Where the resolved node sits in its topology, and so what to check while connected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// A single server: nothing to check.
    Standalone,
    /// The master of a Sentinel-managed group: must still answer `ROLE` with `master`.
    SentinelMaster {
        /// The sentinel that named it, for the `+switch-master` hint.
        sentinel: Box<RedisTarget>,
        master: String,
        /// The address it named.
        addr: (String, u16),
    },
    /// A Cluster master: must still own `slot` (by node id).
    SlotOwner { slot: u16, node_id: String },
}

/// A node to connect to, and how to tell that it stopped being the right one.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub node: RedisTarget,
    pub placement: Placement,
}

fn err(what: &'static str, detail: String) -> RedisError {
    RedisError::from((redis::ErrorKind::Client, what, detail))
}

/// Finds the node holding `key` (the URI's node, the Sentinel master, the Cluster slot
/// owner) and connects to it, as the service does: what `put` and the doctor use.
pub async fn connect_to_key(
    target: &RedisTarget,
    key: &str,
    timeout: Duration,
    pushes: Option<PushSender>,
) -> redis::RedisResult<(MultiplexedConnection, Resolved)> {
    let resolved = resolve(target, key, timeout).await?;
    let con = connect(&resolved.node, timeout, pushes).await?;
    Ok((con, resolved))
}

/// Resolves the node that holds `key`.
pub async fn resolve(
    target: &RedisTarget,
    key: &str,
    timeout: Duration,
) -> redis::RedisResult<Resolved> {
    match &target.addr {
        RedisAddr::Tcp { .. } | RedisAddr::Unix(_) => Ok(Resolved {
            node: target.clone(),
            placement: Placement::Standalone,
        }),
        RedisAddr::Sentinel {
            sentinels, master, ..
        } => {
            let mut failures = Vec::new();
            for (host, port) in sentinels {
                let sentinel = sentinel_node(target, host, *port);
                match ask_sentinel(&sentinel, master, timeout).await {
                    Ok((mhost, mport)) => {
                        debug!(sentinel = %format!("{host}:{port}"), master = %master,
                            node = %format!("{mhost}:{mport}"), "sentinel named the master");
                        return Ok(Resolved {
                            node: target.at_node(&mhost, mport),
                            placement: Placement::SentinelMaster {
                                sentinel: Box::new(sentinel),
                                master: master.clone(),
                                addr: (mhost, mport),
                            },
                        });
                    }
                    Err(e) => failures.push(format!("{host}:{port}: {e}")),
                }
            }
            Err(err(
                "no sentinel named the master",
                format!("master {master:?}: {}", failures.join("; ")),
            ))
        }
        RedisAddr::Cluster { seeds, .. } => {
            let mut failures = Vec::new();
            for (host, port) in seeds {
                let seed = target.at_node(host, *port);
                match slot_owner(&seed, key, timeout).await {
                    Ok((slot, (ohost, oport, id))) => {
                        debug!(seed = %format!("{host}:{port}"), slot,
                            owner = %format!("{ohost}:{oport}"), "cluster slot owner found");
                        return Ok(Resolved {
                            node: target.at_node(&ohost, oport),
                            placement: Placement::SlotOwner { slot, node_id: id },
                        });
                    }
                    Err(e) => failures.push(format!("{host}:{port}: {e}")),
                }
            }
            Err(err(
                "no cluster node named the owner of the key's slot",
                failures.join("; "),
            ))
        }
    }
}

/// A sentinel as a connectable target: its own credentials (none by default), db 0.
fn sentinel_node(target: &RedisTarget, host: &str, port: u16) -> RedisTarget {
    let mut node = target.at_node(host, port);
    node.db = 0;
    let (user, password) = match &target.addr {
        RedisAddr::Sentinel {
            auth: Some((u, p)), ..
        } => (u.clone(), Some(p.clone())),
        _ => (None, None),
    };
    node.username = user;
    node.password = password;
    node
}

async fn ask_sentinel(
    sentinel: &RedisTarget,
    master: &str,
    timeout: Duration,
) -> redis::RedisResult<(String, u16)> {
    let mut con = connect(sentinel, timeout, None).await?;
    let reply: Option<(String, u16)> = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(master)
        .query_async(&mut con)
        .await?;
    reply.ok_or_else(|| {
        err(
            "unknown master",
            format!("this sentinel monitors no master named {master:?}"),
        )
    })
}

/// The key's slot and the master that owns it (host, port, node id), as `seed` sees it.
async fn slot_owner(
    seed: &RedisTarget,
    key: &str,
    timeout: Duration,
) -> redis::RedisResult<(u16, (String, u16, String))> {
    let mut con = connect(seed, timeout, None).await?;
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut con)
        .await?;
    let slots: Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut con)
        .await?;
    let owner = owner_in_slots(&slots, slot).ok_or_else(|| {
        err(
            "slot not served",
            format!("no node serves slot {slot} (cluster down or resharding?)"),
        )
    })?;
    Ok((slot, owner))
}

/// The master (host, port, id) of `slot` in a `CLUSTER SLOTS` reply.
fn owner_in_slots(reply: &Value, slot: u16) -> Option<(String, u16, String)> {
    let Value::Array(ranges) = reply else {
        return None;
    };
    ranges.iter().find_map(|range| {
        let Value::Array(parts) = range else {
            return None;
        };
        let start = as_int(parts.first()?)?;
        let end = as_int(parts.get(1)?)?;
        if !(start..=end).contains(&i64::from(slot)) {
            return None;
        }
        let Value::Array(master) = parts.get(2)? else {
            return None;
        };
        let host = as_string(master.first()?)?;
        let port = u16::try_from(as_int(master.get(1)?)?).ok()?;
        let id = master.get(2).and_then(as_string).unwrap_or_default();
        Some((host, port, id))
    })
}

/// The Redis Cluster hash slot of a key (CRC16/XMODEM of the key or its `{hash tag}`).
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .filter(|&close| close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key);
    let mut crc: u16 = 0;
    for &b in tagged {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

impl Placement {
    /// Confirms, on the watched connection, that this node is still the right one; for
    /// Sentinel also asks the sentinel (on `sentinel`, the hint connection) whether it
    /// still names this node: after a failover the old master stays a writable master
    /// for seconds (until the sentinels demote it), so ROLE alone would not tell.
    /// `Err` carries a reason to log before re-resolving.
    pub async fn verify(
        &self,
        con: &mut MultiplexedConnection,
        sentinel: Option<&mut MultiplexedConnection>,
    ) -> Result<(), VerifyError> {
        match self {
            Placement::Standalone => {
                let _: Value = redis::cmd("PING").query_async(con).await?;
                Ok(())
            }
            Placement::SentinelMaster { master, addr, .. } => {
                let role: Value = redis::cmd("ROLE").query_async(con).await?;
                match role_name(&role).as_deref() {
                    Some("master") => {}
                    other => {
                        return Err(VerifyError::Moved(format!(
                            "the node sentinel named as master {master:?} now has role {}",
                            other.unwrap_or("unknown")
                        )))
                    }
                }
                let Some(sentinel) = sentinel else {
                    return Ok(());
                };
                // The sentinel connection is only a second opinion: if it fails, keep going.
                let named: redis::RedisResult<Option<(String, u16)>> = redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(master)
                    .query_async(sentinel)
                    .await;
                match named {
                    Ok(Some(now)) if now != *addr => Err(VerifyError::Moved(format!(
                        "sentinel now names {}:{} as master {master:?}",
                        now.0, now.1
                    ))),
                    _ => Ok(()),
                }
            }
            Placement::SlotOwner { slot, node_id } => {
                let slots: Value = redis::cmd("CLUSTER").arg("SLOTS").query_async(con).await?;
                match owner_in_slots(&slots, *slot) {
                    Some((_, _, id)) if id == *node_id => Ok(()),
                    Some((host, port, _)) => Err(VerifyError::Moved(format!(
                        "slot {slot} moved to {host}:{port}"
                    ))),
                    None => Err(VerifyError::Moved(format!("no node serves slot {slot}"))),
                }
            }
        }
    }

    /// Opens the `+switch-master` subscription on the sentinel that named the master:
    /// a hint to re-resolve at once instead of at the next check. `None` if not Sentinel
    /// or the sentinel cannot be reached (the checks still follow a failover).
    pub async fn switch_hint(
        &self,
        timeout: Duration,
    ) -> Option<(
        MultiplexedConnection,
        tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>,
    )> {
        let Placement::SentinelMaster { sentinel, .. } = self else {
            return None;
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut con = connect(sentinel, timeout, Some(tx)).await.ok()?;
        con.subscribe("+switch-master").await.ok()?;
        Some((con, rx))
    }

    /// Whether a `+switch-master` message is about our master.
    pub fn is_our_switch(&self, push: &redis::PushInfo) -> bool {
        let Placement::SentinelMaster { master, .. } = self else {
            return false;
        };
        // Message data: [channel, "<name> <old-ip> <old-port> <new-ip> <new-port>"].
        push.data
            .get(1)
            .and_then(as_string)
            .is_some_and(|m| m.split(' ').next() == Some(master.as_str()))
    }
}

/// Why [`Placement::verify`] failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Redis(#[from] RedisError),
    #[error("{0}")]
    Moved(String),
}

fn role_name(v: &Value) -> Option<String> {
    match v {
        Value::Array(items) => items.first().and_then(as_string),
        _ => None,
    }
}

pub use super::codes::is_redirect;

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn key_slots_match_redis() {
        // The examples of Redis's CLUSTER KEYSLOT documentation.
        assert_eq!(key_slot(b"somekey"), 11058);
        assert_eq!(key_slot(b"foo{hash_tag}"), 2515);
        assert_eq!(key_slot(b"foo{hash_tag}"), key_slot(b"hash_tag"));
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
        // An empty tag is no tag: the whole key is hashed.
        assert_ne!(key_slot(b"{}a"), key_slot(b"{}b"));
    }

    #[test]
    fn finds_the_owner_of_a_slot() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(7000), bulk("id-a")]),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(7003), bulk("id-d")]),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(10922),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(7001), bulk("id-b")]),
            ]),
        ]);
        assert_eq!(
            owner_in_slots(&reply, 5461),
            Some(("127.0.0.1".into(), 7001, "id-b".into()))
        );
        assert_eq!(owner_in_slots(&reply, 0).map(|o| o.1), Some(7000));
        assert_eq!(owner_in_slots(&reply, 16000), None);
    }
}
