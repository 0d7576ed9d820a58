//! The operator commands of the real binary against a running master:
//! `outpost status` (table and JSON), `exec`, `logs`, `--version` and
//! `GET /api/v1/version`, and `certs issue-edge`.

use std::process::Output;
use std::time::Duration;

use outpost::model::ControlSystem;
use outpost::sim::{LineOptions, LineSim};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::http;
use crate::roles::{Site, device};

fn outpost(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_outpost"));
    cmd.args(args)
        .env_remove("OUTPOST_ADMIN_KEY")
        .env_remove("OUTPOST_API_ADDR")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd
}

async fn run(args: &[&str]) -> Output {
    let out = tokio::time::timeout(Duration::from_secs(30), outpost(args).output())
        .await
        .expect("the command finishes")
        .unwrap();
    assert!(
        out.status.success(),
        "outpost {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_exec_logs_and_version_answer_from_a_running_master() {
    let site = Site::new();
    // One edge location (its edge never comes) and, on the master, a room
    // with a line device.
    let room = site
        .one_room(json!({"name": "Sydney", "failover": false}), &[])
        .await;
    let sim = LineSim::start("127.0.0.1:0".parse().unwrap(), LineOptions::default())
        .await
        .unwrap();
    let display = device("Lobby display", "line.lua", Some(sim.addr()));
    {
        let store = site.master_store().await;
        let file = outpost::admin::SiteFile {
            systems: vec![ControlSystem {
                id: outpost::model::new_id(),
                name: "Lobby".into(),
                description: String::new(),
                edge_id: None,
                module_ids: vec![display.id],
                settings: Default::default(),
                stopped: false,
            }],
            modules: vec![display.clone()],
            ..Default::default()
        };
        outpost::admin::import(&store, &file, &Default::default())
            .await
            .unwrap();
        store.close().await;
    }
    let config = site.master_config();
    let key_file = config.data_dir.join("admin-key");
    let master = outpost::master::start(config).await.unwrap();
    let api = format!("http://{}", master.api_addr);
    let key_path = key_file.display().to_string();
    let common = ["--api", api.as_str(), "--key-file", key_path.as_str()];

    // status: a table, then the same as JSON.
    let args: Vec<&str> = ["status"].iter().chain(&common).copied().collect();
    let table = stdout(&run(&args).await);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[0].starts_with("SITE"), "{table}");
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    // The edge never connected: no controller decided yet.
    assert_eq!(&cells[..4], ["Sydney", "lost", "none", "0"], "{table}");
    let args: Vec<&str> = ["status", "--json"]
        .iter()
        .chain(&common)
        .copied()
        .collect();
    let sites: Value = serde_json::from_str(&stdout(&run(&args).await)).unwrap();
    assert_eq!(sites[0]["id"], json!(room.edge_id));
    assert_eq!(sites[0]["connected"], json!(false));
    assert_eq!(sites[0]["failover"], json!(false));

    // logs: follow the display's debug stream while an exec talks to it.
    let args: Vec<&str> = ["logs"]
        .iter()
        .chain(&common)
        .chain(&["Lobby display"])
        .copied()
        .collect();
    let mut logs = outpost(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(logs.stderr.take().unwrap()).lines();
    let following = tokio::time::timeout(Duration::from_secs(20), err.next_line())
        .await
        .expect("logs says it follows the module")
        .unwrap()
        .unwrap_or_default();
    assert!(following.contains("following module"), "{following}");

    // exec by name: the device receives the command.
    let args: Vec<&str> = ["exec"]
        .iter()
        .chain(&common)
        .chain(&["Lobby display", "set", "input", "hdmi2"])
        .copied()
        .collect();
    run(&args).await;
    assert_eq!(sim.value("input").as_deref(), Some("hdmi2"));

    let mut out = BufReader::new(logs.stdout.take().unwrap()).lines();
    let tx = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = out.next_line().await.unwrap() {
            if line.starts_with("tx") && line.contains("hdmi2") {
                return line;
            }
        }
        panic!("the debug stream ended");
    })
    .await
    .expect("the exec's bytes in the debug stream");
    assert!(tx.contains("input"), "{tx}");
    logs.kill().await.unwrap();

    // The version and commit, from the binary and from the API.
    let version = stdout(&run(&["--version"]).await);
    assert!(
        version.contains(env!("CARGO_PKG_VERSION")) && version.contains("commit"),
        "{version}"
    );
    let r = http::request(master.api_addr, "GET", "/api/v1/version", &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["version"], json!(env!("CARGO_PKG_VERSION")));
    assert!(version.contains(r.json()["commit"].as_str().unwrap()));

    // An edge's client certificate, signed by the site's development CA.
    let certs = site.path().join("certs");
    let edge = room.edge_id.to_string();
    let out = run(&[
        "certs",
        "issue-edge",
        &edge,
        "--dir",
        &certs.display().to_string(),
    ])
    .await;
    assert!(stdout(&out).contains(&format!("edge-{edge}.pem")));
    assert!(certs.join(format!("edge-{edge}-key.pem")).exists());

    master.stop().await;
}
