//! Files at rest that hold secrets (the databases with their link keys and
//! device passwords, the generated admin key): directories 0700, files
//! 0600, on both roles.
//!
//! An existing directory or file with looser modes is tightened, with a
//! warning, rather than refused: the process owns its data directory, and
//! refusing to start would darken a site over a mode bit after an upgrade.
//! Where tightening fails (a directory owned by someone else), the files
//! inside are still 0600, which is what protects their contents; that is
//! logged and the start goes on.

use std::io;
use std::path::Path;

/// Creates `dir` (and its parents) with mode 0700, or tightens an existing
/// one that grants anything to group or others.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt as _;
            builder.mode(0o700);
        }
        return builder.create(dir);
    }
    tighten(dir, 0o700);
    Ok(())
}

/// Creates `file` empty with mode 0600 if it does not exist (so that what
/// opens it next, SQLite for one, keeps that mode), or tightens it.
pub fn private_file(file: &Path) -> io::Result<()> {
    if file.exists() {
        tighten(file, 0o600);
        return Ok(());
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(file).map(drop)
}

/// Takes group and other permissions away from `path` (a no-op when it
/// has none, or does not exist).
pub fn tighten(path: &Path, mode: u32) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let current = meta.permissions().mode() & 0o777;
        if current & 0o077 == 0 {
            return;
        }
        match std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
            Ok(()) => tracing::warn!(
                path = %path.display(),
                from = format!("{current:04o}"),
                to = format!("{mode:04o}"),
                "tightened the mode of a file holding secrets"
            ),
            Err(e) => tracing::warn!(
                path = %path.display(),
                mode = format!("{current:04o}"),
                error = %e,
                "cannot tighten the mode of a path holding secrets; its files stay 0600"
            ),
        }
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
}
