//! Why the service did not start, by class. The class, never the message, decides the
//! exit code (src/main.rs): a configuration mistake exits 64 (sysexits' `EX_USAGE`, as
//! every bad option does), anything else 1. Which is which: docs/decisions.md, "Start-up
//! errors: configuration or failure".

use std::io;

/// The class of a start-up error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartErrorKind {
    /// Something an option names cannot be used as given: a certificate that is not PEM,
    /// a certificate and key that are not a pair, an address not on this host, a socket
    /// path whose directory is missing. Fixed by changing the configuration.
    Configuration,
    /// The configuration may be right but starting failed: a port or socket held by
    /// another process, an internal error. A restart may succeed.
    Failure,
}

/// A start-up error: its class and the error itself (message and source chain kept).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Configuration(anyhow::Error),
    #[error(transparent)]
    Failure(anyhow::Error),
}

impl StartError {
    pub fn kind(&self) -> StartErrorKind {
        match self {
            StartError::Configuration(_) => StartErrorKind::Configuration,
            StartError::Failure(_) => StartErrorKind::Failure,
        }
    }

    /// A file or value an option names is unusable.
    pub fn config(e: impl Into<anyhow::Error>) -> Self {
        StartError::Configuration(e.into())
    }

    /// Anything else.
    pub fn failure(e: impl Into<anyhow::Error>) -> Self {
        StartError::Failure(e.into())
    }

    /// A failed bind or file operation on something an option names, classified by the
    /// I/O error's kind (see [`io_kind`]), with `context` naming the option and address.
    pub fn io(e: io::Error, context: String) -> Self {
        let kind = io_kind(e.kind());
        let e = anyhow::Error::new(e).context(context);
        match kind {
            StartErrorKind::Configuration => StartError::Configuration(e),
            StartErrorKind::Failure => StartError::Failure(e),
        }
    }
}

/// An I/O error on an address or path an option names: the option is wrong when the
/// address is not on this host or not allowed, the path's directory is missing or not
/// writable; it is not when another process holds the port or socket (the same
/// configuration starts once that one is gone), nor for anything unforeseen.
pub fn io_kind(kind: io::ErrorKind) -> StartErrorKind {
    use io::ErrorKind as K;
    match kind {
        K::AddrNotAvailable
        | K::PermissionDenied
        | K::NotFound
        | K::InvalidInput
        | K::NotADirectory
        | K::ReadOnlyFilesystem => StartErrorKind::Configuration,
        _ => StartErrorKind::Failure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_classified_by_kind() {
        let e = |k: io::ErrorKind| StartError::io(io::Error::from(k), "cannot listen".into());
        assert_eq!(
            e(io::ErrorKind::AddrInUse).kind(),
            StartErrorKind::Failure,
            "a port another process holds is not a configuration mistake"
        );
        for k in [
            io::ErrorKind::AddrNotAvailable,
            io::ErrorKind::PermissionDenied,
            io::ErrorKind::NotFound,
        ] {
            assert_eq!(e(k).kind(), StartErrorKind::Configuration, "{k:?}");
        }
        assert_eq!(e(io::ErrorKind::Other).kind(), StartErrorKind::Failure);
    }

    #[test]
    fn the_message_and_the_source_are_kept() {
        let e = StartError::io(
            io::Error::from(io::ErrorKind::AddrNotAvailable),
            "cannot listen for gRPC on 192.0.2.1:8013".into(),
        );
        let text = format!("{:#}", anyhow::Error::new(e));
        assert!(
            text.starts_with("cannot listen for gRPC on 192.0.2.1:8013: "),
            "{text}"
        );
        let e = StartError::config(anyhow::anyhow!("inner").context("outer"));
        let source = std::error::Error::source(&e).expect("a source");
        assert_eq!(source.to_string(), "inner");
    }
}
