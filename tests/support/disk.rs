//! A small tmpfs under a process's data directory, so that the nemesis can
//! fill it (disk full) or mount it read-only, as a real disk does to a
//! real process. Mounting needs root (CAP_SYS_ADMIN); without it the world
//! runs on the plain directory and the storage faults are skipped.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Room for the run's SQLite file, its WAL and logs, and little more.
const SIZE: &str = "size=64m";

pub struct Disk {
    path: PathBuf,
}

impl Disk {
    /// Mounts a fresh tmpfs at `path` (created if missing). `None` when
    /// this process may not mount.
    pub fn mount(path: &Path) -> Option<Disk> {
        std::fs::create_dir_all(path).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", SIZE, "tmpfs"])
            .arg(path)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Disk {
            path: path.to_owned(),
        })
    }

    fn filler(&self) -> PathBuf {
        self.path.join("filler")
    }

    /// Writes a file until the file system says it is full.
    pub fn fill(&self) {
        let mut file = std::fs::File::create(self.filler()).expect("the filler file");
        for chunk in [1 << 20, 4096, 512] {
            let bytes = vec![0u8; chunk];
            while file.write_all(&bytes).is_ok() {}
        }
        let _ = file.sync_all();
    }

    /// Frees what [`Disk::fill`] took.
    pub fn free(&self) {
        let _ = std::fs::remove_file(self.filler());
    }

    /// Remounts read-only (`true`) or read-write. Only possible while no
    /// process has a file open for writing on it: the caller stops the
    /// process first. Answers whether the remount took.
    pub fn read_only(&self, on: bool) -> bool {
        let option = if on { "remount,ro" } else { "remount,rw" };
        Command::new("mount")
            .args(["-o", option])
            .arg(&self.path)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        // Lazy: a process being killed may still hold a file for a moment.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
