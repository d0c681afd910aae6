//! Times the validation of generated realistic documents (25 / 250 / 2,500 flags), whole
//! (`flags::parse`) and memoised (`flags::Memo`, one flag changed per write), with the
//! phases of the whole parse: `cargo run --release -p integration --example docperf`.

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

fn main() {
    let opts = Options::default();
    println!("| flags | bytes | whole parse | memo, 1 flag changed | memo, same bytes | JSON -> tree | tree -> canonical | SHA-256 | free tree |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for n in [25, 250, 2500] {
        let rounds = if n > 1000 { 30 } else { 200 };
        let docs: Vec<String> = (0..=rounds as u32).map(|m| document(n, m)).collect();
        let whole = time(rounds, |i| flags::parse(docs[i].as_bytes(), &opts).unwrap());
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
            "| {n} | {} | {whole:.2} ms | {changed:.2} ms | {same:.2} ms | {tree:.2} ms | {ser:.2} ms | {sha:.2} ms | {free:.2} ms |",
            docs[0].len()
        );
    }
}
