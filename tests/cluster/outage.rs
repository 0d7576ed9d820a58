//! PostgreSQL stopped under a running cluster, on an instance of the
//! test's own (initdb in a temporary directory, its own port): the MASTER
//! stops acting by its deadline; when the database returns, one MASTER.

use std::path::{Path, PathBuf};
use std::process::Command;

use outpost::sim::{PjlinkOptions, PjlinkSim};

use crate::{Node, NodeSpec, certs, eventually, free_addr};

/// A PostgreSQL server of this test's own.
pub(crate) struct OwnPostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

fn initdb() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort();
    found.pop()
}

/// PostgreSQL refuses to run as root: as root, its tools run as `postgres`.
fn pg_tool(bin: &Path, tool: &str) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    }
}

impl OwnPostgres {
    pub(crate) fn start() -> Option<OwnPostgres> {
        let Some(bin) = initdb() else {
            eprintln!(
                "SKIPPED: no initdb under /usr/lib/postgresql/*/bin: the outage test needs a PostgreSQL of its own"
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("pg");
        std::fs::create_dir_all(&data).unwrap();
        // The server's user must own its directory (and reach it).
        let _ = Command::new("chmod").args(["755"]).arg(dir.path()).status();
        let _ = Command::new("chown")
            .args(["-R", "postgres"])
            .arg(dir.path())
            .status();
        let ok = pg_tool(&bin, "initdb")
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
        let pg = OwnPostgres {
            bin,
            data,
            port: free_addr().port(),
            _dir: dir,
        };
        pg.up();
        Some(pg)
    }

    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub(crate) fn up(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.data.display()
        );
        let out = pg_tool(&self.bin, "pg_ctl")
            .args(["start", "-w", "-D"])
            .arg(&self.data)
            .args(["-o", &opts, "-l"])
            .arg(self.data.join("server.log"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub(crate) fn down(&self) {
        let out = pg_tool(&self.bin, "pg_ctl")
            .args(["stop", "-w", "-m", "immediate", "-D"])
            .arg(&self.data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = pg_tool(&self.bin, "pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(&self.data)
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_stopped_the_master_stops_acting_and_one_master_follows_its_return() {
    let Some(pg) = OwnPostgres::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sim = PjlinkSim::start("127.0.0.1:0".parse().unwrap(), PjlinkOptions::default())
        .await
        .unwrap();
    crate::import_room(&pg.url(), sim.addr(), false).await;
    let spec = NodeSpec {
        id: String::new(),
        database_url: pg.url(),
        dir: dir.path().to_owned(),
        certs: certs(dir.path()),
        lease_ms: 900,
        renew_ms: 300,
        priority: 0,
        preempt: false,
        lock_file: None,
        failsafe: false,
    };
    let node = |id: &str| {
        Node::spawn(&NodeSpec {
            id: id.into(),
            ..spec.clone()
        })
    };
    let mut nodes = vec![node("a"), node("b")];
    let master = crate::one_master(&nodes).await;
    eventually(20, "the MASTER to connect the projector", async || {
        sim.connections() == 1
    })
    .await;
    // Its start is over once its API knows the configured key.
    eventually(20, "the MASTER's API to answer with the key", async || {
        matches!(
            crate::get(
                nodes[master].api,
                "/api/v1/ha/history",
                Some(crate::ADMIN_KEY)
            )
            .await,
            Some((200, _))
        )
    })
    .await;

    pg.down();
    // No renewal can succeed: the MASTER stops acting by its deadline and
    // exits; its device connection closes.
    let status = nodes[master].exited().await;
    let log = nodes[master].log_text();
    assert!(!status.success(), "{log}");
    assert!(log.contains("lease lost"), "{log}");
    eventually(20, "the projector to be released", async || {
        sim.connections() == 0
    })
    .await;
    let other = 1 - master;
    assert_eq!(nodes[other].state().await.as_deref(), Some("STANDBY"));
    // The standby cannot read the database (the key, the cluster's
    // tables): it says so at once, and never answers an empty list that
    // would read as "no nodes".
    let answer = crate::get(
        nodes[other].api,
        "/api/v1/ha/states",
        Some(crate::ADMIN_KEY),
    )
    .await;
    let (status, body) = answer.expect("the standby's API answers");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("database cannot be"), "{body}");

    pg.up();
    eventually(30, "the remaining node to become MASTER", async || {
        nodes[other].state().await.as_deref() == Some("MASTER")
    })
    .await;
    eventually(20, "the new MASTER to connect the projector", async || {
        sim.connections() == 1
    })
    .await;
    for n in &mut nodes {
        n.kill().await;
    }
}
