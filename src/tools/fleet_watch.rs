//! `watch --fleet URL`: each service's fleet view, every second: the digest it serves,
//! its streams by state and the streams not current (what `put --wait` waits for).
//!
//! Exit codes: 0 after `--count` rounds; 64 a bad `--fleet` URL. A service that does not
//! answer is reported on its line and asked again next round.

use super::fleet_client::FleetClient;
use super::wait::{behind_lines, resolve};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

/// Time between rounds.
const EVERY: Duration = Duration::from_secs(1);

pub async fn run(urls: &[String], json: bool, count: Option<u64>) -> ExitCode {
    let endpoints = match resolve(urls).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("flagd-redis-sync watch: {e}");
            return ExitCode::from(super::EX_USAGE);
        }
    };
    let client = FleetClient::default();
    let mut round = 0;
    loop {
        let now = super::rfc3339(SystemTime::now());
        for at in &endpoints {
            match client.fleet(at, "behind=1&limit=1000").await {
                Ok(body) if json => println!(
                    "{}",
                    serde_json::json!({"time": now, "service": at.0, "fleet": body})
                ),
                Ok(body) => {
                    let t = body.totals;
                    println!(
                        "{now} {at} digest={} streams={} current={} behind={} stalled={} oldest_behind={:.1}s",
                        body.digest.as_deref().map_or("-", |d| &d[..12.min(d.len())]),
                        t.streams,
                        t.current,
                        t.behind,
                        t.stalled,
                        body.oldest_behind_seconds
                    );
                    for line in behind_lines(&body) {
                        println!("  {line}");
                    }
                }
                Err(e) => println!("{now} {at} unreachable: {e}"),
            }
        }
        round += 1;
        if count.is_some_and(|n| round >= n) {
            return ExitCode::SUCCESS;
        }
        tokio::time::sleep(EVERY).await;
    }
}
