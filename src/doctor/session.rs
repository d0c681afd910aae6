//! The checks inside the service: after every (re)connect, on the session's connection,
//! in the background; findings go to `/readyz`, a gauge, and the log (each once).

use super::checks::run_checks;
use super::rights::{Mode, Probes};
use crate::finding::{Finding, Level};
use crate::flags;
use crate::redis::RedisTarget;
use crate::status::Status;
use crate::telemetry::Metrics;
use opentelemetry::KeyValue;
use redis::aio::MultiplexedConnection;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, error, info, warn, Instrument};

/// Runs the checks in the background on the session's connection (it is multiplexed:
/// the watcher's reads go on meanwhile). Findings go to the status (`/readyz`), the
/// `flagd_redis_sync.doctor.findings` gauge, and the log: each distinct warning or
/// failure once per process. The task ends with the returned handle (the session).
pub fn spawn_session_checks(
    con: &MultiplexedConnection,
    target: &RedisTarget,
    documents: flags::Options,
    status: &Arc<Status>,
    metrics: &Metrics,
) -> AbortOnDropHandle<()> {
    let mut con = con.clone();
    let target = target.clone();
    let status = status.clone();
    let metrics = metrics.clone();
    let task = async move {
        let probes = Probes {
            mode: Mode::Service,
            subscribe: None,
            tracking: None,
        };
        let report = run_checks(&mut con, &target, &documents, probes).await;
        log_once(&report);
        record(&metrics, &report);
        status.update(|s| s.findings = report);
    };
    AbortOnDropHandle::new(tokio::spawn(task.in_current_span()))
}

/// (check, level) pairs already logged by this process.
pub(super) static LOGGED: Mutex<BTreeSet<(&'static str, Level)>> = Mutex::new(BTreeSet::new());

pub(super) fn log_once(report: &[Finding]) {
    let mut logged = LOGGED.lock().unwrap_or_else(|e| e.into_inner());
    for f in report {
        if f.level == Level::Ok || !logged.insert((f.check, f.level)) {
            debug!(check = f.check, level = f.level.as_str(), message = %f.message, "doctor");
            continue;
        }
        let fix = f.fix.as_deref().unwrap_or("");
        match f.level {
            Level::Fail => {
                error!(check = f.check, fix, "redis doctor: {}", f.message)
            }
            Level::Warn => warn!(check = f.check, fix, "redis doctor: {}", f.message),
            Level::Skipped => info!(check = f.check, "redis doctor: {}", f.message),
            Level::Ok => {}
        }
    }
}

/// One gauge series per check and level: 1 for the level found, 0 for the others, so
/// `flagd_redis_sync_doctor_findings{level="warn"} == 1` is an alert and clears itself.
pub(super) fn record(metrics: &Metrics, report: &[Finding]) {
    for f in report {
        for level in Level::ALL {
            metrics.doctor_findings.record(
                i64::from(f.level == level),
                &[
                    KeyValue::new("check", f.check),
                    KeyValue::new("level", level.as_str()),
                ],
            );
        }
    }
}
