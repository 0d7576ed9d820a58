//! README's "Try it with the example site", run as written with the real
//! binary: import the example site, start the master, start the Sydney
//! edge a little later (after the master's boot wait), and the edge ends
//! up driving its site. Only the ports differ (free ones, so tests can run
//! side by side), and the boardroom projector is a simulator.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use outpost::sim::{PjlinkOptions, PjlinkSim};

use crate::http::request;
use crate::roles::eventually;

const SYDNEY: &str = "0191e9a0-0000-7000-8000-0000000000e1";
const BOARDROOM_LEFT: &str = "tcp://127.0.0.1:4353";

fn reserve() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn outpost(root: &Path, log: &str) -> tokio::process::Command {
    let out = std::fs::File::create(root.join(log)).unwrap();
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_outpost"));
    c.current_dir(root)
        .env_clear()
        .env("OUTPOST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .kill_on_drop(true);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_ends_with_the_edge_driving_its_site() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sim = PjlinkSim::start("127.0.0.1:0".parse().unwrap(), PjlinkOptions::default())
        .await
        .unwrap();
    std::fs::create_dir_all(root.join("config")).unwrap();
    let site = std::fs::read_to_string(repo.join("config/example-site.json")).unwrap();
    assert!(site.contains(BOARDROOM_LEFT));
    let site = site.replace(BOARDROOM_LEFT, &format!("tcp://{}", sim.addr()));
    std::fs::write(root.join("config/example-site.json"), site).unwrap();
    std::fs::create_dir_all(root.join("modules")).unwrap();
    for entry in std::fs::read_dir(repo.join("modules")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), root.join("modules").join(entry.file_name())).unwrap();
    }
    let (api, link) = (reserve(), reserve());

    // cargo run --release -- admin import config/example-site.json
    let import = tokio::process::Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(["admin", "import", "config/example-site.json"])
        .current_dir(root)
        .env_clear()
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&import.stdout),
        String::from_utf8_lossy(&import.stderr)
    );
    assert!(import.status.success(), "{text}");
    let secret = text
        .lines()
        .find(|l| l.contains(SYDNEY))
        .and_then(|l| l.split("secret ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no secret for Sydney in: {text}"))
        .to_owned();

    // cargo run --release -- master
    let mut master = outpost(root, "master.log")
        .arg("master")
        .env("OUTPOST_API_ADDR", api.to_string())
        .env("OUTPOST_LINK_ADDR", link.to_string())
        .spawn()
        .unwrap();
    let log = |name: &str| std::fs::read_to_string(root.join(name)).unwrap_or_default();
    // A little later: after the master's boot wait.
    eventually(60, "the master to finish booting", async || {
        tokio::net::TcpStream::connect(api).await.is_ok()
            && request(api, "GET", "/api/v1/health", &[], None)
                .await
                .body
                .contains("\"ok\"")
    })
    .await;

    // The Sydney edge, as README starts it.
    let mut edge = outpost(root, "edge.log")
        .env("OUTPOST_EDGE_ID", SYDNEY)
        .env("OUTPOST_EDGE_SECRET", &secret)
        .env("OUTPOST_DATA_DIR", "data/edge-sydney")
        .env("OUTPOST_API_ADDR", reserve().to_string())
        .env("OUTPOST_MASTERS", link.to_string())
        .spawn()
        .unwrap();
    eventually(
        30,
        "the edge to drive the boardroom projector",
        async || sim.connections() == 1,
    )
    .await;
    let key = std::fs::read_to_string(root.join("data/admin-key")).unwrap();
    let auth = format!("Bearer {}", key.trim());
    let status = request(
        api,
        "GET",
        &format!("/api/v1/edges/{SYDNEY}/status"),
        &[("Authorization", auth.as_str())],
        None,
    )
    .await;
    assert_eq!(status.status, 200, "{}", status.body);
    assert_eq!(
        status.json()["controller"],
        "edge",
        "{}\n{}",
        log("master.log"),
        log("edge.log")
    );
    assert_eq!(sim.max_connections_seen(), 1, "{}", log("master.log"));
    edge.kill().await.unwrap();
    master.kill().await.unwrap();
}
