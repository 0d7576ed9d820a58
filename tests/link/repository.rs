//! Repository pull and reset against a real git repository made in the
//! test, and the transfer of a commit's files to an edge over the link.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use outpost::link::CallError;
use outpost::link::repository::{EdgeRepo, MasterRepo, object_id};
use outpost::proto::{RepoOp, RequestBody, ResponseBody, WireError};

use crate::support::*;

const D: Duration = Duration::from_secs(20);

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn commit_all(dir: &Path, msg: &str) -> String {
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", msg]);
    git(dir, &["rev-parse", "HEAD"])
}

#[test]
fn object_ids_match_git() {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q"]);
    std::fs::write(dir.path().join("f"), b"hello\n").unwrap();
    let oid = git(dir.path(), &["hash-object", "f"]);
    assert_eq!(object_id(b"hello\n", 40).unwrap(), oid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_and_reset_move_the_master_and_sync_the_edge_over_the_link() {
    let certs = dev_certs();
    let tmp = tempfile::tempdir().unwrap();
    let origin = tmp.path().join("origin");
    let modules = tmp.path().join("modules");
    let edge_modules = tmp.path().join("edge-modules");
    std::fs::create_dir_all(&origin).unwrap();
    git(&origin, &["init", "-q", "-b", "main"]);
    std::fs::write(origin.join("pjlink.lua"), "-- v1\n").unwrap();
    std::fs::write(origin.join("old.lua"), "-- to be removed\n").unwrap();
    std::fs::create_dir_all(origin.join("lib")).unwrap();
    std::fs::write(origin.join("lib/util.lua"), "return {}\n").unwrap();
    std::fs::write(origin.join("README"), vec![0u8, 159, 146, 150]).unwrap(); // not UTF-8
    let c1 = commit_all(&origin, "one");
    let out = Command::new("git")
        .args(["clone", "-q"])
        .arg(&origin)
        .arg(&modules)
        .output()
        .unwrap();
    assert!(out.status.success());

    let master_handler = TestHandler {
        master_repo: Some(MasterRepo::new(&modules)),
        ..Default::default()
    };
    let edge_handler = TestHandler {
        edge_repo: Some(EdgeRepo::new(&edge_modules)),
        ..Default::default()
    };
    let (m, e, to_edge, to_master) = pair(&certs, master_handler, edge_handler).await;

    // First sync: every file arrives.
    let sync = |commit: String| RequestBody::Repository {
        op: RepoOp::Sync { commit },
    };
    let r = to_edge.request(sync(c1.clone()), D).await.unwrap();
    assert_eq!(
        r,
        ResponseBody::Commit {
            commit: c1.clone(),
            changed: vec!["lib/util.lua".into(), "old.lua".into(), "pjlink.lua".into()]
        }
    );
    assert_eq!(
        std::fs::read(edge_modules.join("README")).unwrap(),
        vec![0u8, 159, 146, 150]
    );
    assert_eq!(
        std::fs::read_to_string(edge_modules.join("pjlink.lua")).unwrap(),
        "-- v1\n"
    );

    // A new upstream commit; the master pulls it (asked over the link).
    std::fs::write(origin.join("pjlink.lua"), "-- v2\n").unwrap();
    std::fs::remove_file(origin.join("old.lua")).unwrap();
    std::fs::write(origin.join("new.lua"), "-- new\n").unwrap();
    let c2 = commit_all(&origin, "two");
    let r = to_master
        .request(RequestBody::Repository { op: RepoOp::Pull }, D)
        .await
        .unwrap();
    assert_eq!(
        r,
        ResponseBody::Commit {
            commit: c2.clone(),
            changed: vec![]
        }
    );
    assert_eq!(
        std::fs::read_to_string(modules.join("pjlink.lua")).unwrap(),
        "-- v2\n"
    );

    // Second sync: only what changed travels; the removed file goes.
    let r = to_edge.request(sync(c2.clone()), D).await.unwrap();
    assert_eq!(
        r,
        ResponseBody::Commit {
            commit: c2.clone(),
            changed: vec!["new.lua".into(), "pjlink.lua".into()]
        }
    );
    assert!(!edge_modules.join("old.lua").exists());
    assert_eq!(
        std::fs::read_to_string(edge_modules.join("new.lua")).unwrap(),
        "-- new\n"
    );
    assert_eq!(
        EdgeRepo::new(&edge_modules).commit().await.as_deref(),
        Some(&c2[..])
    );
    assert_eq!(e.handler.commit.read().unwrap().as_deref(), Some(&c2[..]));

    // Reset to the first commit (short id), then sync back.
    let r = to_master
        .request(
            RequestBody::Repository {
                op: RepoOp::Reset {
                    commit: c1[..10].to_owned(),
                },
            },
            D,
        )
        .await
        .unwrap();
    assert_eq!(
        r,
        ResponseBody::Commit {
            commit: c1.clone(),
            changed: vec![]
        }
    );
    assert_eq!(
        std::fs::read_to_string(modules.join("pjlink.lua")).unwrap(),
        "-- v1\n"
    );
    let r = to_edge.request(sync(c1.clone()), D).await.unwrap();
    assert_eq!(
        r,
        ResponseBody::Commit {
            commit: c1.clone(),
            changed: vec!["old.lua".into(), "pjlink.lua".into()]
        }
    );
    assert!(!edge_modules.join("new.lua").exists());
    assert!(edge_modules.join("old.lua").exists());

    // Bad names are typed errors, never git options.
    for bad in ["--upload-pack=evil", "no-such-commit", "a..b"] {
        let r = to_master
            .request(
                RequestBody::Repository {
                    op: RepoOp::Reset { commit: bad.into() },
                },
                D,
            )
            .await;
        assert!(
            matches!(r, Err(CallError::Remote(WireError::BadRequest { .. }))),
            "{bad}: {r:?}"
        );
    }
    let r = to_master
        .request(
            RequestBody::RepoBlob {
                oid: "../../etc/passwd".into(),
            },
            D,
        )
        .await;
    assert!(
        matches!(r, Err(CallError::Remote(WireError::BadRequest { .. }))),
        "{r:?}"
    );
    e.stop().await;
    m.stop().await;
}

/// An upstream that never answers: the fetch is stopped at the repository's
/// limit instead of holding the request (and its working tree) forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_command_that_hangs_is_stopped_at_its_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let modules = tmp.path().join("modules");
    std::fs::create_dir_all(&modules).unwrap();
    git(&modules, &["init", "-q", "-b", "main"]);
    std::fs::write(modules.join("pjlink.lua"), "-- v1\n").unwrap();
    commit_all(&modules, "one");
    // git's ext:: transport runs a command as the remote; this one sleeps.
    git(&modules, &["config", "protocol.ext.allow", "always"]);
    git(
        &modules,
        &["remote", "add", "origin", "ext::sh -c sleep% 20"],
    );
    let repo = MasterRepo::new(&modules).with_timeout(Duration::from_millis(500));
    let err = tokio::time::timeout(D, repo.pull())
        .await
        .expect("the pull returns")
        .unwrap_err();
    assert!(
        matches!(err, outpost::link::repository::RepoError::Timeout { .. }),
        "{err}"
    );
    // The working tree is free again: a reset to a known commit works.
    let head = git(&modules, &["rev-parse", "HEAD"]);
    assert_eq!(repo.reset(&head).await.unwrap(), head);
}
