//! `flagd-redis-sync validate FILE…`: judges documents exactly as the service does.

use crate::config::ValidateArgs;
use crate::flags;
use std::io::Read;

/// Prints one line per file; returns whether all were valid.
pub fn run(args: &ValidateArgs) -> bool {
    let opts = flags::Options {
        max_bytes: args.max_payload_bytes,
        normalize: !args.no_normalize,
    };
    let mut all_ok = true;
    for path in &args.files {
        let name = path.display().to_string();
        let bytes = if name == "-" {
            let mut b = Vec::new();
            std::io::stdin().read_to_end(&mut b).map(|_| b)
        } else {
            std::fs::read(path)
        };
        match bytes {
            Err(e) => {
                all_ok = false;
                eprintln!("{name}: cannot read: {e}");
            }
            Ok(bytes) => match flags::parse(&bytes, &opts) {
                Ok(doc) => println!(
                    "{name}: ok ({} flags, digest {})",
                    doc.flag_count,
                    doc.digest.short()
                ),
                Err(e) => {
                    all_ok = false;
                    eprintln!("{name}: refused: {e}");
                }
            },
        }
    }
    all_ok
}
