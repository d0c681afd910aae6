//! Whether the service's user may do what it needs: GET, SUBSCRIBE (probed for real or
//! with ACL DRYRUN), and what the caller already learnt about its connection.

use super::helpers::{is_noperm, reason};
use super::key::KeyFacts;
use crate::finding::Finding;
use crate::redis::codes::is_generic_error;
use crate::redis::reply::{as_text as text, query};
use crate::redis::RedisTarget;
use redis::aio::MultiplexedConnection;
use redis::{RedisError, Value};

/// Whether the checks run for the subcommand (own connection; validates the document)
/// or inside the service (the session's connection, already subscribed; the watcher
/// reports the document itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    Cli,
    Service,
}

/// What the caller already knows about the connection.
pub(super) struct Probes {
    pub(super) mode: Mode,
    /// The SUBSCRIBE to the key's channel failed with this (None: it worked).
    pub(super) subscribe: Option<RedisError>,
    /// CLIENT TRACKING tried for real (None: ask ACL DRYRUN; the service's connection
    /// may be tracking, and is not to be touched).
    pub(super) tracking: Option<Can>,
}

/// Whether the connected user may run a command.
#[derive(Clone, Debug)]
pub(super) enum Can {
    Yes,
    /// Refused, or the command does not exist (renamed away): why.
    No(String),
    /// Could not tell: why.
    Unknown(String),
}

pub(super) fn rights_get(target: &RedisTarget, user: &str, key: &KeyFacts) -> Finding {
    const C: &str = "rights_get";
    match &key.value {
        Ok(_) => Finding::ok(C, format!("user {user} may GET {}", target.key)),
        Err(e) if crate::redis::codes::is_wrong_type(e) => Finding::ok(
            C,
            format!(
                "user {user} may GET {} (it is not a string: see key)",
                target.key
            ),
        ),
        Err(e) if is_noperm(e) => Finding::fail(
            C,
            format!("user {user} may not GET {}: {}", target.key, reason(e)),
            format!(
                "ACL SETUSER {user} +get +evalsha_ro +eval_ro +script|load %R~{}",
                target.key
            ),
        ),
        Err(e) => Finding::skipped(C, format!("GET: {}", reason(e))),
    }
}

pub(super) fn rights_subscribe(
    target: &RedisTarget,
    user: &str,
    mode: Mode,
    error: Option<RedisError>,
) -> Finding {
    const C: &str = "rights_subscribe";
    let channel = target.keyspace_channel();
    match error {
        None if mode == Mode::Service => Finding::ok(C, format!("subscribed to {channel}")),
        None => Finding::ok(C, format!("user {user} may SUBSCRIBE to {channel}")),
        Some(e) if is_noperm(&e) => Finding::fail(
            C,
            format!(
                "user {user} may not SUBSCRIBE to {channel}: {}; the service cannot watch the key",
                reason(&e)
            ),
            format!("ACL SETUSER {user} +subscribe +unsubscribe &{channel}"),
        ),
        Some(e) => Finding::skipped(C, format!("SUBSCRIBE: {}", reason(&e))),
    }
}

/// What `ACL DRYRUN` says about a command for a user: `No` when denied or when the
/// command does not exist (renamed away), `Unknown` when DRYRUN itself is refused or
/// missing (Redis < 7).
pub(super) async fn dryrun(con: &mut MultiplexedConnection, user: &str, command: &[&str]) -> Can {
    let mut args = vec!["ACL", "DRYRUN", user];
    args.extend_from_slice(command);
    match query(con, &args).await {
        Ok(Value::Okay) => Can::Yes,
        Ok(v) => match text(&v) {
            Some(t) if t == "OK" => Can::Yes,
            Some(t) => Can::No(t),
            None => Can::Unknown(format!("unexpected ACL DRYRUN reply {v:?}")),
        },
        // ERR is what DRYRUN answers for an unknown user and for an unknown command
        // alike; COMMAND INFO tells the two apart (an unknown command has no entry).
        Err(e) if is_generic_error(&e) && !command_exists(con, command[0]).await => Can::No(
            format!("{} is not available (renamed or disabled)", command[0]),
        ),
        Err(e) => Can::Unknown(format!("ACL DRYRUN: {}", reason(&e))),
    }
}

/// Whether the server knows `name` (`COMMAND INFO` answers nil for an unknown or
/// renamed-away command). When COMMAND itself is refused, assume it exists.
async fn command_exists(con: &mut MultiplexedConnection, name: &str) -> bool {
    match query(con, &["COMMAND", "INFO", name]).await {
        Ok(Value::Array(entries)) => !matches!(entries.as_slice(), [Value::Nil]),
        _ => true,
    }
}
