//! Hashes a whole build context the way `COPY . /dst` does, with the store's metadata cache,
//! and prints what it cost as one JSON line. Used by `bench/context.sh`.
//!
//! ```text
//! cargo run --release -p kiln-solve --example hash_context -- STORE_DIR CONTEXT_DIR
//! ```

use std::path::PathBuf;
use std::time::Instant;

use kiln_solve::context::BuildContext;
use kiln_store::Store;

fn main() {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(store_dir), Some(context_dir)) = (args.next(), args.next()) else {
        eprintln!("usage: hash_context STORE_DIR CONTEXT_DIR");
        std::process::exit(2);
    };
    let store = Store::open(&store_dir).expect("open store");
    let started = Instant::now();
    let context = BuildContext::open(&context_dir)
        .expect("open context")
        .with_digest_cache(&store);
    let sources = context
        .resolve_sources(&[".".to_string()])
        .expect("resolve .");
    let hashed = context.digest_sources(&sources, false).expect("hash");
    let hash_seconds = started.elapsed().as_secs_f64();
    context.save_digest_cache(&store).expect("save cache");
    let total_seconds = started.elapsed().as_secs_f64();
    // What the kernel counted: rchar is every byte read() returned (page cache included),
    // read_bytes what had to come from the disk.
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let field = |name: &str| {
        io.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    println!(
        "{{\"digest\":\"{}\",\"entries\":{},\"files\":{},\"files_read\":{},\"bytes_read\":{},\
         \"hash_seconds\":{hash_seconds:.4},\"total_seconds\":{total_seconds:.4},\
         \"proc_rchar\":{},\"proc_read_bytes\":{}}}",
        hashed.digest,
        hashed.stats.entries,
        hashed.stats.files,
        hashed.stats.files_read,
        hashed.stats.bytes_read,
        field("rchar:"),
        field("read_bytes:"),
    );
}
