//! Build script: records the git commit the binary is built from, for
//! `outpost --version` and `GET /api/v1/version`.
//!
//! `BUILD_COMMIT` in the build environment wins (a container build has no
//! `.git`); otherwise `git rev-parse HEAD`; otherwise "unknown".

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=BUILD_COMMIT");
    let commit = std::env::var("BUILD_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    // Rebuild when HEAD moves: HEAD itself (a branch switch), the branch's
    // ref (a commit), and packed-refs (a ref packed by gc). In a worktree
    // the first lives in its own git dir, the others in the common one.
    // A path that does not exist would make cargo rerun this every build.
    let watch = |path: String| {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    };
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        watch(format!("{dir}/HEAD"));
    }
    if let (Some(common), Some(head)) = (
        git(&["rev-parse", "--git-common-dir"]),
        git(&["symbolic-ref", "-q", "HEAD"]),
    ) {
        watch(format!("{common}/{head}"));
        watch(format!("{common}/packed-refs"));
    }
    println!("cargo:rustc-env=BUILD_COMMIT={commit}");
}
