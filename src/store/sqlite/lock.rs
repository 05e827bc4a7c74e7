//! One owner per state file: `herald run` holds an exclusive lock on `PATH.lock` for its
//! whole life, so a second daemon on the same state refuses to start instead of resetting
//! the first one's in-flight rows and paging twice.
//!
//! The lock file stays when herald stops, and that is the point: its presence proves that a
//! state was kept here. A database that is then missing or empty was lost (a wrong volume, a
//! restore gone wrong, a truncation), and starting fresh would silently forget queued alerts
//! and re-alert on old mail, so herald refuses and says how to start fresh on purpose.
//!
//! The lock is `flock(2)` through `std::fs::File::try_lock`: the kernel releases it when the
//! process dies, even by SIGKILL, so a crash never leaves a stale lock behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write as _;
use std::path::Path;

use super::lock_path;
use crate::store::StoreError;

/// The held lock; released when dropped (or when the process ends, however it ends).
#[derive(Debug)]
pub(super) struct Owner {
    _file: File,
}

impl Owner {
    /// Takes the lock for the database at `path`, creating its directory and the lock file
    /// as needed, and checks that a state that existed before is still there.
    pub(super) fn take(path: &Path) -> Result<Owner, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::backend(
                    format!("cannot create the state directory {}", dir.display()),
                    e,
                )
            })?;
        }
        let lock = lock_path(path);
        let kept_before = lock.exists();
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .map_err(|e| {
                StoreError::backend(format!("cannot open the lock file {}", lock.display()), e)
            })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    path: path.to_owned(),
                    lock,
                })
            }
            Err(TryLockError::Error(e)) => {
                return Err(StoreError::backend(
                    format!("cannot lock {}", lock.display()),
                    e,
                ))
            }
        }
        let size = std::fs::metadata(path).ok().map(|m| m.len());
        let what = match size {
            None if kept_before => Some("missing"),
            Some(0) => Some("empty (0 bytes)"),
            _ => None,
        };
        if let Some(what) = what {
            return Err(StoreError::Vanished {
                path: path.to_owned(),
                what,
                // An empty file with no lock file beside it: deleting the file itself is how
                // to start fresh.
                marker: if kept_before { lock } else { path.to_owned() },
            });
        }
        // For a person who finds the file; the lock itself is the flock, not the content.
        let note = format!(
            "herald's state lock for {}: held by the running `herald run` (pid {}).\nKeep this file: it shows that a state was kept here.\n",
            path.display(),
            std::process::id()
        );
        // Best effort: the content is only a note.
        let _ = file
            .set_len(0)
            .and_then(|()| file.write_all(note.as_bytes()));
        Ok(Owner { _file: file })
    }
}
