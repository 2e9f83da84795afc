//! Compression throughput of kiln's layer encoder on real corpora, one table row per setting:
//! MB/s of uncompressed input per thread count, and the ratio. Also the single-stream (unchunked)
//! encoders, to show what chunking costs in ratio.
//!
//! Usage: `cargo bench -p kiln-layer --bench compress -- CORPUS…` (bench/compress.sh builds the
//! corpora and runs this). Each corpus is read into memory first so only compression is timed.

use std::io::Write;
use std::time::Instant;

use kiln_layer::{Compression, compress_stream};

/// Best of `runs` timings of `f`, in seconds (the least disturbed run on a shared machine).
fn best_of(runs: usize, mut f: impl FnMut() -> usize) -> (f64, usize) {
    let mut best = f64::MAX;
    let mut size = 0;
    for _ in 0..runs {
        let start = Instant::now();
        size = f();
        best = best.min(start.elapsed().as_secs_f64());
    }
    (best, size)
}

fn mbps(bytes: usize, secs: f64) -> String {
    format!("{:.0}", bytes as f64 / secs / 1e6)
}

fn main() {
    let corpora: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if corpora.is_empty() {
        eprintln!("usage: cargo bench -p kiln-layer --bench compress -- CORPUS...");
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2);
    let settings = [
        Compression::Gzip { level: 1 },
        Compression::Gzip { level: 6 },
        Compression::Gzip { level: 9 },
        Compression::Zstd { level: 1 },
        Compression::Zstd { level: 3 },
        Compression::Zstd { level: 9 },
    ];
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    for corpus in &corpora {
        let data = std::fs::read(corpus).unwrap_or_else(|e| panic!("{corpus}: {e}"));
        println!(
            "\ncorpus {corpus}: {:.0} MB, best of {runs}, {cpus} CPUs",
            data.len() as f64 / 1e6
        );
        println!(
            "| setting | 1 thread MB/s | {cpus} threads MB/s | speedup | ratio | unchunked MB/s | unchunked ratio |"
        );
        println!("|---|---|---|---|---|---|---|");
        let (sha_secs, _) = best_of(runs, || {
            let mut h = kiln_image::Sha256Hasher::new();
            h.update(&data);
            h.finish();
            0
        });
        for setting in settings {
            let chunked = |threads| {
                best_of(runs, || {
                    let (out, _) =
                        compress_stream(&data[..], Vec::new(), setting, threads).unwrap();
                    out.len()
                })
            };
            let (one, size) = chunked(1);
            let (many, _) = chunked(cpus);
            let (whole, whole_size) = best_of(runs, || match setting {
                Compression::Gzip { level } => {
                    let mut enc =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
                    enc.write_all(&data).unwrap();
                    enc.finish().unwrap().len()
                }
                Compression::Zstd { level } => {
                    zstd::stream::encode_all(&data[..], level).unwrap().len()
                }
                Compression::None => data.len(),
            });
            println!(
                "| {} | {} | {} | {:.2}× | {:.3} | {} | {:.3} |",
                setting.setting_name(),
                mbps(data.len(), one),
                mbps(data.len(), many),
                one / many,
                size as f64 / data.len() as f64,
                mbps(data.len(), whole),
                whole_size as f64 / data.len() as f64,
            );
        }
        println!(
            "| sha256 (diffID/digest) | {} | | | | | |",
            mbps(data.len(), sha_secs)
        );
    }
}
