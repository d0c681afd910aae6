//! How changes reach the service: keyspace notifications, the right to turn them on
//! (CONFIG SET), and CLIENT TRACKING as the fallback.

use super::rights::Can;
use crate::finding::Finding;
use crate::redis::keyspace::merged as notify_merged;

/// How the service will notice changes: the notification setting, and the rights that
/// decide what it does when the setting is off or unreadable (CONFIG SET to enable it,
/// else CLIENT TRACKING, else the poll alone).
pub(super) struct Triggers<'a> {
    pub(super) notify: &'a Result<String, String>,
    pub(super) config_set: &'a Can,
    pub(super) tracking: &'a Can,
}

impl Triggers<'_> {
    /// notify-keyspace-events read, and it covers what the service needs.
    fn complete(&self) -> bool {
        matches!(self.notify, Ok(current) if notify_merged(current).is_none())
    }

    /// What the service does about notifications it cannot confirm.
    fn fallback(&self) -> &'static str {
        // The service sets them only after reading them (CONFIG GET), as here.
        if self.notify.is_ok() && matches!(self.config_set, Can::Yes) {
            "the service enables them with CONFIG SET at each connect"
        } else if matches!(self.tracking, Can::Yes) {
            "the service falls back to CLIENT TRACKING invalidations"
        } else {
            "changes are seen only by the poll (--redis-interval)"
        }
    }
}

pub(super) fn notifications(t: &Triggers) -> Finding {
    const C: &str = "notifications";
    match t.notify {
        Err(e) => Finding::skipped(
            C,
            format!("notify-keyspace-events: {e}; unless they are on, {}", t.fallback()),
        )
        .with_fix("make sure notify-keyspace-events includes Kg$xe (redis.conf or the provider's parameter group)"),
        Ok(current) => match notify_merged(current) {
            None => Finding::ok(C, format!("notify-keyspace-events \"{current}\" covers Kg$xe")),
            Some(wanted) => {
                let missing = wanted.get(current.len()..).unwrap_or_default().to_string();
                Finding::warn(
                    C,
                    format!(
                        "notify-keyspace-events \"{current}\" lacks {missing} (DEL, EXPIRE, string writes, expiry, \
                         eviction are not notified): {}",
                        t.fallback()
                    ),
                    format!("notify-keyspace-events {wanted} in redis.conf or the provider's parameter group"),
                )
            }
        },
    }
}

pub(super) fn rights_config_set(user: &str, t: &Triggers) -> Finding {
    const C: &str = "rights_config_set";
    match t.config_set {
        Can::Unknown(why) => Finding::skipped(C, why),
        Can::Yes => Finding::ok(
            C,
            format!("user {user} may CONFIG SET: the service can enable keyspace notifications itself"),
        ),
        Can::No(why) if t.complete() => Finding::ok(
            C,
            format!("user {user} may not CONFIG SET ({why}); not needed: notifications are on"),
        ),
        Can::No(why) if matches!(t.tracking, Can::Yes) => Finding::ok(
            C,
            format!(
                "user {user} may not CONFIG SET ({why}); where notifications cannot be confirmed the service \
                 uses CLIENT TRACKING instead"
            ),
        ),
        Can::No(why) => Finding::warn(
            C,
            format!(
                "user {user} may not CONFIG SET ({why}) nor use CLIENT TRACKING: unless notifications are on, \
                 changes are seen only by the poll (--redis-interval)"
            ),
            format!(
                "set notify-keyspace-events Kg$xe in redis.conf or the provider's parameter group, or ACL SETUSER \
                 {user} +client|tracking"
            ),
        ),
    }
}

/// Informational: whether CLIENT TRACKING is denied only matters when CONFIG SET is too,
/// and `rights_config_set` says so then (one finding for one risk).
pub(super) fn rights_tracking(user: &str, t: &Triggers) -> Finding {
    const C: &str = "rights_tracking";
    match t.tracking {
        Can::Unknown(why) => Finding::skipped(C, why),
        Can::Yes => Finding::ok(
            C,
            format!("user {user} may use CLIENT TRACKING (the service's trigger when notifications cannot be confirmed)"),
        ),
        Can::No(why) => Finding::ok(
            C,
            format!(
                "user {user} may not use CLIENT TRACKING ({why}); {}",
                if t.complete() || matches!(t.config_set, Can::Yes) {
                    "not needed: notifications are on or can be enabled"
                } else {
                    "see rights_config_set"
                }
            ),
        ),
    }
}
