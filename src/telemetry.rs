//! Logs (tracing), metrics (OpenTelemetry, exported in Prometheus text format on
//! `/metrics`) and, when the standard `OTEL_EXPORTER_OTLP_*` variables name an endpoint,
//! OTLP export of the same metrics and of the tracing spans (gRPC, via tonic).

use opentelemetry::metrics::{
    Counter, Gauge, Histogram, Meter, MeterProvider as _, ObservableGauge, UpDownCounter,
};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::{Layer as _, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

/// Log output (`--redis-log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Console,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Installs the global log subscriber. `RUST_LOG`, when set, wins over `--debug`. With a
/// tracer (OTLP traces configured), spans are also exported.
pub fn init_logs(format: LogFormat, debug: bool, tracer: Option<SdkTracer>) {
    let default = if debug {
        "debug,h2=info,hyper=info,tower=info,rustls=info"
    } else {
        // The SDK's own INFO lines (a meter provider dropped at a failed start-up) are noise.
        "info,opentelemetry_sdk=warn"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let otel = tracer.map(|t| tracing_opentelemetry::layer().with_tracer(t));
    // h2's per-connection rapid-reset WARNs go through the rate limiter instead.
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(otel)
        .with(crate::reset_guard::ResetGuardLog::default());
    let keep = || tracing_subscriber::filter::filter_fn(crate::reset_guard::keep);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Console => registry
            .with(
                fmt.with_writer(crate::log_escape::EscapedStdout { ansi })
                    .with_filter(keep()),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt.json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_filter(keep()),
            )
            .try_init(),
    };
}

/// Which OTLP signals the environment asks for: an endpoint for all signals
/// (`OTEL_EXPORTER_OTLP_ENDPOINT`) or for one (`OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`,
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), unless `OTEL_SDK_DISABLED=true` or
/// `OTEL_{METRICS,TRACES}_EXPORTER=none`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OtlpSignals {
    pub metrics: bool,
    pub traces: bool,
}

impl OtlpSignals {
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let set = |k: &str| get(k).is_some_and(|v| !v.trim().is_empty());
        let is = |k: &str, v: &str| get(k).is_some_and(|x| x.trim().eq_ignore_ascii_case(v));
        if is("OTEL_SDK_DISABLED", "true") {
            return OtlpSignals::default();
        }
        let all = set("OTEL_EXPORTER_OTLP_ENDPOINT");
        OtlpSignals {
            metrics: (all || set("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"))
                && !is("OTEL_METRICS_EXPORTER", "none"),
            traces: (all || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
                && !is("OTEL_TRACES_EXPORTER", "none"),
        }
    }
}

/// The OTLP protocol asked for, if it is not the one built in (gRPC).
fn unsupported_protocol(signal: &str) -> Option<String> {
    [
        format!("OTEL_EXPORTER_OTLP_{signal}_PROTOCOL"),
        "OTEL_EXPORTER_OTLP_PROTOCOL".to_string(),
    ]
    .iter()
    .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
    .filter(|v| !v.trim().eq_ignore_ascii_case("grpc"))
}

/// `service.name` = flagd-redis-sync unless `OTEL_SERVICE_NAME` or
/// `OTEL_RESOURCE_ATTRIBUTES` name the service; `service.version` always.
fn resource() -> Resource {
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let mut b = Resource::builder()
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if !named {
        b = b.with_service_name("flagd-redis-sync");
    }
    b.build()
}

/// Every instrument the service records, created once.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub active_streams: UpDownCounter<i64>,
    pub pushes: Counter<u64>,
    pub accepted: Counter<u64>,
    pub refused: Counter<u64>,
    pub duplicates: Counter<u64>,
    /// Validations done, by `scope`: `flag` (one flag of a document validated alone, not
    /// found unchanged in the memo) or `document` (a document judged whole). A write
    /// that changes nothing (the same bytes, the same flags reordered) adds none.
    pub validations: Counter<u64>,
    pub notifications: Counter<u64>,
    pub polls: Counter<u64>,
    pub reconnects: Counter<u64>,
    /// gRPC connections and calls refused, by `reason`: `unauthenticated` (token),
    /// `tls_handshake` (failed handshake, e.g. no or a wrong client certificate),
    /// `handshake_limit` (too many handshakes in progress).
    pub grpc_refused: Counter<u64>,
    /// Requests whose `source=` selector names no configured source (answered with an
    /// empty set, as flagd does).
    pub unknown_source: Counter<u64>,
    pub redis_up: Gauge<i64>,
    /// 1 for the level each doctor check found, 0 for its other levels.
    pub doctor_findings: Gauge<i64>,
    pub document_bytes: Gauge<u64>,
    pub last_change: Gauge<f64>,
    pub propagation: Histogram<f64>,
    /// Callbacks read at scrape time: live tokio tasks and open file descriptors, so a
    /// leak (of streams, connections) shows as a trend.
    _runtime: [ObservableGauge<i64>; 2],
    /// Stream messages encoded (see [`crate::wire::encodings`]): one per change, not per
    /// stream; read at scrape time.
    _encodings: opentelemetry::metrics::ObservableCounter<u64>,
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
            validations: meter
                .u64_counter("flagd_redis_sync.validations")
                .with_description(
                    "Validations done, by scope: flag (a flag not found unchanged in the last document) or document (a document judged whole)",
                )
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
            grpc_refused: meter
                .u64_counter("flagd_redis_sync.grpc.refused")
                .with_description(
                    "gRPC connections or calls refused, by reason: unauthenticated, tls_handshake, handshake_limit, connection_limit",
                )
                .build(),
            unknown_source: meter
                .u64_counter("flagd_redis_sync.grpc.unknown_source")
                .with_description(
                    "Requests whose source= selector names no configured source (answered with an empty set)",
                )
                .build(),
            doctor_findings: meter
                .i64_gauge("flagd_redis_sync.doctor.findings")
                .with_description(
                    "Redis production-readiness findings: 1 for the level (ok, skipped, warn, fail) of each check",
                )
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
            _encodings: meter
                .u64_observable_counter("flagd_redis_sync.encodings")
                .with_description(
                    "Stream messages serialised: one per published document (and other selection), whatever the number of streams",
                )
                .with_callback(|o| o.observe(crate::wire::encodings(), &[]))
                .build(),
        }
    }

    pub fn refused(&self, reason: &'static str) {
        self.refused.add(1, &[KeyValue::new("reason", reason)]);
    }

    /// Counts `n` validations of `scope` (`flag` or `document`).
    pub fn validated(&self, scope: &'static str, n: u64) {
        if n > 0 {
            self.validations.add(n, &[KeyValue::new("scope", scope)]);
        }
    }
}

/// The metrics pipeline: a Prometheus registry fed by an OpenTelemetry meter provider
/// (plus a periodic OTLP exporter when configured), and the OTLP tracer provider.
pub struct Telemetry {
    pub registry: prometheus::Registry,
    pub provider: SdkMeterProvider,
    pub metrics: Metrics,
    /// Exports spans when OTLP traces are configured.
    pub tracer_provider: Option<SdkTracerProvider>,
    /// What OTLP exports, for the start-up log line.
    pub otlp: OtlpSignals,
}

impl Telemetry {
    /// Builds the pipelines. OTLP exporters need a tokio runtime (tonic channels).
    pub fn new() -> anyhow::Result<Self> {
        use anyhow::Context;
        use opentelemetry_otlp::{MetricExporter, SpanExporter};
        let otlp = OtlpSignals::from_env();
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .scope_info_enabled(false)
            .build()?;
        let resource = resource();
        let mut builder = SdkMeterProvider::builder()
            .with_resource(resource.clone())
            .with_reader(exporter);
        if otlp.metrics {
            let exporter = MetricExporter::builder()
                .with_tonic()
                .build()
                .context("OTLP metrics exporter (OTEL_EXPORTER_OTLP_*)")?;
            // The interval comes from OTEL_METRIC_EXPORT_INTERVAL (default 60 s).
            builder = builder.with_reader(PeriodicReader::builder(exporter).build());
        }
        let provider = builder.build();
        let tracer_provider = if otlp.traces {
            let exporter = SpanExporter::builder()
                .with_tonic()
                .build()
                .context("OTLP span exporter (OTEL_EXPORTER_OTLP_*)")?;
            Some(
                SdkTracerProvider::builder()
                    .with_resource(resource)
                    .with_batch_exporter(exporter)
                    .build(),
            )
        } else {
            None
        };
        let metrics = Metrics::new(&provider.meter("flagd-redis-sync"));
        Ok(Telemetry {
            registry,
            provider,
            metrics,
            tracer_provider,
            otlp,
        })
    }

    /// The tracer for the log subscriber's OpenTelemetry layer, when traces are exported.
    pub fn tracer(&self) -> Option<SdkTracer> {
        self.tracer_provider
            .as_ref()
            .map(|p| p.tracer("flagd-redis-sync"))
    }

    /// Logs what OTLP exports and warns about settings that are not honoured.
    pub fn log_otlp(&self) {
        for (on, signal) in [(self.otlp.metrics, "METRICS"), (self.otlp.traces, "TRACES")] {
            if let (true, Some(p)) = (on, unsupported_protocol(signal)) {
                tracing::warn!(protocol = %p, "OTLP protocol not supported; exporting with grpc (point OTEL_EXPORTER_OTLP_ENDPOINT at the collector's gRPC port, usually 4317)");
            }
        }
        if self.otlp.metrics || self.otlp.traces {
            tracing::info!(
                metrics = self.otlp.metrics,
                traces = self.otlp.traces,
                "exporting telemetry over OTLP/gRPC"
            );
        }
    }

    /// Flushes and stops every exporter. Blocks: call it off the async workers.
    pub fn shutdown(&self) {
        if let Some(t) = &self.tracer_provider {
            if let Err(e) = t.shutdown() {
                tracing::warn!(error = %e, "flushing OTLP spans failed");
            }
        }
        if let Err(e) = self.provider.shutdown() {
            if self.otlp.metrics {
                tracing::warn!(error = %e, "flushing OTLP metrics failed");
            }
        }
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut out = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signals(vars: &[(&str, &str)]) -> OtlpSignals {
        OtlpSignals::from_lookup(|k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn otlp_is_on_only_when_an_endpoint_is_named() {
        assert_eq!(signals(&[]), OtlpSignals::default());
        let all = OtlpSignals {
            metrics: true,
            traces: true,
        };
        assert_eq!(
            signals(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")]),
            all
        );
        assert_eq!(
            signals(&[("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://c:4317")]),
            OtlpSignals {
                metrics: true,
                traces: false
            }
        );
        assert_eq!(
            signals(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4317")]),
            OtlpSignals {
                metrics: false,
                traces: true
            }
        );
        assert_eq!(
            signals(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_TRACES_EXPORTER", "none")
            ]),
            OtlpSignals {
                metrics: true,
                traces: false
            }
        );
        assert_eq!(
            signals(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_SDK_DISABLED", "true")
            ]),
            OtlpSignals::default()
        );
        assert_eq!(
            signals(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]),
            OtlpSignals::default()
        );
    }
}
