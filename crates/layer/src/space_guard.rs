//! The bound on how far an archive may expand: never past the free space of the filesystem it
//! is extracted onto, less a reserve. A decompression bomb (a few KB of zstd or xz unpacking to
//! terabytes of zeros) then stops with an error naming the archive's expansion, while the
//! store's disk keeps room for everything else. Legitimate archives are never refused for their
//! ratio: only for not fitting.

use std::io::{self, Read};
use std::os::fd::OwnedFd;

/// How often (in expanded bytes) the free space is looked at.
const CHECK_EVERY: u64 = 8 << 20;
/// The reserve: this share of the filesystem's size...
const RESERVE_PERCENT: u64 = 5;
/// ...but never more than this.
const MAX_RESERVE: u64 = 1 << 30;

/// Passes the decompressed stream through, failing once the free space of `dir`'s filesystem
/// falls below the reserve.
pub(crate) struct SpaceGuard<R> {
    inner: R,
    dir: OwnedFd,
    expanded: u64,
    next_check: u64,
}

impl<R> SpaceGuard<R> {
    pub(crate) fn new(inner: R, dir: OwnedFd) -> SpaceGuard<R> {
        SpaceGuard {
            inner,
            dir,
            expanded: 0,
            next_check: CHECK_EVERY,
        }
    }

    fn check(&self) -> io::Result<()> {
        let stat = rustix::fs::fstatvfs(&self.dir)?;
        let block = stat.f_frsize.max(1);
        let size = stat.f_blocks.saturating_mul(block);
        let free = stat.f_bavail.saturating_mul(block);
        let reserve = reserve_for(size);
        if free < reserve {
            return Err(io::Error::other(format!(
                "the archive expanded to more than {} MiB and the disk it is extracted onto has \
                 only {} MiB left (kiln keeps {} MiB free): refusing to go on (a decompression \
                 bomb?)",
                self.expanded >> 20,
                free >> 20,
                reserve >> 20
            )));
        }
        Ok(())
    }
}

/// The directory whose filesystem a guard watches, opened for `fstatvfs`.
pub(crate) fn guard_dir(dir: &std::path::Path) -> Result<OwnedFd, crate::LayerError> {
    rustix::fs::open(
        dir,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| crate::LayerError::io(dir)(e.into()))
}

fn reserve_for(filesystem_size: u64) -> u64 {
    (filesystem_size / 100 * RESERVE_PERCENT).min(MAX_RESERVE)
}

impl<R: Read> Read for SpaceGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.expanded += n as u64;
        if self.expanded >= self.next_check {
            self.next_check = self.expanded + CHECK_EVERY;
            self.check()?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_a_share_of_the_disk_capped_at_a_gibibyte() {
        assert_eq!(reserve_for(100 << 20), 5 << 20);
        assert_eq!(reserve_for(1 << 40), 1 << 30);
        assert_eq!(reserve_for(0), 0);
    }

    #[test]
    fn a_stream_passes_while_the_disk_has_room() {
        let dir = tempfile::tempdir().unwrap();
        let fd = rustix::fs::open(
            dir.path(),
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        let mut guard = SpaceGuard::new(io::repeat(0).take(20 << 20), fd);
        let copied = io::copy(&mut guard, &mut io::sink()).unwrap();
        assert_eq!(copied, 20 << 20);
        assert!(guard.expanded >= 20 << 20);
    }
}
