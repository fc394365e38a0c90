//! The decision log's file: appended to, and what it has written let go of.
//!
//! The service never reads its decision log back, yet every page it writes stays in
//! the page cache until memory runs short, and each 4 KiB written needs a fresh page
//! of memory; on a virtual machine a fresh page is one the hypervisor must back first,
//! and that is where most of the log's cost went at full load (BENCHMARKS.md). So
//! every [`RELEASE_EVERY`] bytes the file is advised `POSIX_FADV_DONTNEED` from its
//! start: the kernel starts writing back what is dirty and drops what is already on
//! disk, and the next pages written reuse the memory just freed. Only pages already
//! written back are dropped: those written since the previous advice stay in memory
//! unless the kernel's own flusher wrote them back first (it writes dirty pages back
//! after about 30 s), so a reader tailing the file (a log shipper) finds the most
//! recent bytes in memory and older ones on disk. The advice changes no byte of the
//! file, and where it is refused the file is written as before.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// Bytes written between two releases of the file's pages.
pub const RELEASE_EVERY: u64 = 8 << 20;

/// A file opened for appending whose written pages are dropped from the page cache
/// once on disk (see the module).
#[derive(Debug)]
pub struct LogFile {
    file: File,
    release_every: u64,
    since_release: u64,
    releases: u64,
}

impl LogFile {
    /// Open `path` for appending (created if missing), releasing its pages every
    /// [`RELEASE_EVERY`] bytes.
    pub fn open(path: &Path) -> io::Result<Self> {
        Self::releasing_every(path, RELEASE_EVERY)
    }

    /// [`LogFile::open`], releasing every `bytes` (tests use small steps).
    fn releasing_every(path: &Path, bytes: u64) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self {
            file,
            release_every: bytes.max(1),
            since_release: 0,
            releases: 0,
        })
    }

    /// How many times the file's pages were released.
    #[cfg(test)]
    fn releases(&self) -> u64 {
        self.releases
    }

    fn release(&mut self) {
        self.since_release = 0;
        self.releases += 1;
        // Advice only: where it is refused the pages stay cached, as without it.
        #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
        let _ = rustix::fs::fadvise(&self.file, 0, None, rustix::fs::Advice::DontNeed);
    }
}

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.file.write(buf)?;
        self.since_release += written as u64;
        if self.since_release >= self.release_every {
            self.release();
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufWriter, Write};

    use super::LogFile;

    #[test]
    fn releasing_pages_keeps_every_byte_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("decisions.jsonl");
        std::fs::write(&path, b"an earlier line\n").expect("an earlier run's log");
        let mut expected = b"an earlier line\n".to_vec();
        let mut out = BufWriter::with_capacity(
            1000,
            LogFile::releasing_every(&path, 4096).expect("open the log file"),
        );
        for i in 0..5_000 {
            let line = format!("{{\"decision_id\":\"{i:08}\",\"decision\":\"allow\"}}\n");
            out.write_all(line.as_bytes()).expect("write");
            expected.extend_from_slice(line.as_bytes());
        }
        out.flush().expect("flush");
        let file = out.into_inner().expect("unbuffered");
        // ~200 KB written in steps of 4 KiB: released about fifty times.
        assert!(
            (40..=60).contains(&file.releases()),
            "releases: {}",
            file.releases()
        );
        assert_eq!(std::fs::read(&path).expect("read back"), expected);
    }

    #[test]
    fn a_file_truncated_underneath_is_still_appended_to() {
        // `logrotate`'s copytruncate: the file shrinks to nothing between two writes.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("decisions.jsonl");
        let mut log = LogFile::releasing_every(&path, 16).expect("open the log file");
        log.write_all(b"before rotation, long enough to release\n")
            .expect("write");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open to truncate")
            .set_len(0)
            .expect("truncate");
        log.write_all(b"after rotation, long enough to release too\n")
            .expect("write");
        assert_eq!(log.releases(), 2);
        assert_eq!(
            std::fs::read(&path).expect("read back"),
            b"after rotation, long enough to release too\n"
        );
    }
}
