//! The binary: parse the configuration, start logging and metrics, run, map errors to
//! exit codes (64 for bad configuration, as sysexits' EX_USAGE; 1 for failures), by the
//! start-up error's class ([`flagd_redis_sync::start_error`]), never its message.

use clap::Parser;
use flagd_redis_sync::cli::{Cli, Command};
use flagd_redis_sync::start_error::{StartError, StartErrorKind};
use flagd_redis_sync::{app, doctor, telemetry, tools, validate};
use std::process::ExitCode;

const EX_USAGE: u8 = 64;

/// jemalloc: page-aligned large buffers (the HTTP/2 buffers every connection holds are
/// touched only as far as used) and fast small allocations (parsing a 1 MB document makes
/// hundreds of thousands). Measured in docs/benchmarks.md.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // Usage errors exit 64 like every other bad command line (clap's own code is 2, which
    // validate and put use for an unreadable file).
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // One line, like every other configuration error: clap's message without
            // its usage and "For more information" footer.
            let text = e.render().to_string();
            let lines: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| {
                    !l.is_empty()
                        && !l.starts_with("For more information")
                        && !l.starts_with("Usage:")
                })
                .collect();
            eprintln!(
                "flagd-redis-sync: {}",
                lines.join(" ").trim_start_matches("error: ")
            );
            return ExitCode::from(EX_USAGE);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    match &cli.command {
        Some(Command::Validate(args)) => {
            return ExitCode::from(validate::run(&args.files, &args.documents.options()))
        }
        Some(Command::Put(args)) => {
            return match args.request(env) {
                Ok(request) => tools::put::main(&request),
                Err(e) => usage("put", &e),
            }
        }
        Some(Command::Watch(args)) => return tools::watch::main(&args.options()),
        Some(Command::Healthcheck(args)) => {
            let within = std::time::Duration::from_secs(args.timeout);
            return tools::healthcheck::main(args.port, args.url.as_deref(), within);
        }
        Some(Command::Doctor(args)) => {
            return match args.target(env) {
                Ok(target) => ExitCode::from(doctor::run_cli(
                    &target,
                    &args.documents.options(),
                    args.redis.timeout(),
                    args.format,
                )),
                Err(e) => usage("doctor", &e),
            }
        }
        None => {}
    }
    let cfg = match cli.serve.to_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("flagd-redis-sync: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("flagd-redis-sync: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = shutdown_signal();
        // Inside the runtime: the OTLP exporters' gRPC channels need it.
        let telemetry = telemetry::Telemetry::new().map_err(telemetry_error)?;
        let tracer = telemetry.tracer();
        telemetry::init_logs(cli.serve.redis_log_format, cli.serve.debug, tracer);
        telemetry.log_otlp();
        app::run(cfg, telemetry, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // One line on stderr, like every other configuration error (those found before
        // start-up included), so it reads the same wherever the mistake was found.
        Err(e) if e.kind() == StartErrorKind::Configuration => {
            eprintln!("flagd-redis-sync: {e:#}");
            ExitCode::from(EX_USAGE)
        }
        Err(e) => {
            // Once, where the logs go (the log line is the only copy); before the logs
            // are set up (telemetry), stderr is the only place it can go.
            if tracing::dispatcher::has_been_set() {
                tracing::error!(error = format!("{e:#}"), "flagd-redis-sync failed");
            } else {
                eprintln!("flagd-redis-sync: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The OTLP exporters cannot be built from `OTEL_EXPORTER_OTLP_*` (a bad endpoint):
/// configuration. Anything else building the metrics pipeline: a failure.
fn telemetry_error(e: anyhow::Error) -> StartError {
    if e.downcast_ref::<opentelemetry_otlp::ExporterBuildError>()
        .is_some()
    {
        StartError::config(e)
    } else {
        StartError::failure(e)
    }
}

/// The environment variables read outside clap (`REDIS_PASSWORD`).
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// A command line that cannot work: one line, exit 64.
fn usage(tool: &str, e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("flagd-redis-sync {tool}: {e}");
    ExitCode::from(EX_USAGE)
}

/// Resolves on SIGTERM or SIGINT. The SIGTERM handler is installed now, not at the first
/// poll (after start-up): a SIGTERM while listeners are being bound must still end in an
/// orderly shutdown (socket file removed), not the default action. Call inside the runtime.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    async move {
        let mut term = term.expect("installing the SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
}
