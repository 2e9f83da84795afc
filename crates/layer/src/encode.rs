//! The compressing stage in front of a layer's blob writer: parallel for big layers, with output
//! bytes that never depend on the number of threads, so layer digests stay reproducible across
//! machines.
//!
//! - gzip: the stream is cut into 1 MiB chunks and each is compressed on its own into one gzip
//!   member (pigz-like parallelism; concatenated members are one valid gzip stream, RFC 1952
//!   §2.2, read by every layer consumer: Go's `gzip.Reader` is multi-stream by default). A chunk's
//!   output depends only on its input. Chunks are compressed on a small pool of worker threads,
//!   started only once a layer has filled its first chunk, and written out in order, with at most
//!   `2 × threads` in flight, so memory stays bounded however big the layer. A layer smaller
//!   than one chunk is one plain gzip member, compressed on the caller's thread.
//! - zstd: zstd's own multi-threaded streaming mode (`zstdmt`): jobs of a few MiB with
//!   overlapping windows, so the ratio stays within a fraction of a percent of one stream
//!   (independent 4 MiB frames lost up to 35% on source text). Its output is the same for any
//!   number of workers ≥ 1 (facebook/zstd#2238, #2327), so kiln always uses at least one.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use crate::LayerError;
use crate::compression::Compression;

/// Uncompressed bytes per gzip member. Each member restarts deflate's 32 KiB window, so 1 MiB
/// costs well under 1% of ratio while giving a pool enough chunks to share out.
pub(crate) const GZIP_CHUNK: usize = 1 << 20;

/// How many threads compress one layer: `KILN_COMPRESSION_THREADS` if set (≥ 1), else the
/// number of CPUs the process may use.
pub fn compression_threads() -> usize {
    std::env::var("KILN_COMPRESSION_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n >= 1)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Compresses all of `input` into `output` as a layer blob would be (same chunking), on
/// `threads` threads. Returns `output` and the number of uncompressed bytes read. For tools and
/// benchmarks; layers are written through [`crate::write_layer`].
pub fn compress_stream<R: io::Read, W: Write>(
    mut input: R,
    output: W,
    compression: Compression,
    threads: usize,
) -> Result<(W, u64), LayerError> {
    let mut encoder = Encoder::with_threads(output, compression, threads)?;
    let read = io::copy(&mut input, &mut encoder).map_err(LayerError::Archive)?;
    let output = encoder.finish().map_err(LayerError::Archive)?;
    Ok((output, read))
}

/// Compresses what is written to it into `W`. [`Encoder::finish`] must be called to write the
/// last chunk; dropping an unfinished encoder stops its workers and discards the rest.
pub(crate) struct Encoder<W: Write> {
    sink: Sink<W>,
    compression: Compression,
    chunk_size: usize,
    /// The chunk being filled.
    current: Vec<u8>,
    threads: usize,
    /// Compressor used on the caller's thread (single-threaded layers, and the last chunk when
    /// no pool was started).
    local: Option<ChunkCompressor>,
    pool: Option<Pool>,
    /// Results of submitted chunks, oldest first.
    in_flight: VecDeque<mpsc::Receiver<io::Result<Vec<u8>>>>,
    /// Whether any compressed output was written, so an empty stream still gets one (empty)
    /// member or frame and is a valid compressed file.
    wrote_chunk: bool,
}

impl<W: Write> std::fmt::Debug for Encoder<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("compression", &self.compression)
            .field("threads", &self.threads)
            .field("in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

/// Where compressed (or, uncompressed, plain) bytes go.
enum Sink<W: Write> {
    /// Uncompressed, or gzip chunks written here in order.
    Direct(W),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    /// An encoder using [`compression_threads`] threads for big layers.
    pub(crate) fn new(sink: W, compression: Compression) -> Result<Self, LayerError> {
        Self::with_threads(sink, compression, compression_threads())
    }

    pub(crate) fn with_threads(
        sink: W,
        compression: Compression,
        threads: usize,
    ) -> Result<Self, LayerError> {
        compression.validate()?;
        let threads = threads.max(1);
        let chunk_size = match compression {
            Compression::Gzip { .. } => GZIP_CHUNK,
            Compression::None | Compression::Zstd { .. } => 0,
        };
        let sink = match compression {
            Compression::Zstd { level } => {
                let mut zstd =
                    zstd::stream::write::Encoder::new(sink, level).map_err(LayerError::Archive)?;
                zstd.multithread(u32::try_from(threads).unwrap_or(u32::MAX))
                    .map_err(LayerError::Archive)?;
                Sink::Zstd(zstd)
            }
            Compression::None | Compression::Gzip { .. } => Sink::Direct(sink),
        };
        Ok(Encoder {
            sink,
            compression,
            chunk_size,
            current: Vec::new(),
            threads,
            local: None,
            pool: None,
            in_flight: VecDeque::new(),
            wrote_chunk: false,
        })
    }

    /// Compresses the last chunk, waits for every chunk in flight and returns the sink.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        if let Compression::Gzip { .. } = self.compression {
            if !self.current.is_empty() || (!self.wrote_chunk && self.in_flight.is_empty()) {
                let chunk = std::mem::take(&mut self.current);
                if self.pool.is_some() {
                    self.submit(chunk)?;
                } else {
                    let out = self.compress_locally(&chunk)?;
                    self.drain(0)?;
                    self.write_out(&out)?;
                }
            }
            self.drain(0)?;
        }
        let Encoder { sink, .. } = self;
        let mut sink = match sink {
            Sink::Direct(w) => w,
            Sink::Zstd(zstd) => zstd.finish()?,
        };
        sink.flush()?;
        Ok(sink)
    }

    fn compress_locally(&mut self, chunk: &[u8]) -> io::Result<Vec<u8>> {
        let compression = self.compression;
        self.local
            .get_or_insert_with(|| ChunkCompressor::new(compression))
            .compress(chunk)
    }

    /// Hands a full chunk on: to the pool when there is one (starting it if allowed), else
    /// compressed here.
    fn submit(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        if self.threads == 1 {
            let out = self.compress_locally(&chunk)?;
            return self.write_out(&out);
        }
        let compression = self.compression;
        let threads = self.threads;
        let pool = self
            .pool
            .get_or_insert_with(|| Pool::start(compression, threads));
        let (reply, result) = mpsc::sync_channel(1);
        pool.send(Job { chunk, reply })?;
        self.in_flight.push_back(result);
        self.drain(2 * self.threads)
    }

    /// Writes finished chunks out in order until at most `keep` are in flight.
    fn drain(&mut self, keep: usize) -> io::Result<()> {
        while self.in_flight.len() > keep {
            let result = self.in_flight.pop_front().expect("checked non-empty");
            let out = result.recv().map_err(|_| {
                io::Error::other("a compression worker stopped without an answer")
            })??;
            self.write_out(&out)?;
        }
        Ok(())
    }

    fn write_out(&mut self, compressed: &[u8]) -> io::Result<()> {
        self.wrote_chunk = true;
        match &mut self.sink {
            Sink::Direct(w) => w.write_all(compressed),
            Sink::Zstd(_) => unreachable!("only gzip has chunks"),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.sink {
            Sink::Zstd(zstd) => return zstd.write(buf),
            Sink::Direct(w) if self.compression == Compression::None => return w.write(buf),
            Sink::Direct(_) => {}
        }
        // A full chunk is handed on only when more data follows it, so a layer of exactly one
        // chunk is compressed on this thread in `finish` without starting the pool.
        if self.current.len() == self.chunk_size {
            let chunk = std::mem::replace(&mut self.current, Vec::with_capacity(self.chunk_size));
            self.submit(chunk)?;
        }
        if self.current.capacity() == 0 {
            self.current.reserve_exact(self.chunk_size);
        }
        let n = buf.len().min(self.chunk_size - self.current.len());
        self.current.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // gzip chunks are only complete when full or at `finish`, and flushing zstd would end a
        // block early and change the output: flushing the sink is all there is.
        match &mut self.sink {
            Sink::Direct(w) => w.flush(),
            Sink::Zstd(zstd) => zstd.get_mut().flush(),
        }
    }
}

/// How much of a chunk the incompressibility trial deflates.
const TRIAL_BYTES: usize = 64 << 10;
/// Chunks shorter than this are compressed without a trial.
const MIN_TRIAL_BYTES: usize = 4 << 10;
/// A trial that keeps more than this share of its input (in percent) marks the chunk
/// incompressible: deflate would gain under 3% on it and cost ~30 ms per MiB at level 6.
const INCOMPRESSIBLE_PERCENT: usize = 97;

/// Compresses whole chunks into complete gzip members.
struct ChunkCompressor {
    level: u32,
    /// Deflate state for the trials, reset and reused from chunk to chunk.
    trial: flate2::Compress,
    trial_out: Vec<u8>,
}

impl ChunkCompressor {
    fn new(compression: Compression) -> Self {
        match compression {
            Compression::Gzip { level } => ChunkCompressor {
                level,
                trial: flate2::Compress::new(flate2::Compression::fast(), false),
                trial_out: Vec::new(),
            },
            Compression::None | Compression::Zstd { .. } => {
                unreachable!("only gzip streams are chunked here")
            }
        }
    }

    fn compress(&mut self, chunk: &[u8]) -> io::Result<Vec<u8>> {
        // Random or already-compressed data (archives, images, blobs) gains nothing from
        // deflate, which spends longest on exactly such data: such a chunk is written as
        // stored deflate blocks (level 0), still an ordinary gzip member, at copying speed. The
        // choice depends on the chunk's bytes alone, so the output stays reproducible.
        let level = if self.level > 0 && self.looks_incompressible(chunk) {
            0
        } else {
            self.level
        };
        let capacity = if level == 0 {
            chunk.len() + chunk.len() / 8192 + 64
        } else {
            chunk.len() / 2 + 64
        };
        // A fixed header (no name, mtime 0) so the bytes depend on the data alone.
        let mut member = flate2::GzBuilder::new().write(
            Vec::with_capacity(capacity),
            flate2::Compression::new(level),
        );
        member.write_all(chunk)?;
        member.finish()
    }

    /// Whether a fast deflate of the chunk's first [`TRIAL_BYTES`] keeps more than
    /// [`INCOMPRESSIBLE_PERCENT`] of them.
    fn looks_incompressible(&mut self, chunk: &[u8]) -> bool {
        let sample = &chunk[..chunk.len().min(TRIAL_BYTES)];
        if sample.len() < MIN_TRIAL_BYTES {
            return false;
        }
        self.trial.reset();
        // Room for the worst case (deflate's bound is the input plus a few bytes per block):
        // zlib-rs's fastest level must never run out of output space mid-stream.
        self.trial_out
            .resize(TRIAL_BYTES + TRIAL_BYTES / 8 + 1024, 0);
        let status =
            self.trial
                .compress(sample, &mut self.trial_out, flate2::FlushCompress::Finish);
        let written = usize::try_from(self.trial.total_out()).unwrap_or(usize::MAX);
        match status {
            Ok(flate2::Status::StreamEnd) => written * 100 > sample.len() * INCOMPRESSIBLE_PERCENT,
            // Cannot happen with that much room; storing is always a valid answer.
            Ok(_) | Err(_) => true,
        }
    }
}

/// One chunk to compress and where to send the result.
struct Job {
    chunk: Vec<u8>,
    reply: mpsc::SyncSender<io::Result<Vec<u8>>>,
}

/// Worker threads taking jobs from one queue. Dropping the pool closes the queue and joins them.
struct Pool {
    jobs: Option<mpsc::SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    fn start(compression: Compression, threads: usize) -> Pool {
        let (jobs, queue) = mpsc::sync_channel::<Job>(threads);
        let queue = Arc::new(Mutex::new(queue));
        let workers = (0..threads)
            .map(|_| {
                let queue = Arc::clone(&queue);
                std::thread::spawn(move || {
                    let mut compressor = ChunkCompressor::new(compression);
                    loop {
                        // The lock is held only while waiting for a job, not while compressing.
                        let job = match queue.lock() {
                            Ok(q) => q.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        // The encoder may have been dropped meanwhile; then nobody listens.
                        let _ = job.reply.send(compressor.compress(&job.chunk));
                    }
                })
            })
            .collect();
        Pool {
            jobs: Some(jobs),
            workers,
        }
    }

    fn send(&self, job: Job) -> io::Result<()> {
        self.jobs
            .as_ref()
            .expect("open until dropped")
            .send(job)
            .map_err(|_| io::Error::other("the compression workers have stopped"))
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::process::{Command, Stdio};

    use super::*;

    /// Compressible but not trivially so: text-like lines with varying numbers.
    fn sample(len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 64);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(format!("line {} value {:x}\n", x % 1000, x >> 40).as_bytes());
        }
        out.truncate(len);
        out
    }

    fn encode(data: &[u8], compression: Compression, threads: usize) -> Vec<u8> {
        let mut enc = Encoder::with_threads(Vec::new(), compression, threads).unwrap();
        // Odd-sized writes, so chunk boundaries fall inside writes.
        for piece in data.chunks(100_003) {
            enc.write_all(piece).unwrap();
        }
        enc.finish().unwrap()
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    /// Runs a decompressing CLI over `input` and returns its stdout.
    fn cli(program: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{program} (scripts/setup.sh installs it): {e}"));
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let feeder = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        assert!(out.status.success(), "{program} failed");
        out.stdout
    }

    #[test]
    fn gzip_chunks_are_members_any_reader_decodes_and_threads_do_not_change_bytes() {
        let data = sample(3 * GZIP_CHUNK + GZIP_CHUNK / 2);
        let one = encode(&data, Compression::Gzip { level: 6 }, 1);
        for threads in [2, 3, 8] {
            assert_eq!(encode(&data, Compression::Gzip { level: 6 }, threads), one);
        }
        assert_eq!(gunzip(&one), data);
        assert_eq!(cli("gzip", &["-dc"], &one), data);
        // Four members: count the member headers by decoding them one at a time.
        let mut members = 0;
        let mut rest = &one[..];
        while !rest.is_empty() {
            let mut dec = flate2::bufread::GzDecoder::new(rest);
            io::copy(&mut dec, &mut io::sink()).unwrap();
            rest = dec.into_inner();
            members += 1;
        }
        assert_eq!(members, 4);
        assert!(one.len() < data.len() / 2, "it does compress");
    }

    /// Bytes deflate cannot shrink (xorshift output), like random or compressed files.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// Each gzip member of `bytes`: its length and whether its first deflate block is stored.
    fn members(bytes: &[u8]) -> Vec<(usize, bool)> {
        let mut found = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            // kiln's members have a 10-byte header; then BFINAL (bit 0) and BTYPE (bits 1-2,
            // 00 = stored, RFC 1951 §3.2.3).
            let stored = rest[10] & 0b110 == 0;
            let mut dec = flate2::bufread::GzDecoder::new(rest);
            io::copy(&mut dec, &mut io::sink()).unwrap();
            let after = dec.into_inner();
            found.push((rest.len() - after.len(), stored));
            rest = after;
        }
        found
    }

    #[test]
    fn incompressible_chunks_are_stored_and_the_others_compressed() {
        let mut data = noise(2 * GZIP_CHUNK, 7);
        data.extend(sample(GZIP_CHUNK));
        data.extend(noise(GZIP_CHUNK / 2, 9));
        let one = encode(&data, Compression::Gzip { level: 6 }, 1);
        for threads in [2, 4] {
            assert_eq!(encode(&data, Compression::Gzip { level: 6 }, threads), one);
        }
        assert_eq!(gunzip(&one), data);
        assert_eq!(cli("gzip", &["-dc"], &one), data);
        let found = members(&one);
        let stored: Vec<bool> = found.iter().map(|m| m.1).collect();
        assert_eq!(stored, [true, true, false, true]);
        // Stored: the input plus 5 bytes per block (zlib-rs stores up to 32 KiB per block) and
        // the member's header and trailer.
        assert!(found[0].0 <= GZIP_CHUNK + 5 * 32 + 18, "{found:?}");
        assert!(found[2].0 < GZIP_CHUNK / 2, "{found:?}");
        // A layer of one incompressible chunk is stored too.
        let small = noise(100_000, 3);
        assert!(members(&encode(&small, Compression::Gzip { level: 9 }, 1))[0].1);
        let text = sample(100_000);
        assert!(!members(&encode(&text, Compression::Gzip { level: 1 }, 1))[0].1);
        // Text that is only partly noise still compresses.
        let mut mixed = sample(GZIP_CHUNK);
        for (i, byte) in noise(GZIP_CHUNK, 5).into_iter().enumerate() {
            if i % 4 == 0 {
                mixed[i] = byte;
            }
        }
        assert!(!members(&encode(&mixed, Compression::Gzip { level: 6 }, 1))[0].1);
    }

    #[test]
    fn a_layer_within_one_chunk_is_a_plain_single_member() {
        let data = sample(GZIP_CHUNK);
        let mut plain = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        plain.write_all(&data).unwrap();
        assert_eq!(
            encode(&data, Compression::Gzip { level: 6 }, 4),
            plain.finish().unwrap()
        );
    }

    #[test]
    fn zstd_any_reader_decodes_and_threads_do_not_change_bytes() {
        // Big enough for several zstdmt jobs at level 1 and 3.
        let data = sample(24 << 20);
        let one = encode(&data, Compression::Zstd { level: 3 }, 1);
        assert_eq!(encode(&data, Compression::Zstd { level: 3 }, 2), one);
        assert_eq!(encode(&data, Compression::Zstd { level: 3 }, 4), one);
        let small = sample(1000);
        assert_eq!(
            encode(&small, Compression::Zstd { level: 3 }, 3),
            encode(&small, Compression::Zstd { level: 3 }, 1)
        );
        assert_eq!(zstd::stream::decode_all(&one[..]).unwrap(), data);
        assert_eq!(cli("zstd", &["-dc"], &one), data);
        let fast = encode(&data, Compression::Zstd { level: 1 }, 2);
        assert_ne!(fast, one, "the level is applied");
        assert_eq!(fast, encode(&data, Compression::Zstd { level: 1 }, 1));
        assert_eq!(zstd::stream::decode_all(&fast[..]).unwrap(), data);
    }

    #[test]
    fn empty_and_uncompressed_streams() {
        assert_eq!(gunzip(&encode(b"", Compression::Gzip { level: 6 }, 2)), b"");
        let z = encode(b"", Compression::Zstd { level: 3 }, 2);
        assert_eq!(zstd::stream::decode_all(&z[..]).unwrap(), b"");
        let data = sample(GZIP_CHUNK + 1);
        assert_eq!(encode(&data, Compression::None, 4), data);
        assert!(Encoder::with_threads(Vec::new(), Compression::Zstd { level: 40 }, 1).is_err());
    }

    #[test]
    fn compress_stream_counts_input_and_matches_the_layer_encoder() {
        let data = sample(GZIP_CHUNK * 2 + 7);
        let (out, read) =
            compress_stream(&data[..], Vec::new(), Compression::Gzip { level: 6 }, 2).unwrap();
        assert_eq!(read, data.len() as u64);
        assert_eq!(out, encode(&data, Compression::Gzip { level: 6 }, 1));
    }

    /// A sink that fails after `left` bytes.
    struct FailingSink {
        left: usize,
    }

    impl Write for FailingSink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.left == 0 {
                return Err(io::Error::other("disk full"));
            }
            let n = buf.len().min(self.left);
            self.left -= n;
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failing_sink_is_an_error_not_a_hang() {
        let data = sample(6 * GZIP_CHUNK);
        for threads in [1, 3] {
            let mut enc = Encoder::with_threads(
                FailingSink { left: 1000 },
                Compression::Gzip { level: 1 },
                threads,
            )
            .unwrap();
            let result = enc.write_all(&data).and_then(|()| enc.finish().map(drop));
            assert_eq!(result.unwrap_err().to_string(), "disk full");
        }
    }
}
