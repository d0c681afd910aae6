//! `flagd-redis-sync doctor`: is the Redis behind the service fit for production?
//!
//! One [`Finding`] per check, each with a stable id (`check`), a [`crate::finding::Level`], the reason and,
//! when something should change, the exact setting to change (`fix`). The same checks run
//! inside the service after every (re)connect, on the session's own connection
//! ([`spawn_session_checks`]): findings are logged once, listed in `/readyz` and exported as
//! `flagd_redis_sync_doctor_findings{check,level}`. docs/doctor.md describes every check.
//!
//! Levels:
//! - `fail`: the service cannot serve these flags as configured (no connection, no key,
//!   wrong type, refused document, no right to GET or SUBSCRIBE, a replica cut off from
//!   its master…).
//! - `warn`: it works, but a risk the production guides warn about is present (evictable
//!   key, no persistence, TTL on the key, notifications off, no password…).
//! - `skipped`: **could not check**: the command was refused or is not available (managed
//!   Redis restricts CONFIG, INFO, ACL…), or the check does not apply (no key to look at).
//!   The message says what could not be checked and why. Skipped findings do not change
//!   the exit code: a managed Redis that hides its configuration is not an error of the
//!   operator's, and a CI gate that can never pass would be switched off.
//! - `ok`.
//!
//! Exit code of the subcommand: 2 if any check fails, else 1 if any warns, else 0.
//!
//! No check writes anything: rights are probed with `ACL DRYRUN` where available, and the
//! subcommand's SUBSCRIBE probe is on its own connection.
//!
//! One file per concern: `command` (the subcommand's connection and probes), `session`
//! (the checks inside the service, handed to the watcher by `app.rs` as its connect
//! hook), `checks` (gather facts once, run every check), the checks by subject
//! (`server`, `security`, `durability`, `key`, `rights`, `triggers`), `report` (text,
//! JSON, exit code), `limits` and `helpers`.

mod checks;
mod command;
mod durability;
mod helpers;
mod key;
mod limits;
mod report;
mod rights;
mod security;
mod server;
mod session;
mod triggers;

pub use crate::finding::{Finding, Level, Report};
pub use command::{check, check_with_timeout, run_cli};
pub use limits::{CLIENT_LIMIT_BYTES, REPLICA_LAG_WARN_SECONDS};
pub use report::{exit_code, render_json, render_text, ReportFormat};
pub use session::spawn_session_checks;
