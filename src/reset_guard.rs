//! HTTP/2 rapid-reset warnings (CVE-2023-44487): h2 closes a connection whose client
//! resets too many streams (GOAWAY ENHANCE_YOUR_CALM) and says so with a WARN per
//! connection that names no peer, so a flood of such clients floods the log. Here those
//! events (h2's WARNs under `h2::proto::streams`, the only WARNs that module emits: the
//! remote- and local-reset limits) are kept off the log output and replaced by one WARN
//! at most once a second naming the last peer and the count (see [`crate::conn::RateLimited`]).
//!
//! The peer: h2 handles a frame in the same poll, on the same thread, as the read that
//! brought it, and every inbound connection reads through [`crate::conn::Guarded`], which
//! records its peer for the thread before each read ([`crate::conn::reading_peer`]).

use crate::conn::{reading_peer, RateLimited};
use std::sync::Mutex;
use tracing::{warn, Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Whether an event is h2's reset-limit warning.
pub fn is_reset_warning(meta: &Metadata<'_>) -> bool {
    *meta.level() == Level::WARN && meta.target().starts_with("h2::proto::streams")
}

/// For the log output layer: everything but h2's reset-limit warnings.
pub fn keep(meta: &Metadata<'_>) -> bool {
    !is_reset_warning(meta)
}

/// Logs h2's reset-limit warnings rate-limited, with the peer.
#[derive(Default)]
pub struct ResetGuardLog {
    limit: Mutex<RateLimited>,
}

impl<S: Subscriber> Layer<S> for ResetGuardLog {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if !is_reset_warning(event.metadata()) {
            return;
        }
        let due = self.limit.lock().map(|mut l| l.due()).unwrap_or(None);
        let (Some(count), Ok(runtime)) = (due, tokio::runtime::Handle::try_current()) else {
            return;
        };
        let peer = reading_peer().map_or_else(|| "unknown".into(), |p| p.to_string());
        // An event raised inside this callback would be dropped (tracing does not
        // re-enter a subscriber), so the line is written from a task of its own.
        runtime.spawn(async move {
            warn!(peer = %peer, connections = count,
                "HTTP/2 client reset too many streams (rapid-reset guard): connection closed with GOAWAY ENHANCE_YOUR_CALM");
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex as StdMutex};
    use tracing_subscriber::layer::SubscriberExt as _;

    /// Captures the log output of the fmt layer as the service configures it.
    #[derive(Clone, Default)]
    struct Buf(Arc<StdMutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_burst_of_reset_warnings_is_one_line_naming_the_peer() {
        let buf = Buf::default();
        let out = buf.clone();
        let fmt = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || out.clone())
            .with_filter(tracing_subscriber::filter::filter_fn(keep));
        let subscriber = tracing_subscriber::registry()
            .with(fmt)
            .with(ResetGuardLog::default());
        let _default = tracing::subscriber::set_default(subscriber);
        crate::conn::note_peer("192.0.2.7:40000".parse().unwrap());
        for _ in 0..100 {
            tracing::warn!(target: "h2::proto::streams::recv",
                "recv_reset; remotely-reset pending-accept streams reached limit (20)");
        }
        tracing::warn!(target: "h2::proto::ping_pong", "other h2 warning");
        // The spawned line is written when this (only) thread next runs tasks.
        tokio::task::yield_now().await;
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("rapid-reset")).collect();
        assert_eq!(lines.len(), 1, "{text}");
        assert!(lines[0].contains("peer=192.0.2.7:40000"), "{text}");
        assert!(
            !text.contains("pending-accept streams reached limit"),
            "{text}"
        );
        assert!(text.contains("other h2 warning"), "{text}");
    }
}
