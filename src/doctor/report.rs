//! How a report is shown: one line per finding or one JSON object, and the exit code.

use crate::finding::{worst, Finding, Level};
use crate::redis::RedisTarget;
use serde::Serialize;

/// Output of `doctor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}

/// 2 if anything fails, 1 if anything warns, else 0. Skipped counts as OK.
pub fn exit_code(report: &[Finding]) -> u8 {
    match worst(report) {
        Level::Fail => 2,
        Level::Warn => 1,
        Level::Ok | Level::Skipped => 0,
    }
}

/// One line per finding, then a summary line.
pub fn render_text(target: &RedisTarget, report: &[Finding]) -> String {
    let mut out = format!("flagd-redis-sync doctor: {target}\n");
    for f in report {
        let level = f.level.as_str().to_uppercase();
        out.push_str(&format!("{level:<8}{:<19}{}", f.check, f.message));
        if let Some(fix) = &f.fix {
            out.push_str(&format!(" | fix: {fix}"));
        }
        out.push('\n');
    }
    let count = |l: Level| report.iter().filter(|f| f.level == l).count();
    out.push_str(&format!(
        "{} ok, {} warn, {} fail, {} not checked: exit {}\n",
        count(Level::Ok),
        count(Level::Warn),
        count(Level::Fail),
        count(Level::Skipped),
        exit_code(report)
    ));
    out
}

/// One JSON object: target (no password), overall level, exit code, findings.
pub fn render_json(target: &RedisTarget, report: &[Finding]) -> String {
    #[derive(Serialize)]
    struct Out<'a> {
        target: String,
        key: &'a str,
        level: Level,
        exit_code: u8,
        findings: &'a [Finding],
    }
    serde_json::to_string_pretty(&Out {
        target: target.to_string(),
        key: &target.key,
        level: worst(report),
        exit_code: exit_code(report),
        findings: report,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(level: Level) -> Finding {
        Finding::new("x", level, "m")
    }

    #[test]
    fn exit_codes_follow_the_worst_level_and_skipped_counts_as_ok() {
        assert_eq!(exit_code(&[]), 0);
        assert_eq!(exit_code(&[f(Level::Ok), f(Level::Skipped)]), 0);
        assert_eq!(exit_code(&[f(Level::Ok), f(Level::Warn)]), 1);
        assert_eq!(exit_code(&[f(Level::Fail), f(Level::Warn)]), 2);
    }

    #[test]
    fn json_report_never_shows_the_password() {
        let t = RedisTarget::parse("redis://u:hunter2@h/0?key=f").unwrap();
        let report = vec![Finding::warn("eviction", "m", "fix")];
        let json = render_json(&t, &report);
        assert!(!json.contains("hunter2"), "{json}");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["exit_code"], 1);
        assert_eq!(v["findings"][0]["level"], "warn");
        assert!(!render_text(&t, &report).contains("hunter2"));
    }
}
