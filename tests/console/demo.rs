//! `outpost demo` through the real binary: every simulated device gets its
//! connection, the console answers at the printed URL, and SIGINT stops
//! everything, leaving no child process.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::http;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_connects_every_device_and_sigint_leaves_no_child() {
    let dir = tempfile::tempdir().unwrap();
    let mut demo = tokio::process::Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(["demo", "--api-addr", "127.0.0.1:0", "--dir"])
        .arg(dir.path())
        .env_remove("OUTPOST_ADMIN_KEY")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let mut children = Vec::new();
    let mut url = None;
    let mut printed = Vec::new();
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            printed.push(line.clone());
            if let Some(rest) = line.strip_prefix("master: console and API at ") {
                url = Some(rest.trim().to_owned());
            }
            if line.starts_with("edge ")
                && let Some(pid) = line.split("pid ").nth(1)
            {
                children.push(pid.trim().parse::<u32>().unwrap());
            }
            if line == "all 4 devices connected" {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(ready, Ok(true), "the demo printed: {printed:#?}");
    assert_eq!(children.len(), 2, "{printed:#?}");

    // The printed URL serves the console, and the printed key is accepted.
    let url = url.expect("the console URL");
    let addr: std::net::SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let page = http::request(addr, "GET", "/", &[], None).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("/console/app.js"));
    let key = std::fs::read_to_string(dir.path().join("admin-key")).unwrap();
    let auth = format!("Bearer {}", key.trim());
    let sites = http::request(
        addr,
        "GET",
        "/api/v1/sites",
        &[("Authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(sites.status, 200, "{}", sites.body);
    assert_eq!(sites.json().as_array().unwrap().len(), 2);
    for pid in &children {
        assert!(alive(*pid), "edge pid {pid} is not running");
    }

    let status = std::process::Command::new("kill")
        .args(["-INT", &demo.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // Drain the output so the demo never blocks on a full pipe.
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let exit = tokio::time::timeout(Duration::from_secs(30), demo.wait())
        .await
        .expect("the demo stops within 30 s of SIGINT")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    let _ = drain.await;
    for pid in children {
        assert!(
            !alive(pid),
            "edge pid {pid} is still running after the demo stopped"
        );
    }
}

/// A process exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// `outpost demo --kill-edge sydney`: the demo kills Sydney's edge, the
/// master takes the site over (its failover is on), the edge comes back
/// for a restore, and SIGINT still leaves no child, the restarted edge
/// included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_kills_an_edge_on_request_and_brings_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut demo = tokio::process::Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(["demo", "--api-addr", "127.0.0.1:0", "--kill-edge", "sydney"])
        .args(["--kill-after", "0", "--dir"])
        .arg(dir.path())
        .env_remove("OUTPOST_ADMIN_KEY")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    let mut url = None;
    let mut killed = false;
    let mut back = None;
    let done = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            printed.push(line.clone());
            if let Some(rest) = line.strip_prefix("master: console and API at ") {
                url = Some(rest.trim().to_owned());
            }
            killed |= line == "killed edge sydney (SIGKILL): watch the console";
            if let Some(rest) = line.strip_prefix("edge sydney is back (pid ") {
                back = rest.split(')').next().and_then(|p| p.parse::<u32>().ok());
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(done, Ok(true), "the demo printed: {printed:#?}");
    assert!(killed, "{printed:#?}");
    assert!(
        printed
            .iter()
            .any(|l| l.contains("the demo kills edge 'sydney'")),
        "the printed script says what will happen: {printed:#?}"
    );
    // The master took Sydney over while its edge was away.
    let addr: std::net::SocketAddr = url
        .expect("the console URL")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let key = std::fs::read_to_string(dir.path().join("admin-key")).unwrap();
    let auth = format!("Bearer {}", key.trim());
    let sites = http::request(
        addr,
        "GET",
        "/api/v1/sites",
        &[("Authorization", &auth)],
        None,
    )
    .await
    .json();
    let sydney = sites
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"].as_str().is_some_and(|n| n.starts_with("Sydney")))
        .unwrap()
        .clone();
    assert_eq!(sydney["controller"], "master", "{sydney}");
    let back = back.expect("the restarted edge's pid");
    assert!(alive(back), "the restarted edge runs");

    let status = std::process::Command::new("kill")
        .args(["-INT", &demo.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let exit = tokio::time::timeout(Duration::from_secs(30), demo.wait())
        .await
        .expect("the demo stops within 30 s of SIGINT")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    let _ = drain.await;
    assert!(!alive(back), "the restarted edge {back} outlived the demo");
}
