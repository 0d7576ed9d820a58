//! The driver repository: the master's `modules/` is a git repository
//! ([`MasterRepo`], driving the git CLI); an edge receives a commit's files
//! over the link and writes them into its own modules directory
//! ([`EdgeRepo`]). Edges need no access to any git server.
//!
//! Transfer: the edge asks for the commit's tree (`RepoTree`), compares each
//! entry's git object id with the hash of its local file, fetches only the
//! blobs that differ (`RepoBlob`, several in flight), checks each blob's
//! hash, writes it atomically (temporary file + rename), removes files the
//! previous sync wrote that the new commit no longer has, and records the
//! commit in a manifest. The caller then live-reloads the changed drivers.

use std::collections::{BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::process::Command;

use super::peer::{CallError, Peer};
use crate::proto::{RequestBody, ResponseBody, TreeEntry, WireError};
use crate::util::Unpoisoned;

/// Errors of repository operations; mapped to [`WireError`] at the link.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("git {args}: {stderr}")]
    Git { args: String, stderr: String },
    #[error("cannot run git: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("invalid commit name '{0}'")]
    BadCommit(String),
    #[error("invalid object id '{0}'")]
    BadOid(String),
    #[error("unsafe path '{0}' in tree")]
    BadPath(String),
    #[error("blob {0} does not match its object id")]
    Corrupt(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("link: {0}")]
    Link(#[from] CallError),
    #[error("unexpected response kind from the master")]
    Unexpected,
    #[error("git {args} did not finish within {} s and was stopped", .after.as_secs())]
    Timeout { args: String, after: Duration },
}

impl From<RepoError> for WireError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::BadCommit(c) => WireError::bad_request(format!("invalid commit '{c}'")),
            RepoError::BadOid(o) => WireError::bad_request(format!("invalid object id '{o}'")),
            RepoError::Git { .. } => {
                tracing::warn!(error = %e, "git failed");
                WireError::failed("git operation failed (see the master's log)")
            }
            other => {
                tracing::warn!(error = %other, "repository operation failed");
                WireError::failed(other.to_string())
            }
        }
    }
}

/// A commit name an operator may give: a hex id or a simple ref name. No
/// leading '-', so it can never be taken for a git option.
pub fn valid_commit(c: &str) -> bool {
    !c.is_empty()
        && c.len() <= 255
        && !c.starts_with('-')
        && !c.contains("..")
        && c.chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '/' | '_' | '-' | '.' | '^' | '~'))
}

fn valid_oid(o: &str) -> bool {
    (o.len() == 40 || o.len() == 64) && o.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The master's modules repository.
#[derive(Debug, Clone)]
pub struct MasterRepo {
    dir: PathBuf,
    timeout: Duration,
}

/// How long one git command may run (a fetch from a slow upstream
/// included) before it is killed.
pub const GIT_TIMEOUT: Duration = Duration::from_secs(120);

/// One lock per repository directory in this process: the API and the link
/// each hold a `MasterRepo`, and two moves of one working tree at once
/// would leave it in a state neither asked for.
fn working_tree_lock(dir: &Path) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let locks = LOCKS.get_or_init(Default::default);
    locks
        .lock_unpoisoned()
        .entry(dir.to_path_buf())
        .or_default()
        .clone()
}

impl MasterRepo {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            timeout: GIT_TIMEOUT,
        }
    }

    /// The same, with another limit on each git command.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn git(&self, args: &[&str]) -> Result<Vec<u8>, RepoError> {
        let run = Command::new("git")
            .arg("-C")
            .arg(&self.dir)
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| RepoError::Timeout {
                args: args.join(" "),
                after: self.timeout,
            })?
            .map_err(RepoError::Spawn)?;
        if !out.status.success() {
            return Err(RepoError::Git {
                args: args.join(" "),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(out.stdout)
    }

    /// The full id of what `rev` names (a commit).
    pub async fn resolve(&self, rev: &str) -> Result<String, RepoError> {
        if !valid_commit(rev) {
            return Err(RepoError::BadCommit(rev.to_owned()));
        }
        let out = self
            .git(&[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{rev}^{{commit}}"),
            ])
            .await
            .map_err(|_| RepoError::BadCommit(rev.to_owned()))?;
        Ok(String::from_utf8_lossy(&out).trim().to_owned())
    }

    pub async fn head(&self) -> Result<String, RepoError> {
        self.resolve("HEAD").await
    }

    /// `git fetch`, then move the working tree to the upstream commit.
    pub async fn pull(&self) -> Result<String, RepoError> {
        let lock = working_tree_lock(&self.dir);
        let _moving = lock.lock().await;
        self.git(&["fetch", "--quiet"]).await?;
        self.git(&["reset", "--quiet", "--hard", "@{upstream}"])
            .await?;
        self.head().await
    }

    /// Moves the working tree to `commit` (fetching first if it is not
    /// known locally).
    pub async fn reset(&self, commit: &str) -> Result<String, RepoError> {
        let lock = working_tree_lock(&self.dir);
        let _moving = lock.lock().await;
        let full = match self.resolve(commit).await {
            Ok(c) => c,
            Err(RepoError::BadCommit(_)) if valid_commit(commit) => {
                self.git(&["fetch", "--quiet"]).await?;
                self.resolve(commit).await?
            }
            Err(e) => return Err(e),
        };
        self.git(&["reset", "--quiet", "--hard", &full]).await?;
        Ok(full)
    }

    /// The files of a commit (regular files and symlinks' targets as blobs;
    /// submodules are skipped).
    pub async fn tree(&self, commit: &str) -> Result<(String, Vec<TreeEntry>), RepoError> {
        let full = self.resolve(commit).await?;
        let out = self.git(&["ls-tree", "-r", "-z", "--long", &full]).await?;
        let mut entries = Vec::new();
        for rec in out.split(|b| *b == 0).filter(|r| !r.is_empty()) {
            let rec = String::from_utf8_lossy(rec);
            // "<mode> <type> <oid> <size>\t<path>"
            let Some((meta, path)) = rec.split_once('\t') else {
                continue;
            };
            let f: Vec<&str> = meta.split_whitespace().collect();
            if f.len() != 4 || f[1] != "blob" {
                continue;
            }
            entries.push(TreeEntry {
                path: path.to_owned(),
                oid: f[2].to_owned(),
                size: f[3].parse().unwrap_or(0),
                executable: f[0] == "100755",
            });
        }
        Ok((full, entries))
    }

    /// One blob's bytes.
    pub async fn blob(&self, oid: &str) -> Result<Vec<u8>, RepoError> {
        if !valid_oid(oid) {
            return Err(RepoError::BadOid(oid.to_owned()));
        }
        self.git(&["cat-file", "blob", oid]).await
    }

    /// Answers the repository request kinds a master serves; `None` for
    /// any other kind.
    pub async fn handle(&self, body: &RequestBody) -> Option<Result<ResponseBody, WireError>> {
        let r = match body {
            RequestBody::Repository {
                op: crate::proto::RepoOp::Pull,
            } => self.pull().await.map(|commit| ResponseBody::Commit {
                commit,
                changed: vec![],
            }),
            RequestBody::Repository {
                op: crate::proto::RepoOp::Reset { commit },
            } => self.reset(commit).await.map(|commit| ResponseBody::Commit {
                commit,
                changed: vec![],
            }),
            RequestBody::RepoTree { commit } => self
                .tree(commit)
                .await
                .map(|(commit, entries)| ResponseBody::Tree { commit, entries }),
            RequestBody::RepoBlob { oid } => self.blob(oid).await.map(|b| ResponseBody::Blob {
                data: base64::engine::general_purpose::STANDARD.encode(b),
            }),
            _ => return None,
        };
        Some(r.map_err(WireError::from))
    }
}

/// What an edge sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub commit: String,
    /// Files written (new or changed), sorted.
    pub changed: Vec<String>,
    /// Files removed, sorted.
    pub removed: Vec<String>,
}

impl SyncReport {
    /// Driver names among the changed files (the `.lua` files): what the
    /// runtime must reload.
    pub fn changed_drivers(&self) -> Vec<String> {
        self.changed
            .iter()
            .filter(|p| p.ends_with(".lua"))
            .cloned()
            .collect()
    }
}

const MANIFEST: &str = ".outpost-manifest.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    commit: Option<String>,
    files: BTreeSet<String>,
}

/// An edge's modules directory, fed from the master over the link.
#[derive(Debug, Clone)]
pub struct EdgeRepo {
    dir: PathBuf,
}

impl EdgeRepo {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The commit of the last completed sync.
    pub async fn commit(&self) -> Option<String> {
        self.manifest().await.commit
    }

    async fn manifest(&self) -> Manifest {
        match tokio::fs::read(self.dir.join(MANIFEST)).await {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
            Err(_) => Manifest::default(),
        }
    }

    fn local_path(&self, rel: &str) -> Result<PathBuf, RepoError> {
        let p = Path::new(rel);
        let safe = !rel.is_empty()
            && rel != MANIFEST
            && p.components().all(|c| matches!(c, Component::Normal(_)));
        if !safe {
            return Err(RepoError::BadPath(rel.to_owned()));
        }
        Ok(self.dir.join(p))
    }

    /// Brings the directory to `commit`, fetching files from `master`.
    pub async fn sync(
        &self,
        master: &Peer,
        commit: &str,
        per_request: Duration,
    ) -> Result<SyncReport, RepoError> {
        let tree = RequestBody::RepoTree {
            commit: commit.to_owned(),
        };
        let (commit, entries) = match master.request(tree, per_request).await? {
            ResponseBody::Tree { commit, entries } => (commit, entries),
            _ => return Err(RepoError::Unexpected),
        };
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|source| RepoError::Write {
                path: self.dir.clone(),
                source,
            })?;
        let wanted = self.changed_entries(&entries).await?;
        let changed = fetch_blobs(master, wanted, per_request).await?;
        let new_files: BTreeSet<String> = entries.iter().map(|e| e.path.clone()).collect();
        let removed = self.remove_gone(&new_files).await;
        let manifest = Manifest {
            commit: Some(commit.clone()),
            files: new_files,
        };
        #[allow(
            clippy::expect_used,
            reason = "the manifest is a serde struct with string keys"
        )]
        let manifest = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
        write_atomic(&self.dir.join(MANIFEST), &manifest, false).await?;
        Ok(SyncReport {
            commit,
            changed,
            removed,
        })
    }

    /// The entries whose local file is missing or differs, with their paths.
    async fn changed_entries(
        &self,
        entries: &[TreeEntry],
    ) -> Result<Vec<(TreeEntry, PathBuf)>, RepoError> {
        let mut wanted = Vec::new();
        for e in entries {
            let path = self.local_path(&e.path)?;
            let same = match tokio::fs::read(&path).await {
                Ok(local) => object_id(&local, e.oid.len()).as_deref() == Some(&e.oid[..]),
                Err(_) => false,
            };
            if !same {
                wanted.push((e.clone(), path));
            }
        }
        Ok(wanted)
    }

    /// Removes the files the last sync wrote that the new tree no longer has.
    async fn remove_gone(&self, new_files: &BTreeSet<String>) -> Vec<String> {
        let old = self.manifest().await;
        let mut removed = Vec::new();
        for gone in old.files.difference(new_files) {
            if let Ok(p) = self.local_path(gone)
                && tokio::fs::remove_file(&p).await.is_ok()
            {
                removed.push(gone.clone());
            }
        }
        removed
    }
}

/// Fetches blobs from the master (8 at a time), checks each against its
/// object id and writes it atomically; the changed paths, sorted.
async fn fetch_blobs(
    master: &Peer,
    wanted: Vec<(TreeEntry, PathBuf)>,
    per_request: Duration,
) -> Result<Vec<String>, RepoError> {
    let mut fetches = futures_util::stream::iter(wanted.into_iter().map(|(e, path)| async move {
        let data = match master
            .request(RequestBody::RepoBlob { oid: e.oid.clone() }, per_request)
            .await?
        {
            ResponseBody::Blob { data } => base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|_| RepoError::Corrupt(e.oid.clone()))?,
            _ => return Err(RepoError::Unexpected),
        };
        if object_id(&data, e.oid.len()).as_deref() != Some(&e.oid[..]) {
            return Err(RepoError::Corrupt(e.oid.clone()));
        }
        write_atomic(&path, &data, e.executable).await?;
        Ok(e.path)
    }))
    .buffer_unordered(8);
    let mut changed = Vec::new();
    while let Some(r) = fetches.next().await {
        changed.push(r?);
    }
    changed.sort();
    Ok(changed)
}

/// Git's object id of a blob with these bytes (SHA-1 for 40-digit ids,
/// SHA-256 for 64-digit ones).
pub fn object_id(data: &[u8], hex_len: usize) -> Option<String> {
    let alg = match hex_len {
        40 => &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        64 => &ring::digest::SHA256,
        _ => return None,
    };
    let mut ctx = ring::digest::Context::new(alg);
    ctx.update(format!("blob {}\0", data.len()).as_bytes());
    ctx.update(data);
    let d = ctx.finish();
    Some(hex::encode(d.as_ref()))
}

async fn write_atomic(path: &Path, data: &[u8], executable: bool) -> Result<(), RepoError> {
    let err = |source| RepoError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(err)?;
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp-{:016x}", fastrand::u64(..)));
    let path_owned = path.to_owned();
    let data = data.to_vec();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = if executable { 0o755 } else { 0o644 };
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        let _ = executable;
        drop(f);
        std::fs::rename(&tmp, &path_owned).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    })
    .await
    .map_err(|e| err(std::io::Error::other(e)))?
    .map_err(err)
}
