//! `flagd-redis-sync validate FILE…`: judges documents exactly as the service does.
//!
//! Exit codes, for CI pipelines: 0 every document is valid; 1 at least one was refused
//! (each refusal is printed as `FILE: refused: REASON`, with a JSON pointer, or line and
//! column for syntax errors; one such line per problem strict validation found);
//! 2 at least one file could not be read (wins over 1).

use crate::flags;

/// Every file was valid.
pub const VALID: u8 = 0;
/// At least one document was refused.
pub const REFUSED: u8 = 1;
/// At least one file could not be read.
pub const UNREADABLE: u8 = 2;

/// Prints one line per file; returns the exit code.
pub fn run(files: &[std::path::PathBuf], opts: &flags::Options) -> u8 {
    let mut code = VALID;
    for path in files {
        let name = path.display().to_string();
        let bytes = crate::files::read_document(path, opts.max_bytes);
        match bytes {
            Err(e) => {
                code = UNREADABLE;
                eprintln!("{name}: cannot read: {e}");
            }
            Ok(bytes) => match flags::parse(&bytes, opts) {
                Ok(doc) => {
                    for line in doc.warnings.lines() {
                        eprintln!("{name}: warning (strict would refuse): {line}");
                    }
                    println!(
                        "{name}: ok ({} flags, digest {})",
                        doc.flag_count,
                        doc.digest.short()
                    )
                }
                Err(e) => {
                    code = code.max(REFUSED);
                    for line in e.lines() {
                        eprintln!("{name}: refused: {line}");
                    }
                }
            },
        }
    }
    code
}
