//! Document shapes (issue 14): the padded documents beside realistic ones (generated:
//! 25 / 250 / 2,500 flags, `integration::realistic`), each timed SET -> client at N = 1
//! against the **GET floor**: a server that subscribes to the key's keyspace events
//! itself, GETs the value and broadcasts it as a pre-encoded `SyncFlagsResponse` (the
//! least any watcher of a key can do: no validation, no dedup). One flag changes per
//! write (the marker flag, the first flag: the most the service has to hash again). The
//! two run side by side on one redis-server, each watching its own key, and each round
//! changes one key and then the other (who goes first alternates), so that both are
//! timed under the same conditions: timed one after the other, the floor's own 1 KB p50
//! was 373 µs in one run and 595 µs in the next, more than the difference measured.
//! Also the service's RSS with each document loaded (idle) and its peak (VmHWM) after
//! the changes; the validations that writes changing nothing cost (the same bytes
//! again, the same flags in another order: none expected, read from
//! `flagd_redis_sync_validations_total`); and the 100 KB realistic document at N = 1,000
//! (the last client's arrival, service and GET floor in the same run).

use super::*;
use integration::realistic;

/// A document shape: its name and the document carrying a marker.
struct Shape {
    name: &'static str,
    make: fn(u32) -> String,
}

const SHAPES: &[Shape] = &[
    Shape {
        name: "1 KB padded",
        make: |m| make_doc(m, KB),
    },
    Shape {
        name: "realistic, 25 flags",
        make: |m| realistic::document(25, m),
    },
    Shape {
        name: "realistic, 250 flags",
        make: |m| realistic::document(250, m),
    },
    Shape {
        name: "realistic, 2,500 flags",
        make: |m| realistic::document(2500, m),
    },
    Shape {
        name: "1 MB padded",
        make: |m| make_doc(m, KB * KB),
    },
];

/// The key the GET floor watches when it is timed beside the service.
const FLOOR_KEY: &str = "flags-get-floor";
/// Clients in the wide comparison (the 100 KB realistic document).
const WIDE_N: usize = 1000;
/// Changes timed in the wide comparison (at most).
const WIDE_ROUNDS: usize = 20;
/// Writes that change nothing, of each kind, after the timed changes.
const UNCHANGED_WRITES: usize = 5;

/// What the timed phases write with: the connection, the shape and the marker sequence.
struct Writes<'a> {
    writer: redis::aio::MultiplexedConnection,
    shape: &'a Shape,
    marker: &'a mut Marker,
}

/// Every shape (or those whose name contains `only`), `rounds` changes each; then the
/// wide comparison (when the 250-flag shape is among them). Rows of the wide comparison
/// carry `"n"`.
pub async fn run(
    marker: &mut Marker,
    tmp: &Path,
    rounds: usize,
    only: Option<&str>,
) -> Result<Value> {
    let mut rows = Vec::new();
    let chosen: Vec<&Shape> = SHAPES
        .iter()
        .filter(|s| only.is_none_or(|o| s.name.contains(o)))
        .collect();
    for shape in &chosen {
        rows.push(one(shape, marker, tmp, rounds).await?);
    }
    if let Some(shape) = chosen.iter().find(|s| s.name == "realistic, 250 flags") {
        rows.push(wide(shape, marker, tmp, rounds.min(WIDE_ROUNDS)).await?);
    }
    Ok(Value::Array(rows))
}

async fn one(shape: &Shape, marker: &mut Marker, tmp: &Path, rounds: usize) -> Result<Value> {
    let redis = RedisServer::start_with(&["--notify-keyspace-events", "Kg$xe"])?;
    let mut writer = redis.client().get_multiplexed_async_connection().await?;
    let first = marker.next();
    let doc = (shape.make)(first);
    let bytes = doc.len();
    let _: () = writer.set(KEY, &doc).await?;
    let _: () = writer.set(FLOOR_KEY, &doc).await?;

    eprintln!(
        "bench: shapes: {}: service and GET floor, one change each in turn",
        shape.name
    );
    let (svc, _) = start_service(&redis, &[]).await?;
    let mut fleet = Fleet::new(svc.grpc_port);
    fleet.grow(1, first).await?;
    // With the anonymous part: the service's own memory (the rest is the binary's code
    // and the shared libraries, mapped from the page cache).
    let (idle_rss, idle_anon) = settled_rss_kb(svc.pid()).await;
    let floor = GetFloor::start(redis.port, tmp, FLOOR_KEY).await?;
    let mut floor_fleet = Fleet::new(floor.port);
    floor_fleet.grow(1, first).await?;
    let mut w = Writes {
        writer,
        shape,
        marker,
    };
    let timings = timed(
        &mut [(&mut fleet, KEY), (&mut floor_fleet, FLOOR_KEY)],
        &mut w,
        rounds,
        1,
    )
    .await?;
    let (service, get_floor) = (timings[0].0, timings[1].0);
    floor_fleet.close().await;
    floor.proc.stop().await;
    let peak_rss = proc_status_kib(svc.pid(), "VmHWM:").unwrap_or(0);
    let unchanged = unchanged(&svc, &mut w).await?;
    fleet.close().await;
    drop(svc);

    Ok(json!({
        "shape": shape.name,
        "bytes": bytes,
        "rounds": rounds,
        "service": service.json(),
        "get_floor": get_floor.json(),
        "p50_over_floor": ratio(service.p50, get_floor.p50),
        "p99_over_floor": ratio(service.p99, get_floor.p99),
        "service_idle_rss_kb": idle_rss,
        "service_idle_anon_kb": idle_anon,
        "service_peak_rss_kb": peak_rss,
        "unchanged_writes": unchanged,
    }))
}

/// The 100 KB realistic document at N = 1,000: per change the arrival at the last of the
/// clients, service and GET floor in the same run.
async fn wide(shape: &Shape, marker: &mut Marker, tmp: &Path, rounds: usize) -> Result<Value> {
    let redis = RedisServer::start_with(&["--notify-keyspace-events", "Kg$xe"])?;
    let mut writer = redis.client().get_multiplexed_async_connection().await?;
    let first = marker.next();
    let _: () = writer.set(KEY, (shape.make)(first)).await?;

    eprintln!("bench: shapes: {} at N = {WIDE_N}: service", shape.name);
    let (svc, _) = start_service(&redis, &[]).await?;
    let mut fleet = Fleet::new(svc.grpc_port);
    fleet.grow(WIDE_N, first).await?;
    let mut w = Writes {
        writer,
        shape,
        marker,
    };
    let (_, service) = timed(&mut [(&mut fleet, KEY)], &mut w, rounds, WIDE_N).await?[0];
    fleet.close().await;
    drop(svc);

    eprintln!("bench: shapes: {} at N = {WIDE_N}: GET floor", shape.name);
    let (_, get_floor) = floor_timed(&redis, tmp, &mut w, rounds, WIDE_N).await?;

    Ok(json!({
        "shape": shape.name,
        "n": WIDE_N,
        "rounds": rounds,
        "service_last": service.json(),
        "get_floor_last": get_floor.json(),
        "p99_over_floor": ratio(service.p99, get_floor.p99),
    }))
}

/// The GET floor on `redis` with `n` clients: [`timed`] over `rounds` changes.
async fn floor_timed(
    redis: &RedisServer,
    tmp: &Path,
    w: &mut Writes<'_>,
    rounds: usize,
    n: usize,
) -> Result<(Stats, Stats)> {
    let floor = GetFloor::start(redis.port, tmp, KEY).await?;
    let mut fleet = Fleet::new(floor.port);
    let doc = (w.shape.make)(w.marker.next());
    let _: () = w.writer.set(KEY, doc).await?;
    fleet.grow_any(n).await?;
    let got = timed(&mut [(&mut fleet, KEY)], w, rounds, n).await?[0];
    fleet.close().await;
    floor.proc.stop().await;
    Ok(got)
}

/// Writes that change nothing: the current document's bytes again, then its flags in
/// another order, [`UNCHANGED_WRITES`] of each; waits until the service has read every
/// one (its duplicates counter), and returns the validations they cost (by scope).
async fn unchanged(svc: &Service, w: &mut Writes<'_>) -> Result<Value> {
    let doc = (w.shape.make)(w.marker.0);
    let reordered = reverse_flags(&doc)?;
    let metrics = || async {
        svc.http_get("/metrics")
            .await
            .map(|(_, b)| b)
            .unwrap_or_default()
    };
    let before = metrics().await;
    for text in [&doc, &reordered] {
        for _ in 0..UNCHANGED_WRITES {
            // One write at a time, each read and found unchanged before the next.
            let dups = |m: &str| metric_sum(m, "flagd_redis_sync_documents_duplicates_total");
            let want = dups(&metrics().await) + 1.0;
            let _: () = w.writer.set(KEY, text.as_str()).await?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while dups(&metrics().await) < want {
                ensure!(
                    Instant::now() < deadline,
                    "the service did not report an unchanged write as such within 10 s"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
    let after = metrics().await;
    let delta = |scope: &str| {
        let name = format!("flagd_redis_sync_validations_total{{scope=\"{scope}\"}}");
        metric_sum(&after, &name) - metric_sum(&before, &name)
    };
    Ok(json!({
        "writes": 2 * UNCHANGED_WRITES,
        "flags_validated": delta("flag"),
        "documents_validated": delta("document"),
        "flags_validated_total": metric_sum(&after, "flagd_redis_sync_validations_total{scope=\"flag\"}"),
    }))
}

/// The sum of the samples of `name` (a metric name, with or without labels).
fn metric_sum(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let rest = if name.contains('{') {
                rest
            } else if let Some(r) = rest.strip_prefix('{') {
                r.split_once('}')?.1
            } else {
                rest
            };
            rest.trim().parse::<f64>().ok()
        })
        .sum()
}

/// The same document with the flags in reverse order, each flag's bytes as they were.
fn reverse_flags(doc: &str) -> Result<String> {
    #[derive(serde::Deserialize)]
    struct Doc<'a> {
        #[serde(borrow)]
        flags: std::collections::BTreeMap<String, &'a serde_json::value::RawValue>,
    }
    let d: Doc = serde_json::from_str(doc)?;
    let members: Vec<String> = d
        .flags
        .iter()
        .rev()
        .map(|(k, v)| {
            format!(
                "{}:{}",
                serde_json::to_string(k).expect("a string"),
                v.get()
            )
        })
        .collect();
    Ok(format!("{{\"flags\":{{{}}}}}", members.join(",")))
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        (a / b * 100.0).round() / 100.0
    } else {
        0.0
    }
}

/// SET -> arrival at each of `n` clients, `rounds` times after two warm-up changes, for
/// each server (its clients and the key it watches): every arrival, and the last
/// client's per change. With several servers, each round changes each server's key in
/// turn (who goes first alternates), so that they are timed under the same conditions.
async fn timed(
    servers: &mut [(&mut Fleet, &str)],
    w: &mut Writes<'_>,
    rounds: usize,
    n: usize,
) -> Result<Vec<(Stats, Stats)>> {
    let mut all = vec![Vec::with_capacity(rounds * n); servers.len()];
    let mut last = vec![Vec::with_capacity(rounds); servers.len()];
    for i in 0..rounds + 2 {
        for k in 0..servers.len() {
            let s = (k + i) % servers.len();
            let (fleet, key) = &mut servers[s];
            let m = w.marker.next();
            let doc = (w.shape.make)(m);
            tokio::time::sleep(gap(n, doc.len())).await;
            let t0 = Instant::now();
            let _: () = w.writer.set(*key, doc).await?;
            let got = fleet.collect(m, n, t0).await?;
            if i >= 2 {
                last[s].push(got.iter().copied().fold(0.0, f64::max));
                all[s].extend(got);
            }
        }
    }
    Ok(all
        .iter()
        .zip(&last)
        .map(|(a, l)| (Stats::of(a), Stats::of(l)))
        .collect())
}

/// The GET floor server (this binary, `get-floor-server REDIS_PORT KEY`).
struct GetFloor {
    proc: Proc,
    port: u16,
}

impl GetFloor {
    async fn start(redis_port: u16, tmp: &Path, key: &str) -> Result<Self> {
        let port_arg = redis_port.to_string();
        let args = ["get-floor-server", port_arg.as_str(), key];
        // The GET floor reads no commands: its stdin is closed at once.
        let (proc, port, _, _) = spawn_floor(&args, tmp.join("get-floor.log")).await?;
        Ok(GetFloor { proc, port })
    }
}

/// The GET floor's process: keyspace event -> GET -> encode once -> broadcast.
pub async fn serve_get_floor(args: &[String]) -> Result<()> {
    use tokio::sync::broadcast;
    let redis_port: u16 = args
        .get(1)
        .context("get-floor-server REDIS_PORT KEY")?
        .parse()?;
    let key = args
        .get(2)
        .context("get-floor-server REDIS_PORT KEY")?
        .clone();
    let (mut con, mut pushes) = keyspace_subscriber(redis_port, &key).await?;
    let encode = |v: Vec<u8>| -> Result<floor::Msg> {
        let text = String::from_utf8(v)?;
        Ok(flagd_redis_sync::wire::encode_responses(&text, None).0)
    };
    let first: Option<Vec<u8>> = con.get(&key).await?;
    let (tx, _) = broadcast::channel(16);
    let floor = floor::Floor {
        tx: tx.clone(),
        current: Arc::new(std::sync::Mutex::new(encode(
            first.unwrap_or_else(|| b"{\"flags\":{}}".to_vec()),
        )?)),
    };
    let current = floor.current.clone();
    let port = floor::listen(floor).await?;
    println!("listening {port}");
    while let Some(p) = pushes.recv().await {
        if p.kind != redis::PushKind::Message {
            continue;
        }
        while pushes.try_recv().is_ok() {}
        let Some(v): Option<Vec<u8>> = con.get(&key).await? else {
            continue;
        };
        let m = encode(v)?;
        *current.lock().expect("floor lock") = m.clone();
        let _ = tx.send(m);
    }
    Ok(())
}

/// The markdown table of the shapes phase.
pub fn markdown(rows: &Value) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### Document shapes against the GET floor (N = 1, one flag changed per write)\n\n\
         GET floor: a server that subscribes to the key's keyspace events, GETs the value and \
         broadcasts it pre-encoded (no validation, no dedup), watching its own key on the same \
         redis-server; each round changes the service's key and the floor's in turn. The \
         changed flag is the first one. Strict validation on.\n\n\
         | document | bytes | service p50 | GET floor p50 | ratio p50 | service p99 | GET floor p99 | idle RSS (anonymous) | peak RSS | validations for 10 unchanged writes |\n\
         |---|---|---|---|---|---|---|---|---|---|"
    );
    let rows: Vec<&Value> = rows.as_array().into_iter().flatten().collect();
    for r in rows.iter().filter(|r| r["n"].is_null()) {
        let ms_of = |v: &Value| fmt_ms(v["p50_ms"].as_f64().unwrap_or(0.0) / 1e3);
        let p99_of = |v: &Value| fmt_ms(v["p99_ms"].as_f64().unwrap_or(0.0) / 1e3);
        let mb = |k: &str| format!("{:.1} MB", r[k].as_f64().unwrap_or(0.0) / 1024.0);
        let u = &r["unchanged_writes"];
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.2}x | {} | {} | {} ({}) | {} | {} flags, {} documents |",
            r["shape"].as_str().unwrap_or(""),
            r["bytes"],
            ms_of(&r["service"]),
            ms_of(&r["get_floor"]),
            r["p50_over_floor"].as_f64().unwrap_or(0.0),
            p99_of(&r["service"]),
            p99_of(&r["get_floor"]),
            mb("service_idle_rss_kb"),
            mb("service_idle_anon_kb"),
            mb("service_peak_rss_kb"),
            u["flags_validated"],
            u["documents_validated"],
        );
    }
    for r in rows.iter().filter(|r| !r["n"].is_null()) {
        let ms_of = |v: &Value, k: &str| fmt_ms(v[k].as_f64().unwrap_or(0.0) / 1e3);
        let _ = writeln!(
            s,
            "\n{} at N = {} ({} changes): last client p50 / p99 {} / {} (GET floor {} / {}): \
             p99 {:.2}x the GET floor.",
            r["shape"].as_str().unwrap_or(""),
            r["n"],
            r["rounds"],
            ms_of(&r["service_last"], "p50_ms"),
            ms_of(&r["service_last"], "p99_ms"),
            ms_of(&r["get_floor_last"], "p50_ms"),
            ms_of(&r["get_floor_last"], "p99_ms"),
            r["p99_over_floor"].as_f64().unwrap_or(0.0),
        );
    }
    s
}

/// Issue 14's targets, from the rows of [`run`], for the generated targets table:
/// (target, what was measured, met).
pub fn targets(rows: &Value) -> Vec<(String, String, bool)> {
    let rows: Vec<&Value> = rows.as_array().into_iter().flatten().collect();
    let narrow = |name: &str| rows.iter().find(|r| r["shape"] == name && r["n"].is_null());
    let p50 = |v: &Value| fmt_ms(v["p50_ms"].as_f64().unwrap_or(0.0) / 1e3);
    let mut t = Vec::new();
    for (name, within) in [
        ("1 KB padded", 1.1),
        ("realistic, 250 flags", 1.3),
        ("realistic, 2,500 flags", 1.5),
    ] {
        if let Some(r) = narrow(name) {
            let ratio = r["p50_over_floor"].as_f64().unwrap_or(f64::MAX);
            t.push((
                format!("{name}, N = 1: SET -> client p50 within {within}x of the GET floor"),
                format!(
                    "{ratio:.2}x ({} vs {})",
                    p50(&r["service"]),
                    p50(&r["get_floor"])
                ),
                ratio <= within,
            ));
        }
    }
    if let Some(r) = rows.iter().find(|r| !r["n"].is_null()) {
        let ratio = r["p99_over_floor"].as_f64().unwrap_or(f64::MAX);
        let p99 = |v: &Value| fmt_ms(v["p99_ms"].as_f64().unwrap_or(0.0) / 1e3);
        t.push((
            format!(
                "{}, N = {}: last-client p99 no worse than the GET floor",
                r["shape"].as_str().unwrap_or(""),
                r["n"]
            ),
            format!(
                "{ratio:.2}x ({} vs {})",
                p99(&r["service_last"]),
                p99(&r["get_floor_last"])
            ),
            ratio <= 1.0,
        ));
    }
    if let Some(r) = narrow("realistic, 2,500 flags") {
        let mb = |k: &str| r[k].as_f64().unwrap_or(f64::MAX) / 1024.0;
        t.push((
            "Idle RSS with the 1 MB realistic document loaded under 25 MB (peak reported)".into(),
            format!(
                "{:.1} MB idle ({:.1} MB of it anonymous, the rest the binary's code), {:.1} MB peak",
                mb("service_idle_rss_kb"),
                mb("service_idle_anon_kb"),
                mb("service_peak_rss_kb")
            ),
            mb("service_idle_rss_kb") < 25.0,
        ));
    }
    let unchanged: Vec<&Value> = rows
        .iter()
        .filter(|r| r["n"].is_null())
        .map(|r| &r["unchanged_writes"])
        .collect();
    if !unchanged.is_empty() {
        let validations: f64 = unchanged
            .iter()
            .map(|u| {
                u["flags_validated"].as_f64().unwrap_or(f64::MAX)
                    + u["documents_validated"].as_f64().unwrap_or(f64::MAX)
            })
            .sum();
        let writes: u64 = unchanged.iter().filter_map(|u| u["writes"].as_u64()).sum();
        t.push((
            "A write that changes nothing (same bytes, flags reordered) validates nothing".into(),
            format!("{validations} validations for {writes} such writes over every shape"),
            validations == 0.0,
        ));
    }
    t
}
