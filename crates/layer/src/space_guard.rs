//! The bound on how far an archive may expand: never past the free space of the filesystem it
//! is extracted onto, less a reserve. A decompression bomb (a few KB of zstd or xz unpacking to
//! terabytes of zeros) then stops with an error naming the archive's expansion, while the
//! store's disk keeps room for everything else. Legitimate archives are never refused for their
//! ratio: only for not fitting.

use std::io::{self, Read};
use std::os::fd::OwnedFd;

/// The reserve: this share of the filesystem's size...
const RESERVE_PERCENT: u64 = 2;
/// ...but never more than this (a nearly full disk still takes what fits).
const MAX_RESERVE: u64 = 256 << 20;
/// The free space is looked at every half reserve of expanded bytes, within these bounds, so
/// the reserve cannot be overrun between two looks.
const CHECK_EVERY: (u64, u64) = (256 << 10, 8 << 20);

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
            next_check: 0,
        }
    }

    /// Looks at the free space; returns how many more bytes may pass before the next look.
    fn check(&self) -> io::Result<u64> {
        let stat = rustix::fs::fstatvfs(&self.dir)?;
        let block = stat.f_frsize.max(1);
        let size = stat.f_blocks.saturating_mul(block);
        let free = stat.f_bavail.saturating_mul(block);
        judge(self.expanded, size, free)
    }
}

/// The verdict for an archive that has expanded to `expanded` bytes on a filesystem of `size`
/// bytes with `free` left: an error below the reserve, else the bytes until the next look.
fn judge(expanded: u64, size: u64, free: u64) -> io::Result<u64> {
    let reserve = (size / 100 * RESERVE_PERCENT).min(MAX_RESERVE);
    if free < reserve {
        return Err(io::Error::other(format!(
            "the archive expanded to more than {} MiB and the disk it is extracted onto has only \
             {} MiB left (kiln keeps {} MiB free): refusing to go on (a decompression bomb?)",
            expanded >> 20,
            free >> 20,
            reserve >> 20
        )));
    }
    Ok((reserve / 2).clamp(CHECK_EVERY.0, CHECK_EVERY.1))
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

impl<R: Read> Read for SpaceGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.expanded += n as u64;
        if self.expanded >= self.next_check {
            self.next_check = self.expanded + self.check()?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_reserve_is_a_share_of_the_disk_capped() {
        // 2% of 128 MiB is 2.56 MiB: 3 MiB free passes, 2 MiB does not.
        assert!(judge(100 * MIB, 128 * MIB, 3 * MIB).is_ok());
        let err = judge(100 * MIB, 128 * MIB, 2 * MIB)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("decompression bomb") && err.contains("100 MiB"),
            "{err}"
        );
        // A big disk keeps at most 256 MiB.
        assert!(judge(0, 1 << 40, 300 * MIB).is_ok());
        assert!(judge(0, 1 << 40, 200 * MIB).is_err());
    }

    #[test]
    fn looks_come_often_enough_not_to_overrun_the_reserve() {
        assert_eq!(
            judge(0, 128 * MIB, 100 * MIB).unwrap(),
            (128 * MIB / 100 * 2) / 2
        );
        assert_eq!(judge(0, 1 << 40, 1 << 39).unwrap(), 8 * MIB);
        assert_eq!(judge(0, MIB, MIB).unwrap(), 256 << 10);
    }

    #[test]
    fn the_guard_passes_the_stream_through() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3 * MIB).map(|i| i as u8).collect();
        let mut guard = SpaceGuard::new(&data[..], guard_dir(dir.path()).unwrap());
        let mut out = Vec::new();
        // The host's disk may be nearly full: then the guard's own error is the right answer.
        match io::copy(&mut guard, &mut out) {
            Ok(n) => assert_eq!((n, out), (data.len() as u64, data)),
            Err(e) => assert!(e.to_string().contains("decompression bomb"), "{e}"),
        }
    }
}
