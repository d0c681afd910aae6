//! The `doctor` subcommand: its own connection (found as the service finds it), the
//! probes only a connection of its own may make for real (SUBSCRIBE, CLIENT TRACKING,
//! both undone), then every check.

use super::checks::run_checks;
use super::helpers::reason;
use super::report::{exit_code, render_json, render_text, ReportFormat};
use super::rights::{Can, Mode, Probes};
use crate::finding::{Finding, Report};
use crate::flags;
use crate::redis::codes;
use crate::redis::reply::query;
use crate::redis::RedisTarget;
use redis::{ErrorKind, RedisError};
use std::time::{Duration, Instant};

/// Connects as the service does and runs every check. Never fails: a connection that
/// cannot be made is the `connection` finding.
pub async fn check(target: &RedisTarget, documents: &flags::Options) -> Report {
    check_with_timeout(target, documents, Duration::from_secs(5)).await
}

/// [`check`] with a limit for connecting and for each reply.
pub async fn check_with_timeout(
    target: &RedisTarget,
    documents: &flags::Options,
    timeout: Duration,
) -> Report {
    let started = Instant::now();
    let (push_tx, _pushes) = tokio::sync::mpsc::unbounded_channel();
    let connected =
        crate::redis::topology::connect_to_key(target, &target.key, timeout, Some(push_tx));
    let mut con = match tokio::time::timeout(timeout, connected).await {
        Ok(Ok((con, _))) => con,
        Ok(Err(e)) => {
            let error = format!("{e}{}", target.connect_hint(&e, timeout));
            return vec![connection_failed(target, &error, Some(&e))];
        }
        Err(_) => {
            let error = format!("no answer within {timeout:?}");
            return vec![connection_failed(target, &error, None)];
        }
    };
    let mut report = vec![Finding::ok(
        "connection",
        format!(
            "connected to {target} in {} ms",
            started.elapsed().as_millis()
        ),
    )];
    // This connection is the doctor's own: probe for real what the service will do on
    // its connection, SUBSCRIBE to the key's channel and CLIENT TRACKING, and undo both.
    let channel = target.keyspace_channel();
    let subscribe = match con.subscribe(&channel).await {
        Ok(()) => {
            let _ = con.unsubscribe(&channel).await;
            None
        }
        Err(e) => Some(e),
    };
    let tracking = match query(
        &mut con,
        &["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", &target.key],
    )
    .await
    {
        Ok(_) => {
            let _ = query(&mut con, &["CLIENT", "TRACKING", "OFF"]).await;
            Can::Yes
        }
        Err(e) if matches!(e.kind(), ErrorKind::Server(_)) || e.code().is_some() => {
            Can::No(reason(&e))
        }
        Err(e) => Can::Unknown(format!("CLIENT TRACKING: {}", reason(&e))),
    };
    let probes = Probes {
        mode: Mode::Cli,
        subscribe,
        tracking: Some(tracking),
    };
    report.extend(run_checks(&mut con, target, documents, probes).await);
    report
}

/// The `connection` finding for a connect that failed with `cause` (None: timed out);
/// the fix follows the error's kind.
pub(super) fn connection_failed(
    target: &RedisTarget,
    error: &str,
    cause: Option<&RedisError>,
) -> Finding {
    let fix = if cause.is_some_and(codes::is_resp3_unsupported) {
        "the service needs Redis 6.0+ (RESP3): upgrade Redis".to_string()
    } else if cause.is_some_and(codes::is_auth_failure) {
        "check the user name and password in --redis-uri (redis://USER:PASSWORD@host:port/db?key=NAME)"
            .to_string()
    } else {
        "check host, port and scheme in --redis-uri (rediss:// when Redis expects TLS), and that this host may reach Redis"
            .to_string()
    };
    Finding::fail(
        "connection",
        format!("cannot connect to {target}: {error}"),
        fix,
    )
}

/// The `doctor` subcommand on a built target: prints the report, returns the exit code.
pub fn run_cli(
    target: &RedisTarget,
    documents: &flags::Options,
    timeout: Duration,
    format: ReportFormat,
) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("flagd-redis-sync doctor: cannot start the async runtime: {e}");
            return 2;
        }
    };
    let report = runtime.block_on(check_with_timeout(target, documents, timeout));
    match format {
        ReportFormat::Text => print!("{}", render_text(target, &report)),
        ReportFormat::Json => println!("{}", render_json(target, &report)),
    }
    exit_code(&report)
}
