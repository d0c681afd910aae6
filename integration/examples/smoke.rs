//! `make smoke`: the whole path once, end to end, in a few seconds.
//!
//! A throw-away redis-server seeded with `docs/examples/flags.json`, the real
//! `flagd-redis-sync` binary, and a real `flagd.sync.v1` client: the initial document
//! arrives, a change stored in Redis arrives, and how long each change took to reach the
//! client is printed; last, `put --wait` stores one more change and prints how long it
//! took until every client had it. Exits 0 when everything worked, 1 otherwise.

use anyhow::{ensure, Context, Result};
use integration::{RedisServer, Service};
use serde_json::Value;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const KEY: &str = "flags";
const FLAG: &str = "welcome-banner";
/// Changes to time; the median says more than a single sample.
const ROUNDS: usize = 10;

fn main() -> ExitCode {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(smoke()) {
        Ok(()) => {
            println!("smoke: OK");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("smoke: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn smoke() -> Result<()> {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/flags.json");
    let text = std::fs::read_to_string(&example)
        .with_context(|| format!("reading {}", example.display()))?;
    let mut doc: Value = serde_json::from_str(&text).context("parsing the example document")?;
    let want_flags = flag_names(&doc);

    let redis = RedisServer::start().context("starting redis-server")?;
    redis.set(KEY, &text)?;
    println!(
        "smoke: redis-server on 127.0.0.1:{}, key {KEY:?} seeded with docs/examples/flags.json",
        redis.port
    );

    // Build (or find) the binary first, so the start-up time below is the service's own.
    let bin = integration::binary();
    ensure!(bin.exists(), "no binary at {}", bin.display());
    let started = Instant::now();
    let svc = Service::start(&redis.uri(KEY), &[]).await?;
    let result = exercise(&redis, &svc, &mut doc, &want_flags, started).await;
    if result.is_err() {
        eprintln!("--- flagd-redis-sync log ---\n{}", svc.logs());
    }
    result
}

async fn exercise(
    redis: &RedisServer,
    svc: &Service,
    doc: &mut Value,
    want_flags: &[String],
    started: Instant,
) -> Result<()> {
    svc.wait_ready().await.context("waiting for /readyz")?;
    println!(
        "smoke: service ready in {} (gRPC 127.0.0.1:{}, management 127.0.0.1:{})",
        ms(started.elapsed()),
        svc.grpc_port,
        svc.mgmt_port
    );

    let connect = Instant::now();
    let mut stream = svc.stream("").await?;
    let first = stream.next_json().await.context("initial document")?;
    ensure!(
        flag_names(&first) == want_flags,
        "the initial document has flags {:?}, expected {:?}",
        flag_names(&first),
        want_flags
    );
    println!(
        "smoke: initial document received {} after SyncFlags: {} flags",
        ms(connect.elapsed()),
        want_flags.len()
    );

    let mut latencies = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let variant = if round % 2 == 0 { "sale" } else { "default" };
        doc["flags"][FLAG]["defaultVariant"] = Value::from(variant);
        let want = doc["flags"][FLAG]["variants"][variant].clone();
        let payload = serde_json::to_string(doc)?;
        let sent = Instant::now();
        redis.set(KEY, &payload)?;
        let got = stream.next_json().await.context("waiting for a change")?;
        let latency = sent.elapsed();
        let got_variant = &got["flags"][FLAG]["defaultVariant"];
        ensure!(
            got_variant == variant,
            "round {round}: expected {FLAG}.defaultVariant {variant:?}, got {got_variant}"
        );
        ensure!(
            got["flags"][FLAG]["variants"][variant] == want,
            "round {round}: the variants of {FLAG} changed on the way"
        );
        latencies.push(latency);
    }
    latencies.sort();
    println!(
        "smoke: {ROUNDS} changes (SET {FLAG}.defaultVariant) each reached the stream: \
         min {}, median {}, max {}",
        ms(latencies[0]),
        ms(latencies[ROUNDS / 2]),
        ms(latencies[ROUNDS - 1])
    );

    let (code, body) = svc.http_get("/readyz").await?;
    ensure!(code == 200, "/readyz answered {code}: {body}");
    let (code, body) = svc.http_get("/metrics").await?;
    ensure!(
        code == 200 && body.contains("flagd_redis_sync"),
        "/metrics answered {code} without flagd_redis_sync metrics"
    );
    println!("smoke: /readyz 200, /metrics 200");
    put_and_wait(redis, svc, doc).await
}

/// Stores one more change with `put --wait`, as a CI pipeline would, and prints how long
/// it took until every client had it.
async fn put_and_wait(redis: &RedisServer, svc: &Service, doc: &mut Value) -> Result<()> {
    doc["flags"][FLAG]["defaultVariant"] = Value::from("sale");
    doc["flags"][FLAG]["metadata"] = serde_json::json!({"smoke": "put --wait"});
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("flags.json");
    std::fs::write(&file, serde_json::to_string_pretty(doc)?)?;
    let service = format!("http://127.0.0.1:{}", svc.mgmt_port);
    let mut put = tokio::process::Command::new(integration::binary());
    put.args([
        "put",
        "--redis-uri",
        &redis.uri(KEY),
        "--wait",
        "--service",
        &service,
    ])
    .arg(&file)
    .kill_on_drop(true);
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(60), put.output())
        .await
        .context("put --wait did not end within 60 s")??;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "put --wait failed: {text}");
    let converged = text
        .lines()
        .find(|l| l.starts_with("every client has it"))
        .with_context(|| format!("put --wait printed no convergence line: {text}"))?;
    println!(
        "smoke: put --wait: {converged} (the whole command: {})",
        ms(started.elapsed())
    );
    Ok(())
}

fn flag_names(doc: &Value) -> Vec<String> {
    let mut names: Vec<String> = doc["flags"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    names.sort();
    names
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
