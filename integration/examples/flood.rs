//! A full-scale flood of silent TCP connections to the gRPC port, measured once (issue
//! 17; not part of `make test`). Starts its own `redis-server` and the service
//! (`FLAGD_REDIS_SYNC_BIN`, build it with `cargo build --release --bin flagd-redis-sync`),
//! then two worker processes (copies of this one: a process may hold only as many
//! sockets as its open-files limit, raised here to the hard limit) open silent
//! connections as fast as they can and wait for the service to close each.
//!
//! Reported: the service's connection budget (`--max-connections` default), how many it
//! held at once (its open descriptors, sampled), what the connections over the budget got
//! (closed at once) and how long a silent one within it was held (the first-request
//! limit), `/healthz` latency before and during the flood, the service's RSS and CPU
//! while flooded, and the load average.
//!
//! Usage: `FLAGD_REDIS_SYNC_BIN=target/release/flagd-redis-sync cargo run --release -p
//! integration --example flood -- [CONNECTIONS_PER_WORKER]` (default 15,000 each).
//! `flood worker PORT COUNT SOURCE_INDEX` is internal.

use anyhow::{bail, Context, Result};
use integration::{RedisServer, Service};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Connects in flight at once per worker.
const CONNECTS_IN_FLIGHT: usize = 512;
/// How long a worker waits for the service to close its connections.
const WORKER_DEADLINE: Duration = Duration::from_secs(60);

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.first().map(String::as_str) == Some("worker") {
        let port: u16 = args.get(1).context("port")?.parse()?;
        let count: usize = args.get(2).context("count")?.parse()?;
        let source: u8 = args.get(3).context("source index")?.parse()?;
        let summary = rt.block_on(worker(port, count, source))?;
        println!("{summary}");
        return Ok(());
    }
    let per_worker: usize = match args.first() {
        Some(n) => n.parse().context("CONNECTIONS_PER_WORKER")?,
        None => 15_000,
    };
    rt.block_on(coordinator(per_worker))
}

/// Opens `count` silent connections (from 127.0.0.`2+source`, so two workers do not
/// share one source address's ephemeral ports), never writes, and times until the
/// service closes each. Prints a JSON summary.
async fn worker(port: u16, count: usize, source: u8) -> Result<Value> {
    // As the service does for itself: the soft limit raised to the hard one.
    let nofile = flagd_redis_sync::conn::raise_open_files_limit();
    let src = std::net::Ipv4Addr::new(127, 0, 0, 2 + source);
    let dst = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let gate = Arc::new(tokio::sync::Semaphore::new(CONNECTS_IN_FLIGHT));
    let open_now = Arc::new(AtomicUsize::new(0));
    let max_open = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for _ in 0..count {
        let permit = gate.clone().acquire_owned().await?;
        let (open_now, max_open) = (open_now.clone(), max_open.clone());
        tasks.push(tokio::spawn(async move {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind((src, 0).into())?;
            let connected = socket.connect(dst).await;
            drop(permit);
            let mut tcp = connected?;
            let at = Instant::now();
            let n = open_now.fetch_add(1, Ordering::Relaxed) + 1;
            max_open.fetch_max(n, Ordering::Relaxed);
            // Read (the server's SETTINGS frame comes first) until EOF or a reset: the
            // service closed it. Nothing is ever written.
            let mut buf = [0u8; 1024];
            let _ = tokio::time::timeout(WORKER_DEADLINE, async {
                while let Ok(n) = tcp.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
            open_now.fetch_sub(1, Ordering::Relaxed);
            Ok::<(Duration, Duration), std::io::Error>((at - start, at.elapsed()))
        }));
    }
    let opened_in = start.elapsed();
    let mut held = Vec::new();
    let mut errors: std::collections::BTreeMap<String, usize> = Default::default();
    let mut last_connect = Duration::ZERO;
    for t in tasks {
        match t.await? {
            Ok((connected_at, h)) => {
                last_connect = last_connect.max(connected_at);
                held.push(h);
            }
            Err(e) => *errors.entry(format!("{:?}", e.kind())).or_default() += 1,
        }
    }
    held.sort();
    let at_once = held.iter().filter(|h| **h < Duration::from_secs(1)).count();
    // Closed by the service after the first-request limit (10 s from its accept, which
    // may come later than the client's connect while the accept queue is long).
    let limit = held
        .iter()
        .filter(|h| **h >= Duration::from_secs(1) && **h < WORKER_DEADLINE)
        .copied()
        .collect::<Vec<_>>();
    // Never closed: the kernel completed the handshake but the service never saw the
    // connection (accept queue full: the final ACK was dropped, SYN cookies).
    let never = held.iter().filter(|h| **h >= WORKER_DEADLINE).count();
    let secs = |d: Option<&Duration>| d.map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0);
    Ok(json!({
        "nofile": nofile,
        "attempted": count,
        "connected": held.len(),
        "connect_errors": errors,
        "connects_issued_in_s": opened_in.as_secs_f64(),
        "last_connect_at_s": last_connect.as_secs_f64(),
        "max_open_at_once": max_open.load(Ordering::Relaxed),
        "closed_within_1s": at_once,
        "held_1s_or_more": limit.len(),
        "never_closed": never,
        "held_min_s": secs(limit.first()),
        "held_median_s": secs(limit.get(limit.len() / 2)),
        "held_p99_s": secs(limit.get(limit.len() * 99 / 100)),
        "held_max_s": secs(limit.last()),
    }))
}

/// One `GET /healthz` on a new connection: its latency, or None if it failed or took
/// over 5 s.
async fn healthz(port: u16) -> Option<Duration> {
    tokio::time::timeout(Duration::from_secs(5), healthz_once(port))
        .await
        .ok()
        .flatten()
}

async fn healthz_once(port: u16) -> Option<Duration> {
    let start = Instant::now();
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: flood\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut body = Vec::new();
    tcp.read_to_end(&mut body).await.ok()?;
    body.starts_with(b"HTTP/1.1 200").then(|| start.elapsed())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// (user + system CPU ticks, RSS KiB, open descriptors) of a process.
fn sample(pid: u32) -> Option<(u64, u64, usize)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((ticks, rss, fds))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

async fn coordinator(per_worker: usize) -> Result<()> {
    if std::env::var_os("FLAGD_REDIS_SYNC_BIN").is_none() {
        bail!("set FLAGD_REDIS_SYNC_BIN to the release binary (cargo build --release --bin flagd-redis-sync)");
    }
    let redis = RedisServer::start()?;
    redis.set("flags", &integration::doc("f", "flood"))?;
    let svc = Service::start(&redis.uri("flags"), &[]).await?;
    let pid = svc.pid();
    let budget = || {
        svc.logs()
            .lines()
            .find(|l| l.contains("gRPC connection budget"))
            .unwrap_or("")
            .to_string()
    };
    eprintln!("service pid {pid}");
    // /proc/PID/stat counts CPU time in USER_HZ ticks, 100 a second on Linux (fixed ABI).
    let hz = 100.0;

    let mut before = Vec::new();
    for _ in 0..200 {
        before.extend(healthz(svc.mgmt_port).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    before.sort();
    let (ticks0, rss0, fds0) = sample(pid).context("sampling the service")?;
    let load_before = loadavg();

    let exe = std::env::current_exe()?;
    let started = Instant::now();
    let workers: Vec<_> = (0..2u8)
        .map(|i| {
            tokio::process::Command::new(&exe)
                .args([
                    "worker",
                    &svc.grpc_port.to_string(),
                    &per_worker.to_string(),
                ])
                .arg(i.to_string())
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
        })
        .collect::<std::io::Result<_>>()?;
    let waits = tokio::spawn(async move {
        let mut out = Vec::new();
        for w in workers {
            out.push(w.wait_with_output().await);
        }
        out
    });

    // While the workers run: /healthz every 20 ms, the service sampled every 250 ms.
    let mut during = Vec::new();
    let mut failed = 0usize;
    let (mut max_fds, mut max_rss, mut last) = (fds0, rss0, (ticks0, Instant::now()));
    let mut cpu_peak = 0f64;
    let mut next_sample = Instant::now();
    let mut load_during = loadavg();
    while !waits.is_finished() {
        match healthz(svc.mgmt_port).await {
            Some(d) => during.push(d),
            None => failed += 1,
        }
        if Instant::now() >= next_sample {
            if let Some((t, rss, fds)) = sample(pid) {
                max_fds = max_fds.max(fds);
                max_rss = max_rss.max(rss);
                let dt = last.1.elapsed().as_secs_f64();
                if dt > 0.0 {
                    cpu_peak = cpu_peak.max((t - last.0) as f64 / hz / dt * 100.0);
                }
                last = (t, Instant::now());
            }
            load_during = loadavg();
            next_sample += Duration::from_millis(250);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let flood_s = started.elapsed().as_secs_f64();
    let (ticks1, rss1, fds1) = sample(pid).context("sampling the service")?;
    during.sort();
    let mut reports = Vec::new();
    for out in waits.await? {
        let out = out?;
        let text = String::from_utf8_lossy(&out.stdout);
        reports.push(serde_json::from_str::<Value>(text.trim()).unwrap_or(json!(text)));
    }
    let metrics = integration::http_get(svc.mgmt_port, "/metrics").await?.1;
    let refused: Vec<&str> = metrics
        .lines()
        .filter(|l| l.contains("refused") && !l.starts_with('#'))
        .collect();
    let logs = svc.logs();
    let first_request_closes = logs
        .lines()
        .filter(|l| l.contains("no complete request within"))
        .count();
    let limit_lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("connection limit reached"))
        .collect();
    let refused_logged: u64 = limit_lines
        .iter()
        .filter_map(|l| {
            l.split("refused=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    let result = json!({
        "log": {
            "closed_for_no_request": first_request_closes,
            "limit_warn_lines": limit_lines.len(),
            "limit_refused_counted": refused_logged,
        },
        "budget_log_line": budget(),
        "per_worker": per_worker,
        "workers": reports,
        "service": {
            "fds_before": fds0, "fds_max_sampled": max_fds, "fds_after": fds1,
            "rss_kib_before": rss0, "rss_kib_max_sampled": max_rss, "rss_kib_after": rss1,
            "cpu_percent_avg_during": (ticks1 - ticks0) as f64 / hz / flood_s * 100.0,
            "cpu_percent_peak_250ms": cpu_peak,
            "refused_metric": refused,
        },
        "healthz_ms": {
            "before": {"n": before.len(), "p50": percentile(&before, 0.5), "p99": percentile(&before, 0.99), "max": percentile(&before, 1.0)},
            "during": {"n": during.len(), "failed": failed, "p50": percentile(&during, 0.5), "p99": percentile(&during, 0.99), "max": percentile(&during, 1.0)},
        },
        "flood_seconds": flood_s,
        "loadavg": {"before": load_before, "during_last": load_during, "after": loadavg()},
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}
