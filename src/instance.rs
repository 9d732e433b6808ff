//! The single-instance lock on `data_dir` (`data_dir/hush.lock`): one hush at a time per ledger, session and crypto store.
//!
//! An exclusive advisory lock (`flock(LOCK_EX | LOCK_NB)`, through `File::try_lock`) on
//! an open file: the OS releases it when the file is closed, so when hush exits however
//! it ends (kill -9 included), and no stale lock file can keep the next start out.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The lock file's name in `data_dir`.
pub const LOCK_FILE: &str = "hush.lock";

/// The lock, held as long as this value lives (keep it for the process's life).
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
    path: PathBuf,
}

impl InstanceLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Takes the lock on `data_dir` (created if missing), or fails at once, naming `data_dir`,
/// when another process (another hush) holds it. Writes this process's id into the file.
pub fn lock(data_dir: &Path) -> Result<InstanceLock> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;
    let path = data_dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            let holder = if pid.is_empty() { String::new() } else { format!(" (pid {pid})") };
            bail!(
                "another hush{holder} is running on data_dir {}: it holds {}. Stop it first, or give this one \
                 another data_dir (two processes would share one ledger and crypto store)",
                data_dir.display(),
                path.display()
            );
        }
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    // For operators (and the message above): which process holds it. Not needed for the lock.
    let _ = file.set_len(0).and_then(|()| file.rewind()).and_then(|()| writeln!(file, "{}", std::process::id()));
    Ok(InstanceLock { _file: file, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// flock locks belong to an open file description: a second open and lock of the same
    /// file conflicts even in the same process, as a second hush would.
    #[test]
    fn a_second_lock_on_the_same_data_dir_is_refused_until_the_first_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let first = lock(&data_dir).expect("the first lock, creating data_dir");
        assert_eq!(first.path(), data_dir.join("hush.lock"));

        let err = format!("{:#}", lock(&data_dir).expect_err("a second lock on the same data_dir"));
        assert!(err.contains(&format!("another hush (pid {}) is running on data_dir", std::process::id())), "{err}");
        assert!(err.contains(&data_dir.display().to_string()), "{err}");

        let other = lock(&dir.path().join("other")).expect("another data_dir is free");
        drop(first);
        let again = lock(&data_dir).expect("released with its file");
        drop((other, again));
    }
}
