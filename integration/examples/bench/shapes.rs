//! Document shapes (issue 14): the padded documents beside realistic ones (generated:
//! 25 / 250 / 2,500 flags, `integration::realistic`), each timed SET -> client at N = 1
//! against the **GET floor**: a server that subscribes to the key's keyspace events
//! itself, GETs the value and broadcasts it as a pre-encoded `SyncFlagsResponse` (the
//! least any watcher of a key can do: no validation, no dedup). One flag changes per
//! write (the marker flag). Also the service's RSS with each document loaded (idle) and
//! its peak (VmHWM) after the changes.

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

/// Every shape (or those whose name contains `only`), `rounds` changes each.
pub async fn run(
    marker: &mut Marker,
    tmp: &Path,
    rounds: usize,
    only: Option<&str>,
) -> Result<Value> {
    let mut rows = Vec::new();
    for shape in SHAPES
        .iter()
        .filter(|s| only.is_none_or(|o| s.name.contains(o)))
    {
        rows.push(one(shape, marker, tmp, rounds).await?);
    }
    Ok(Value::Array(rows))
}

async fn one(shape: &Shape, marker: &mut Marker, tmp: &Path, rounds: usize) -> Result<Value> {
    let redis = RedisServer::start_with(&["--notify-keyspace-events", "Kg$xe"])?;
    let mut writer = redis.client().get_multiplexed_async_connection().await?;
    let first = marker.next();
    let doc = (shape.make)(first);
    let bytes = doc.len();
    let _: () = writer.set(KEY, doc).await?;

    eprintln!("bench: shapes: {}: service", shape.name);
    let (svc, _) = start_service(&redis, &[]).await?;
    let mut fleet = Fleet::new(svc.grpc_port);
    fleet.grow(1, first).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = rss_kb(svc.pid());
    let service = timed(&mut fleet, &mut writer, shape, marker, rounds).await?;
    let peak_rss = status_kb(svc.pid(), "VmHWM:");
    fleet.close().await;
    drop(svc);

    eprintln!("bench: shapes: {}: GET floor", shape.name);
    let floor = GetFloor::start(redis.port, tmp).await?;
    let mut fleet = Fleet::new(floor.port);
    let current = marker.next();
    let _: () = writer.set(KEY, (shape.make)(current)).await?;
    fleet.grow_any(1).await?;
    let get_floor = timed(&mut fleet, &mut writer, shape, marker, rounds).await?;
    fleet.close().await;
    floor.proc.stop().await;

    Ok(json!({
        "shape": shape.name,
        "bytes": bytes,
        "rounds": rounds,
        "service": service.json(),
        "get_floor": get_floor.json(),
        "p50_over_floor": ratio(service.p50, get_floor.p50),
        "p99_over_floor": ratio(service.p99, get_floor.p99),
        "service_idle_rss_kb": idle_rss,
        "service_peak_rss_kb": peak_rss,
    }))
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        (a / b * 100.0).round() / 100.0
    } else {
        0.0
    }
}

/// SET -> arrival at the one client, `rounds` times after two warm-up changes.
async fn timed(
    fleet: &mut Fleet,
    writer: &mut redis::aio::MultiplexedConnection,
    shape: &Shape,
    marker: &mut Marker,
    rounds: usize,
) -> Result<Stats> {
    let mut all = Vec::with_capacity(rounds);
    for i in 0..rounds + 2 {
        let m = marker.next();
        let doc = (shape.make)(m);
        tokio::time::sleep(gap(1, doc.len())).await;
        let t0 = Instant::now();
        let _: () = writer.set(KEY, doc).await?;
        let got = fleet.collect(m, 1, t0).await?;
        if i >= 2 {
            all.extend(got);
        }
    }
    Ok(Stats::of(&all))
}

fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The GET floor server (this binary, `get-floor-server REDIS_PORT KEY`).
struct GetFloor {
    proc: Proc,
    port: u16,
}

impl GetFloor {
    async fn start(redis_port: u16, tmp: &Path) -> Result<Self> {
        let log = tmp.join("get-floor.log");
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .args(["get-floor-server", &redis_port.to_string(), KEY])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()?;
        let mut stdout = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let line = stdout
            .next_line()
            .await?
            .context("GET floor server said nothing")?;
        let port = line
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("GET floor server: {line}"))?;
        Ok(GetFloor {
            proc: Proc { child, log },
            port,
        })
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
    let client = redis::Client::open(format!("redis://127.0.0.1:{redis_port}/?protocol=resp3"))?;
    let (push_tx, mut pushes) = mpsc::unbounded_channel();
    let config = redis::AsyncConnectionConfig::new().set_push_sender(push_tx);
    let mut con = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    con.subscribe(format!("__keyspace@0__:{key}")).await?;
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
         broadcasts it pre-encoded (no validation, no dedup). Strict validation on.\n\n\
         | document | bytes | service p50 | GET floor p50 | ratio p50 | service p99 | GET floor p99 | idle RSS | peak RSS |\n\
         |---|---|---|---|---|---|---|---|---|"
    );
    for r in rows.as_array().into_iter().flatten() {
        let ms_of = |v: &Value| fmt_ms(v["p50_ms"].as_f64().unwrap_or(0.0) / 1e3);
        let p99_of = |v: &Value| fmt_ms(v["p99_ms"].as_f64().unwrap_or(0.0) / 1e3);
        let mb = |k: &str| format!("{:.1} MB", r[k].as_f64().unwrap_or(0.0) / 1024.0);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.2}x | {} | {} | {} | {} |",
            r["shape"].as_str().unwrap_or(""),
            r["bytes"],
            ms_of(&r["service"]),
            ms_of(&r["get_floor"]),
            r["p50_over_floor"].as_f64().unwrap_or(0.0),
            p99_of(&r["service"]),
            p99_of(&r["get_floor"]),
            mb("service_idle_rss_kb"),
            mb("service_peak_rss_kb"),
        );
    }
    s
}
