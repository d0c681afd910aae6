//! Times the validation of generated realistic documents (25 / 250 / 2,500 flags) and of
//! the bench's padded 1 MB document (13,000 tiny flags), whole (`flags::parse`), memoised
//! (`flags::Memo`: its first fill, as at start-up; one flag changed per write; the same
//! bytes again), with the phases of the whole parse:
//! `cargo run --release -p integration --example docperf`.

use flagd_redis_sync::flags::{self, Digest, Memo, Options};
use integration::realistic::document;
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

fn time<T>(rounds: usize, mut f: impl FnMut(usize) -> T) -> f64 {
    median(
        (0..rounds)
            .map(|i| {
                let t = Instant::now();
                std::hint::black_box(f(i));
                t.elapsed()
            })
            .collect(),
    )
}

/// The bench's padded document (`make_doc` in bench.rs): tiny flags up to `size` bytes.
fn padded(marker: u32, size: usize) -> String {
    use std::fmt::Write as _;
    let mut s = format!(
        r#"{{"flags":{{"bench-marker":{{"defaultVariant":"v","state":"ENABLED","variants":{{"v":"MARK{marker:09}"}}}}"#
    );
    let mut i = 0;
    while s.len() + 2 < size {
        write!(
            s,
            r#","f{i:06}":{{"defaultVariant":"off","state":"ENABLED","variants":{{"off":false,"on":true}}}}"#
        )
        .expect("writing to a String");
        i += 1;
    }
    s.push_str("}}");
    s
}

fn main() {
    let opts = Options::default();
    println!("| document | bytes | whole parse | memo, first fill | memo, 1 flag changed | memo, same bytes | JSON -> tree | tree -> canonical | SHA-256 | free tree |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    type Make = fn(u32) -> String;
    let shapes: [(&str, Make); 4] = [
        ("25 flags", |m| document(25, m)),
        ("250 flags", |m| document(250, m)),
        ("2,500 flags", |m| document(2500, m)),
        ("1 MB padded", |m| padded(m, 1024 * 1024)),
    ];
    for (name, make) in shapes {
        let rounds = if name.contains("2,500") || name.contains("MB") {
            30
        } else {
            200
        };
        let docs: Vec<String> = (0..=rounds as u32).map(make).collect();
        let whole = time(rounds, |i| flags::parse(docs[i].as_bytes(), &opts).unwrap());
        let first = time(rounds.min(30), |i| {
            Memo::new(opts).parse(docs[i].as_bytes()).unwrap()
        });
        let mut memo = Memo::new(opts);
        memo.parse(docs[0].as_bytes()).unwrap();
        let changed = time(rounds, |i| memo.parse(docs[i + 1].as_bytes()).unwrap());
        let before = memo.stats;
        let same = time(rounds, |_| memo.parse(docs[rounds].as_bytes()).unwrap());
        assert_eq!(
            memo.stats.validated, before.validated,
            "same bytes validate nothing"
        );
        let tree = time(rounds, |i| {
            serde_json::from_str::<serde_json::Value>(&docs[i]).unwrap()
        });
        let value: serde_json::Value = serde_json::from_str(&docs[0]).unwrap();
        let ser = time(rounds, |_| serde_json::to_string(&value).unwrap());
        let sha = time(rounds, |i| Digest::of(docs[i].as_bytes()));
        let free = median(
            (0..rounds)
                .map(|_| {
                    let v = value.clone();
                    let t = Instant::now();
                    drop(v);
                    t.elapsed()
                })
                .collect(),
        );
        println!(
            "| {name} | {} | {whole:.2} ms | {first:.2} ms | {changed:.2} ms | {same:.2} ms | {tree:.2} ms | {ser:.2} ms | {sha:.2} ms | {free:.2} ms |",
            docs[0].len()
        );
    }
}
