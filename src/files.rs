//! Every file the program reads goes through here: bounded (documents at the payload
//! limit, secrets and certificates at [`SECRET_MAX_BYTES`]) and regular files only, so
//! `validate /dev/zero`, a FIFO or a 100 MB file given by mistake is a clear error
//! instead of a process that grows until it is killed or blocks forever.
//!
//! Errors are `std::io::Error`s (callers already name the flag and path) whose inner
//! error is a typed [`FileError`] for the two refusals, so they keep their kind.

use std::fmt;
use std::io::{self, Read};
use std::path::Path;

/// Secrets (passwords, tokens), keys and certificates: a CA bundle of a few hundred
/// certificates fits with room to spare.
pub const SECRET_MAX_BYTES: u64 = 1024 * 1024;

/// Why a file was refused before or while reading it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FileError {
    #[error("is {kind}, not a regular file")]
    NotRegular { kind: FileKind },
    #[error("{}", match size {
        Some(s) => format!("is {s} bytes, above the limit of {limit} bytes"),
        None => format!("is larger than the limit of {limit} bytes"),
    })]
    TooLarge { size: Option<u64>, limit: u64 },
}

/// What a non-regular path is, for the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Directory,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
    Other,
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Directory => "a directory",
            FileKind::Fifo => "a named pipe (FIFO)",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Socket => "a socket",
            FileKind::Other => "not a file",
        })
    }
}

fn refused(e: FileError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e)
}

fn kind(meta: &std::fs::Metadata) -> Option<FileKind> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    Some(if t.is_file() {
        return None;
    } else if t.is_dir() {
        FileKind::Directory
    } else if t.is_fifo() {
        FileKind::Fifo
    } else if t.is_char_device() {
        FileKind::CharDevice
    } else if t.is_block_device() {
        FileKind::BlockDevice
    } else if t.is_socket() {
        FileKind::Socket
    } else {
        FileKind::Other
    })
}

/// Reads a regular file of at most `limit` bytes (symlinks followed).
pub fn read_limited(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    // Looked at before opening: opening a FIFO would block until a writer comes.
    if let Some(kind) = kind(&std::fs::metadata(path)?) {
        return Err(refused(FileError::NotRegular { kind }));
    }
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if let Some(kind) = kind(&meta) {
        return Err(refused(FileError::NotRegular { kind }));
    }
    if meta.len() > limit {
        return Err(refused(FileError::TooLarge {
            size: Some(meta.len()),
            limit,
        }));
    }
    take(file, limit)
}

/// Reads at most `limit` bytes from a stream (standard input); more is an error.
pub fn take(reader: impl Read, limit: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(refused(FileError::TooLarge { size: None, limit }));
    }
    Ok(bytes)
}

/// A flag document from a file, or standard input for `-`, at most `limit` bytes.
pub fn read_document(path: &Path, limit: usize) -> io::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        take(io::stdin().lock(), limit as u64)
    } else {
        read_limited(path, limit as u64)
    }
}

/// A secret, key or certificate file.
pub fn read_secret(path: &Path) -> io::Result<Vec<u8>> {
    read_limited(path, SECRET_MAX_BYTES)
}

/// A secret file as text.
pub fn read_secret_string(path: &Path) -> io::Result<String> {
    String::from_utf8(read_secret(path)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "is not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inner(e: io::Error) -> FileError {
        *e.into_inner()
            .expect("a typed error")
            .downcast::<FileError>()
            .expect("a FileError")
    }

    #[test]
    fn devices_and_directories_are_refused_without_reading() {
        let dir = tempfile::tempdir().unwrap();
        let e = inner(read_secret(Path::new("/dev/zero")).unwrap_err());
        assert_eq!(
            e,
            FileError::NotRegular {
                kind: FileKind::CharDevice
            }
        );
        assert_eq!(e.to_string(), "is a character device, not a regular file");
        assert!(matches!(
            inner(read_secret(dir.path()).unwrap_err()),
            FileError::NotRegular {
                kind: FileKind::Directory
            }
        ));
        // FIFOs: hostile::every_file_read_is_bounded_and_regular_files_only (the binary).
    }

    #[test]
    fn files_and_streams_over_the_limit_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, vec![b'x'; 101]).unwrap();
        let e = inner(read_limited(&path, 100).unwrap_err());
        assert_eq!(e.to_string(), "is 101 bytes, above the limit of 100 bytes");
        assert_eq!(read_limited(&path, 101).unwrap().len(), 101);
        // A stream of unknown length: read up to one byte past the limit, no further.
        let endless = std::io::repeat(b'x');
        assert_eq!(
            inner(take(endless, 100).unwrap_err()).to_string(),
            "is larger than the limit of 100 bytes"
        );
        assert_eq!(take(&b"abc"[..], 3).unwrap(), b"abc");
        assert_eq!(
            read_secret(&dir.path().join("none")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
