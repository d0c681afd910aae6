//! Operator tools, subcommands of the same binary so a scratch image carries them:
//! `put` (validate, then store a document), `watch` (a sync client that prints what it
//! receives), `healthcheck` (probe `/readyz`), and the generated configuration reference.

pub mod confdoc;
pub mod fleet_client;
pub mod fleet_watch;
pub mod healthcheck;
pub mod put;
pub mod restore;
mod store;
pub mod wait;
pub mod watch;

use std::process::ExitCode;

/// Exit code for a command line that cannot work (sysexits' EX_USAGE), as for the service.
pub const EX_USAGE: u8 = 64;

/// Runs a one-shot tool on a small single-threaded runtime.
fn block_on<F: std::future::Future<Output = ExitCode>>(tool: &str, f: F) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(f),
        Err(e) => {
            eprintln!("flagd-redis-sync {tool}: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// UTC time as RFC 3339 with milliseconds (`2024-05-01T12:00:00.123Z`), without a
/// calendar crate: days since the epoch to a civil date (Howard Hinnant's algorithm).
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::rfc3339(UNIX_EPOCH + Duration::from_millis(951_782_400_123)),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            super::rfc3339(UNIX_EPOCH + Duration::from_secs(1_735_689_599)),
            "2024-12-31T23:59:59.000Z"
        );
    }
}
