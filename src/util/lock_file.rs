//! Exclusive lock files: one process at a time holds one.

/// Takes an exclusive `flock` on `lock` (created if missing) without
/// waiting: `None` when another process holds it.
pub fn try_lock_file(lock: &std::path::Path) -> std::io::Result<Option<std::fs::File>> {
    if let Some(dir) = lock.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}
