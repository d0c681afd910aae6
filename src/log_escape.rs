//! Console log lines can carry text from outside (flag names, keys, Redis errors): a
//! newline in a flag key must not forge a second log line. The console formatter writes
//! each event as one buffer ending in `\n`; this writer escapes every other control
//! character in it (`\n` -> `\\n`, others `\\xNN`). ESC is left alone when colours are on
//! (the formatter's own colour codes; tracing-subscriber already escapes ESC in fields).
//! JSON logs need none of this: JSON strings escape control characters.

use std::io::{self, Write};
use tracing_subscriber::fmt::MakeWriter;

/// Standard output with control characters escaped.
#[derive(Clone, Copy, Debug)]
pub struct EscapedStdout {
    /// Colours are on: keep ESC.
    pub ansi: bool,
}

impl<'a> MakeWriter<'a> for EscapedStdout {
    type Writer = Escaped<io::Stdout>;
    fn make_writer(&'a self) -> Self::Writer {
        Escaped {
            inner: io::stdout(),
            ansi: self.ansi,
        }
    }
}

/// A writer that escapes control characters in each buffer but its final newline.
pub struct Escaped<W> {
    pub inner: W,
    pub ansi: bool,
}

fn needs_escape(b: u8, ansi: bool) -> bool {
    (b < 0x20 && !(ansi && b == 0x1b)) || b == 0x7f
}

impl<W: Write> Write for Escaped<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (body, end): (&[u8], &[u8]) = match buf.strip_suffix(b"\n") {
            Some(body) => (body, b"\n"),
            None => (buf, b""),
        };
        if !body.iter().any(|&b| needs_escape(b, self.ansi)) {
            self.inner.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut out = Vec::with_capacity(buf.len() + 16);
        for &b in body {
            match b {
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                b if needs_escape(b, self.ansi) => {
                    out.extend_from_slice(format!("\\x{b:02x}").as_bytes())
                }
                b => out.push(b),
            }
        }
        out.extend_from_slice(end);
        self.inner.write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(s: &str, ansi: bool) -> String {
        let mut w = Escaped {
            inner: Vec::new(),
            ansi,
        };
        w.write_all(s.as_bytes()).unwrap();
        String::from_utf8(w.inner).unwrap()
    }

    #[test]
    fn a_newline_in_a_field_cannot_forge_a_line() {
        let line = "WARN flag defined twice flag=a\nERROR forged\r\x07 x\n";
        assert_eq!(
            escaped(line, false),
            "WARN flag defined twice flag=a\\nERROR forged\\r\\x07 x\n"
        );
        assert_eq!(escaped("plain line\n", false), "plain line\n");
        assert_eq!(
            escaped("\x1b[31mred\x1b[0m\n", true),
            "\x1b[31mred\x1b[0m\n"
        );
        assert_eq!(escaped("\x1b[31m\n", false), "\\x1b[31m\n");
    }
}
