//! A finding: one check's result about the Redis behind the service (what the doctor
//! reports, `/readyz` lists and a gauge exports). Kept apart from the doctor so the
//! status and the management endpoints can hold findings without depending on it.

use serde::Serialize;

/// How bad a finding is. Ordered: `Ok < Skipped < Warn < Fail`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Ok,
    /// Could not check (refused, unavailable or not applicable); see the message.
    Skipped,
    Warn,
    Fail,
}

impl Level {
    pub const ALL: [Level; 4] = [Level::Ok, Level::Skipped, Level::Warn, Level::Fail];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Skipped => "skipped",
            Level::Warn => "warn",
            Level::Fail => "fail",
        }
    }
}

/// One check's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable id: `eviction`, `persistence`, `ttl`… (docs/doctor.md lists them).
    pub check: &'static str,
    pub level: Level,
    /// What was found, and why it matters.
    pub message: String,
    /// The setting or command to change, when something should change.
    pub fix: Option<String>,
}

impl Finding {
    pub fn new(check: &'static str, level: Level, message: impl Into<String>) -> Self {
        Finding {
            check,
            level,
            message: message.into(),
            fix: None,
        }
    }

    pub fn ok(check: &'static str, message: impl Into<String>) -> Self {
        Self::new(check, Level::Ok, message)
    }

    pub fn warn(check: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(check, Level::Warn, message).with_fix(fix)
    }

    pub fn fail(check: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(check, Level::Fail, message).with_fix(fix)
    }

    /// "could not check: REASON".
    pub fn skipped(check: &'static str, reason: impl std::fmt::Display) -> Self {
        Self::new(check, Level::Skipped, format!("could not check: {reason}"))
    }

    pub fn with_fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// Every finding, in a fixed order.
pub type Report = Vec<Finding>;

/// The worst level in a report (`Ok` for an empty one).
pub fn worst(report: &[Finding]) -> Level {
    report.iter().map(|f| f.level).max().unwrap_or(Level::Ok)
}
