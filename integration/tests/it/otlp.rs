//! OTLP export: with the standard `OTEL_EXPORTER_OTLP_*` variables set, metrics and spans
//! reach a collector (a small OTLP/gRPC receiver run by the test), periodically and in a
//! final flush at shutdown.

use integration::*;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as Number;
use std::sync::{Arc, Mutex};
use tonic::{Request, Response, Status};

/// Everything received, kept for the assertions.
#[derive(Clone, Default)]
struct Collector {
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
    traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.metrics.lock().unwrap().push(request.into_inner());
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.traces.lock().unwrap().push(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    /// Serves OTLP/gRPC on a free loopback port until the returned handle is dropped.
    async fn start() -> (Self, String, tokio::task::JoinHandle<()>) {
        let c = Collector::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let server = tonic::transport::Server::builder()
            .add_service(MetricsServiceServer::new(c.clone()))
            .add_service(TraceServiceServer::new(c.clone()));
        let task = tokio::spawn(async move {
            let _ = server.serve_with_incoming(incoming).await;
        });
        (c, endpoint, task)
    }

    /// The latest value of a counter (sum) named `name`, over every export.
    fn counter(&self, name: &str) -> Option<f64> {
        let all = self.metrics.lock().unwrap();
        let mut last = None;
        for m in all
            .iter()
            .flat_map(|r| &r.resource_metrics)
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .filter(|m| m.name == name)
        {
            if let Some(Data::Sum(sum)) = &m.data {
                for p in &sum.data_points {
                    last = match p.value {
                        Some(Number::AsInt(i)) => Some(i as f64),
                        Some(Number::AsDouble(d)) => Some(d),
                        None => last,
                    };
                }
            }
        }
        last
    }

    fn metric_names(&self) -> Vec<String> {
        let all = self.metrics.lock().unwrap();
        let mut names: Vec<String> = all
            .iter()
            .flat_map(|r| &r.resource_metrics)
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .map(|m| m.name.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    fn service_names(&self) -> Vec<String> {
        let metrics = self.metrics.lock().unwrap();
        let traces = self.traces.lock().unwrap();
        let resources = metrics
            .iter()
            .flat_map(|r| &r.resource_metrics)
            .filter_map(|r| r.resource.clone())
            .chain(
                traces
                    .iter()
                    .flat_map(|r| &r.resource_spans)
                    .filter_map(|r| r.resource.clone()),
            );
        let mut names: Vec<String> = resources
            .flat_map(|r| r.attributes)
            .filter(|kv| kv.key == "service.name")
            .filter_map(|kv| match kv.value?.value? {
                AnyValue::StringValue(s) => Some(s),
                _ => None,
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    fn span_names(&self) -> Vec<String> {
        let all = self.traces.lock().unwrap();
        let mut names: Vec<String> = all
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| s.name.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

const ACCEPTED: &str = "flagd_redis_sync.documents.accepted";
const READ_SPAN: &str = "read_flag_key";
const FETCH_SPAN: &str = "flagd.sync.v1.FlagSyncService/FetchAllFlags";

async fn fetch_all(svc: &Service) {
    use integration::client::flagd::FetchAllFlagsRequest;
    let mut c = svc.client().await.unwrap();
    tokio::time::timeout(WAIT, c.fetch_all_flags(FetchAllFlagsRequest::default()))
        .await
        .expect("FetchAllFlags timed out")
        .unwrap();
}

#[tokio::test]
async fn metrics_and_spans_are_exported_while_running() {
    let (collector, endpoint, _server) = Collector::start().await;
    let redis = RedisServer::start().unwrap();
    redis.set("flags", &doc("f", "one")).unwrap();
    let svc = Service::start_with_env(
        &redis.uri("flags"),
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    )
    .await
    .unwrap();
    svc.wait_ready().await.unwrap();
    redis.set("flags", &doc("f", "two")).unwrap();
    fetch_all(&svc).await;

    let c = &collector;
    let result = eventually(WAIT, "2 accepted documents exported", || async move {
        (c.counter(ACCEPTED) >= Some(2.0)).then_some(())
    })
    .await;
    result.unwrap_or_else(|e| panic!("{e}: got {:?}\n{}", c.metric_names(), svc.logs()));
    let names = collector.metric_names();
    for want in [
        "flagd_redis_sync.redis.up",
        "flagd_redis_sync.notifications",
        "flagd_redis_sync.propagation.duration",
        "flagd_redis_sync.document.size",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    let result = eventually(WAIT, "spans exported", || async move {
        let spans = c.span_names();
        (spans.iter().any(|s| s == READ_SPAN) && spans.iter().any(|s| s == FETCH_SPAN))
            .then_some(())
    })
    .await;
    result.unwrap_or_else(|e| panic!("{e}: got {:?}\n{}", c.span_names(), svc.logs()));
    assert_eq!(collector.service_names(), ["flagd-redis-sync"]);
    // Prometheus keeps working alongside.
    svc.metric_reaches("flagd_redis_sync_documents_accepted_total", 2.0)
        .await;
    assert!(svc.logs().contains("exporting telemetry over OTLP/gRPC"));
}

#[tokio::test]
async fn shutdown_flushes_what_was_not_exported_yet() {
    let (collector, endpoint, _server) = Collector::start().await;
    let redis = RedisServer::start().unwrap();
    redis.set("flags", &doc("f", "one")).unwrap();
    // Intervals far longer than the test: whatever arrives came from the final flush.
    let mut svc = Service::start_with_env(
        &redis.uri("flags"),
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_METRIC_EXPORT_INTERVAL", "3600000"),
            ("OTEL_BSP_SCHEDULE_DELAY", "3600000"),
            ("OTEL_SERVICE_NAME", "sync-under-test"),
        ],
    )
    .await
    .unwrap();
    svc.wait_ready().await.unwrap();
    fetch_all(&svc).await;
    assert!(collector.metric_names().is_empty());
    svc.sigterm();
    let status = svc.wait_exit(WAIT).await.unwrap();
    assert!(status.success(), "{status}\n{}", svc.logs());
    assert_eq!(collector.counter(ACCEPTED), Some(1.0), "{}", svc.logs());
    assert!(
        collector.span_names().iter().any(|s| s == FETCH_SPAN),
        "{:?}",
        collector.span_names()
    );
    assert_eq!(collector.service_names(), ["sync-under-test"]);
}

#[tokio::test]
async fn an_unreachable_collector_neither_blocks_serving_nor_shutdown() {
    let redis = RedisServer::start().unwrap();
    redis.set("flags", &doc("f", "one")).unwrap();
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let mut svc = Service::start_with_env(
        &redis.uri("flags"),
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    )
    .await
    .unwrap();
    svc.wait_ready().await.unwrap();
    let mut s = svc.stream("").await.unwrap();
    s.next().await.unwrap();
    redis.set("flags", &doc("f", "two")).unwrap();
    assert_eq!(
        default_value(&s.next_json().await.unwrap(), "f").as_deref(),
        Some("two")
    );
    svc.sigterm();
    let status = svc.wait_exit(WAIT).await.unwrap();
    assert!(status.success(), "{status}\n{}", svc.logs());
}

#[tokio::test]
async fn a_bad_otlp_endpoint_is_a_start_up_error() {
    let redis = RedisServer::start().unwrap();
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(binary())
            .args(["--redis-uri", &redis.uri("flags")])
            .args(["--redis-sync-port", &free_port().to_string()])
            .args(["--management-port", "0"])
            .env_remove("REDIS_URI")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the service did not exit")
    .unwrap();
    // Configuration (OTEL_EXPORTER_OTLP_ENDPOINT), so 64 like every bad option.
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("OTLP"), "{stderr}");
}
