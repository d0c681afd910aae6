//! Logs (tracing) and metrics (OpenTelemetry, exported in Prometheus text format).

use crate::config::LogFormat;
use opentelemetry::metrics::{
    Counter, Gauge, Histogram, Meter, MeterProvider as _, ObservableGauge, UpDownCounter,
};
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use tracing_subscriber::EnvFilter;

/// Installs the global log subscriber. `RUST_LOG`, when set, wins over `--debug`.
pub fn init_logs(format: LogFormat, debug: bool) {
    let default = if debug {
        "debug,h2=info,hyper=info,tower=info,rustls=info"
    } else {
        "info"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let _ = match format {
        LogFormat::Console => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

/// Every instrument the service records, created once.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub active_streams: UpDownCounter<i64>,
    pub pushes: Counter<u64>,
    pub accepted: Counter<u64>,
    pub refused: Counter<u64>,
    pub duplicates: Counter<u64>,
    pub notifications: Counter<u64>,
    pub polls: Counter<u64>,
    pub reconnects: Counter<u64>,
    pub redis_up: Gauge<i64>,
    pub document_bytes: Gauge<u64>,
    pub last_change: Gauge<f64>,
    pub propagation: Histogram<f64>,
    /// Callbacks read at scrape time: live tokio tasks and open file descriptors, so a
    /// leak (of streams, connections) shows as a trend.
    _runtime: [ObservableGauge<i64>; 2],
}

impl Metrics {
    pub fn new(meter: &Meter) -> Self {
        Metrics {
            // flagd's own name for the same thing, so dashboards carry over.
            active_streams: meter
                .i64_up_down_counter("feature_flag.flagd.sync.active_streams")
                .with_description("Open SyncFlags streams")
                .build(),
            pushes: meter
                .u64_counter("flagd_redis_sync.pushes")
                .with_description(
                    "Flag documents sent on SyncFlags streams (including each stream's first)",
                )
                .build(),
            accepted: meter
                .u64_counter("flagd_redis_sync.documents.accepted")
                .with_description("Changed documents read from Redis, validated and published")
                .build(),
            refused: meter
                .u64_counter("flagd_redis_sync.documents.refused")
                .with_description(
                    "Documents read from Redis and refused, by reason; the last good one stays",
                )
                .build(),
            duplicates: meter
                .u64_counter("flagd_redis_sync.documents.duplicates")
                .with_description("Reads whose content equals the published document (not pushed)")
                .build(),
            notifications: meter
                .u64_counter("flagd_redis_sync.notifications")
                .with_description("Keyspace notifications received for the flag key")
                .build(),
            polls: meter
                .u64_counter("flagd_redis_sync.polls")
                .with_description("Fallback polls of the flag key")
                .build(),
            reconnects: meter
                .u64_counter("flagd_redis_sync.redis.reconnects")
                .with_description("Redis connection attempts after a failure or a lost connection")
                .build(),
            redis_up: meter
                .i64_gauge("flagd_redis_sync.redis.up")
                .with_description("1 while the Redis connection is established and subscribed")
                .build(),
            document_bytes: meter
                .u64_gauge("flagd_redis_sync.document.size")
                .with_unit("By")
                .with_description("Size of the published flag document")
                .build(),
            last_change: meter
                .f64_gauge("flagd_redis_sync.document.last_change")
                .with_unit("s")
                .with_description("Unix time at which the published document last changed")
                .build(),
            propagation: meter
                .f64_histogram("flagd_redis_sync.propagation.duration")
                .with_unit("s")
                .with_description(
                    "From a notification (or poll) seen to the changed document published",
                )
                .with_boundaries(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0,
                ])
                .build(),
            _runtime: [
                meter
                    .i64_observable_gauge("flagd_redis_sync.runtime.tasks")
                    .with_description("Live tokio tasks")
                    .with_callback(|o| {
                        if let Ok(h) = tokio::runtime::Handle::try_current() {
                            o.observe(h.metrics().num_alive_tasks() as i64, &[]);
                        }
                    })
                    .build(),
                meter
                    .i64_observable_gauge("flagd_redis_sync.process.open_fds")
                    .with_description("Open file descriptors of the process")
                    .with_callback(|o| {
                        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
                            o.observe(dir.count() as i64, &[]);
                        }
                    })
                    .build(),
            ],
        }
    }

    pub fn refused(&self, reason: &'static str) {
        self.refused.add(1, &[KeyValue::new("reason", reason)]);
    }
}

/// The metrics pipeline: a Prometheus registry fed by an OpenTelemetry meter provider.
pub struct Telemetry {
    pub registry: prometheus::Registry,
    pub provider: SdkMeterProvider,
    pub metrics: Metrics,
}

impl Telemetry {
    pub fn new() -> anyhow::Result<Self> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .scope_info_enabled(false)
            .build()?;
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        let metrics = Metrics::new(&provider.meter("flagd-redis-sync"));
        Ok(Telemetry {
            registry,
            provider,
            metrics,
        })
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut out = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
