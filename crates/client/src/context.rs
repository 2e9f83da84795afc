//! A build context as the request body of `POST /build`: a tar written on a thread of its own
//! while the request is being sent, so a large context streams instead of being held in memory
//! or in a temporary file, and the daemon starts unpacking at once.
//!
//! Which files go in is the caller's `.dockerignore` (a [`ContextFilter`]: the matcher lives
//! with the builder, which applies the same rules to a local build). As with the docker CLI,
//! the Dockerfile and `.dockerignore` are sent even when ignored (the daemon needs them), and
//! a Dockerfile outside the context is added under a name of its own.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::{mpsc, oneshot};

use crate::error::ClientError;
use crate::transport::Body;

/// Decides which paths of a context directory the build sees (`/`-separated, relative).
pub trait ContextFilter: Send + 'static {
    fn excluded(&self, rel_path: &str) -> bool;
    /// Whether something below an excluded directory may still be included (an exception
    /// pattern), so the directory must be walked.
    fn may_include_below(&self, rel_dir: &str) -> bool;
}

/// Sends every file.
#[derive(Debug, Clone, Copy, Default)]
pub struct EverythingFilter;

impl ContextFilter for EverythingFilter {
    fn excluded(&self, _: &str) -> bool {
        false
    }
    fn may_include_below(&self, _: &str) -> bool {
        true
    }
}

/// A context being written: the body to send, the Dockerfile's name inside it, and how the
/// writing ended.
#[derive(Debug)]
pub struct Context {
    pub(crate) body: Body,
    /// The `dockerfile` query parameter: the Dockerfile's path inside the tar.
    pub dockerfile: String,
    pub(crate) done: oneshot::Receiver<Result<(), ClientError>>,
}

/// Chunks of this size go to the request as they fill.
const CHUNK: usize = 64 * 1024;

type Chunk = Result<Frame<Bytes>, std::io::Error>;

/// An `io::Write` whose bytes become body chunks. Once the request is gone (the daemon
/// answered, or the connection failed), writes fail with [`Closed`] and the writer stops.
struct ChannelWriter {
    tx: mpsc::Sender<Chunk>,
    buf: Vec<u8>,
}

/// The marker error of a writer whose request went away: not a context error.
#[derive(Debug)]
struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request ended")
    }
}

impl std::error::Error for Closed {}

impl ChannelWriter {
    fn send_buf(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(Frame::data(chunk)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, Closed))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send_buf()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_buf()
    }
}

fn is_closed(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Closed>())
}

/// Starts `write` on a thread, writing into the body it returns. A real error ends the body
/// with an error (so the daemon never sees a tar cut short as complete) and is reported
/// through the receiver; the request going away first is not an error.
fn spawn_writer(
    write: impl FnOnce(&mut ChannelWriter) -> Result<(), ClientError> + Send + 'static,
) -> (Body, oneshot::Receiver<Result<(), ClientError>>) {
    let (tx, rx) = mpsc::channel::<Chunk>(4);
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::spawn(move || {
        let mut writer = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let result = write(&mut writer).and_then(|()| {
            writer.flush().map_err(|source| ClientError::Context {
                path: PathBuf::from("-"),
                source,
            })
        });
        let result = match result {
            Err(ClientError::Context { source, .. }) if is_closed(&source) => Ok(()),
            Err(e) => {
                let _ = tx.blocking_send(Err(std::io::Error::other(
                    "the request body could not be read",
                )));
                Err(e)
            }
            Ok(()) => Ok(()),
        };
        let _ = done_tx.send(result);
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    (StreamBody::new(stream).boxed(), done_rx)
}

/// A request body read from a file or stdin while it is sent (an archive to load, a root
/// filesystem to import), never held whole in memory.
#[derive(Debug)]
pub struct Upload {
    pub(crate) body: Body,
    pub(crate) done: oneshot::Receiver<Result<(), ClientError>>,
}

impl Upload {
    /// `reader`'s bytes as they are read; `path` names it in a read error (`-` for stdin).
    pub fn new(mut reader: impl Read + Send + 'static, path: &Path) -> Upload {
        let path = path.to_owned();
        let (body, done) = spawn_writer(move |w| {
            std::io::copy(&mut reader, w)
                .map_err(|source| ClientError::Context { path, source })?;
            Ok(())
        });
        Upload { body, done }
    }

    /// The reader's own error when it failed (the request then failed for that reason, with
    /// a less telling error of its own), else `result`.
    pub(crate) async fn finish<T>(
        done: oneshot::Receiver<Result<(), ClientError>>,
        result: Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        // The writer has finished (or stops at its next write) once the body is gone.
        if let Ok(Ok(Err(read_error))) =
            tokio::time::timeout(std::time::Duration::from_secs(10), done).await
        {
            return Err(read_error);
        }
        result
    }
}

/// A context that is already a tar (`kiln build -`): passed through as it is read.
pub fn from_tar(reader: impl Read + Send + 'static, dockerfile: &str) -> Context {
    let Upload { body, done } = Upload::new(reader, Path::new("-"));
    Context {
        body,
        dockerfile: dockerfile.to_owned(),
        done,
    }
}

/// The context directory `dir` as a tar, minus what `filter` excludes; `dockerfile` (default
/// `dir/Dockerfile`) is always included.
pub fn from_dir(
    dir: &Path,
    dockerfile: Option<&Path>,
    filter: impl ContextFilter,
) -> Result<Context, ClientError> {
    let context_err = |path: &Path| {
        let path = path.to_owned();
        move |source| ClientError::Context { path, source }
    };
    let root = std::fs::canonicalize(dir).map_err(context_err(dir))?;
    if !root.is_dir() {
        return Err(ClientError::Context {
            path: dir.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    let file = dockerfile
        .map(Path::to_owned)
        .unwrap_or_else(|| root.join("Dockerfile"));
    if !file.is_file() {
        return Err(ClientError::NoDockerfile { path: file });
    }
    let file = std::fs::canonicalize(&file).map_err(context_err(&file))?;
    // Inside the context: sent as the file it is. Outside: added under a fresh name.
    let (name, outside) = match file.strip_prefix(&root) {
        Ok(rel) => (slash_path(rel), None),
        Err(_) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let data = std::fs::read(&file).map_err(context_err(&file))?;
            (
                format!(".kiln-dockerfile-{}-{nanos:08x}", std::process::id()),
                Some(data),
            )
        }
    };
    let keep = name.clone();
    let (body, done) = spawn_writer(move |w| {
        let mut tar = tar::Builder::new(w);
        tar.follow_symlinks(false);
        let walk = Walk {
            filter: &filter,
            always: [keep.as_str(), ".dockerignore"],
        };
        walk.dir(&mut tar, &root, "")?;
        if let Some(data) = outside {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mtime(0);
            tar.append_data(&mut header, &keep, data.as_slice())
                .map_err(context_err(&file))?;
        }
        tar.into_inner()
            .map_err(context_err(&root))?
            .flush()
            .map_err(context_err(&root))
    });
    Ok(Context {
        body,
        dockerfile: name,
        done,
    })
}

fn slash_path(rel: &Path) -> String {
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

struct Walk<'a, F> {
    filter: &'a F,
    /// Paths sent whatever the filter says.
    always: [&'a str; 2],
}

impl<F: ContextFilter> Walk<'_, F> {
    fn dir<W: Write>(
        &self,
        tar: &mut tar::Builder<W>,
        dir: &Path,
        rel_dir: &str,
    ) -> Result<(), ClientError> {
        let err = |path: &Path| {
            let path = path.to_owned();
            move |source| ClientError::Context { path, source }
        };
        let mut entries = std::fs::read_dir(dir)
            .map_err(err(dir))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(err(dir))?;
        // Sorted, so the same context gives the same tar.
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if rel_dir.is_empty() {
                name
            } else {
                format!("{rel_dir}/{name}")
            };
            let kind = entry.file_type().map_err(err(&path))?;
            let excluded = !self.always.contains(&rel.as_str()) && self.filter.excluded(&rel);
            if kind.is_dir() {
                if excluded && !self.filter.may_include_below(&rel) {
                    continue;
                }
                if !excluded {
                    tar.append_path_with_name(&path, &rel).map_err(err(&path))?;
                }
                self.dir(tar, &path, &rel)?;
            } else if !excluded && (kind.is_file() || kind.is_symlink()) {
                tar.append_path_with_name(&path, &rel).map_err(err(&path))?;
            }
            // Sockets, FIFOs and device nodes are not build input; the daemon refuses devices.
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ignore(Vec<&'static str>);

    impl ContextFilter for Ignore {
        fn excluded(&self, rel: &str) -> bool {
            self.0
                .iter()
                .any(|p| rel == *p || rel.starts_with(&format!("{p}/")))
        }
        fn may_include_below(&self, _: &str) -> bool {
            false
        }
    }

    async fn names(context: Context) -> Vec<String> {
        let bytes = context.body.collect().await.unwrap().to_bytes();
        context.done.await.unwrap().unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[tokio::test]
    async fn ignored_files_stay_home_but_the_dockerfile_goes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(d.join(".dockerignore"), "secret\nDockerfile\n").unwrap();
        std::fs::create_dir_all(d.join("src/deep")).unwrap();
        std::fs::write(d.join("src/deep/a.txt"), "a").unwrap();
        std::fs::write(d.join("secret"), "no").unwrap();
        std::fs::create_dir(d.join("target")).unwrap();
        std::fs::write(d.join("target/big"), "no").unwrap();
        std::os::unix::fs::symlink("src/deep/a.txt", d.join("link")).unwrap();
        let context = from_dir(
            d,
            None,
            Ignore(vec!["secret", "target", "Dockerfile", ".dockerignore"]),
        )
        .unwrap();
        assert_eq!(context.dockerfile, "Dockerfile");
        assert_eq!(
            names(context).await,
            [
                ".dockerignore",
                "Dockerfile",
                "link",
                "src",
                "src/deep",
                "src/deep/a.txt"
            ]
        );
    }

    #[tokio::test]
    async fn a_dockerfile_outside_the_context_is_added() {
        let ctx = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        std::fs::write(ctx.path().join("a"), "a").unwrap();
        std::fs::write(other.path().join("build.Dockerfile"), "FROM scratch\n").unwrap();
        let context = from_dir(
            ctx.path(),
            Some(&other.path().join("build.Dockerfile")),
            EverythingFilter,
        )
        .unwrap();
        let name = context.dockerfile.clone();
        assert!(name.starts_with(".kiln-dockerfile-"), "{name}");
        assert_eq!(names(context).await, ["a".to_owned(), name]);
    }

    #[test]
    fn a_missing_dockerfile_is_named() {
        let ctx = tempfile::tempdir().unwrap();
        let err = from_dir(ctx.path(), None, EverythingFilter).unwrap_err();
        assert!(err.to_string().contains("Dockerfile"), "{err}");
        let err = from_dir(&ctx.path().join("nothere"), None, EverythingFilter).unwrap_err();
        assert!(err.to_string().contains("nothere"), "{err}");
    }

    #[tokio::test]
    async fn a_read_error_fails_the_body_and_is_reported() {
        let reader = FailingReader(2);
        let context = from_tar(reader, "Dockerfile");
        assert!(context.body.collect().await.is_err());
        let err = context.done.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("disk on fire"), "{err}");
    }

    struct FailingReader(u8);

    impl Read for FailingReader {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("disk on fire"));
            }
            self.0 -= 1;
            buf[..4].copy_from_slice(b"abcd");
            Ok(4)
        }
    }
}
