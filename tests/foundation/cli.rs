//! The real `outpost` binary: configuration errors, certificates,
//! import/export, and a master started on embedded defaults and stopped with
//! SIGTERM.

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn outpost(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_outpost"));
    cmd.args(args).current_dir(dir).env_clear();
    for key in ["PATH", "HOME"] {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    cmd.envs(env.iter().copied());
    cmd
}

fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    outpost(dir, args, env)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Sets up a directory like a checkout: config/, modules/ with the drivers
/// the example site names.
fn checkout() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    std::fs::create_dir(dir.path().join("modules")).unwrap();
    for d in ["pjlink.lua", "line.lua", "room.lua"] {
        std::fs::write(dir.path().join("modules").join(d), "-- driver\n").unwrap();
    }
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/example-site.json"),
        dir.path().join("config/example-site.json"),
    )
    .unwrap();
    dir
}

#[test]
fn configuration_errors_name_the_key_in_one_line() {
    let dir = checkout();
    std::fs::write(
        dir.path().join("config/master.toml"),
        "api_adr = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let edge_id = "0191e9a0-0000-7000-8000-0000000000e1";
    let secret = "s".repeat(40);
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["master"], vec![], "`api_adr`"),
        (vec!["master", "--config", "nope.toml"], vec![], "nope.toml"),
        (
            vec!["edge"],
            vec![("OUTPOST_EDGE_ID", edge_id)],
            "`edge_secret`",
        ),
        (vec![], vec![("OUTPOST_EDGE_ID", "not-a-uuid")], "`edge_id`"),
        (
            vec!["edge"],
            vec![
                ("OUTPOST_EDGE_ID", edge_id),
                ("OUTPOST_EDGE_SECRET", &secret),
            ],
            "`ca_cert`",
        ),
        (
            vec!["edge"],
            vec![
                ("OUTPOST_EDGE_ID", edge_id),
                ("OUTPOST_EDGE_SECRET", &secret),
                ("OUTPOST_MASTERS", "localhost"),
            ],
            "`masters`",
        ),
    ];
    for (args, env, needle) in cases {
        let out = run(dir.path(), &args, &env);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {err}");
        assert!(err.contains(needle), "{args:?}: expected {needle} in {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    }
    std::fs::remove_file(dir.path().join("config/master.toml")).unwrap();
    let out = run(dir.path(), &["master"], &[("OUTPOST_API_ADDR", "nonsense")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("`api_addr`") && stderr(&out).contains("OUTPOST_API_ADDR"),
        "{}",
        stderr(&out)
    );

    // A certificate that exists but is not a certificate.
    // The edge verifies the master with this CA when it connects.
    assert!(run(dir.path(), &["certs", "init"], &[]).status.success());
    for f in ["ca.pem", "master.pem", "master-key.pem"] {
        std::fs::write(dir.path().join("certs").join(f), "garbage").unwrap();
    }
    let out = run(dir.path(), &["master"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("`ca_cert`"), "{}", stderr(&out));
}

#[test]
fn help_and_version() {
    let dir = checkout();
    let out = run(dir.path(), &[], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"));
    let out = run(dir.path(), &["--version"], &[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn certs_init_refuses_to_overwrite_without_force() {
    let dir = checkout();
    let out = run(
        dir.path(),
        &[
            "certs",
            "init",
            "--hosts",
            "localhost,127.0.0.1,edge.example",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let key = dir.path().join("certs/master-key.pem");
    let before = std::fs::read(&key).unwrap();
    let out = run(dir.path(), &["certs", "init"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&key).unwrap(), before, "nothing overwritten");
    let out = run(dir.path(), &["certs", "init", "--force"], &[]);
    assert!(out.status.success());
    assert_ne!(std::fs::read(&key).unwrap(), before);
    let out = run(
        dir.path(),
        &["certs", "init", "--dir", "other", "--hosts", "bad host"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("bad host"));
}

#[test]
fn admin_import_then_export_round_trips() {
    let dir = checkout();
    let out = run(
        dir.path(),
        &["admin", "import", "config/example-site.json"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("14 created"), "{stdout}");
    assert_eq!(stdout.matches("secret ").count(), 2, "{stdout}");
    let out = run(dir.path(), &["admin", "export", "-o", "export.json"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let exported = std::fs::read_to_string(dir.path().join("export.json")).unwrap();
    let original: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("config/example-site.json")).unwrap(),
    )
    .unwrap();
    let back: serde_json::Value = serde_json::from_str(&exported).unwrap();
    assert_eq!(
        back["modules"].as_array().unwrap().len(),
        original["modules"].as_array().unwrap().len()
    );
    // A broken file: clear error with its position, nothing written.
    std::fs::write(
        dir.path().join("bad.json"),
        "{\"modules\": [ {\"id\": 1} ]}",
    )
    .unwrap();
    let out = run(dir.path(), &["admin", "import", "bad.json"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("bad.json") && stderr(&out).contains("line 1"),
        "{}",
        stderr(&out)
    );
    let out = run(dir.path(), &["admin", "export"], &[]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), exported);

    // Rotation prints a new secret once; unknown ids are refused.
    let sydney = "0191e9a0-0000-7000-8000-0000000000e1";
    let out = run(dir.path(), &["admin", "rotate-secret", sydney], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("new secret"), "{stdout}");
    let secret = stdout
        .split("new secret ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    assert_eq!(secret.len(), 64);
    assert!(!exported.contains(secret));
    let out = run(
        dir.path(),
        &[
            "admin",
            "rotate-secret",
            "0191e9a0-0000-7000-8000-000000000101",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no edge location"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn edge_with_an_empty_replica_waits_for_the_first_sync() {
    let dir = checkout();
    // The edge verifies the master with this CA when it connects.
    assert!(run(dir.path(), &["certs", "init"], &[]).status.success());
    let secret = "e".repeat(64);
    let api = format!("127.0.0.1:{}", free_port());
    let mut child = outpost(
        dir.path(),
        &[],
        &[
            ("OUTPOST_EDGE_ID", "0191e9a0-0000-7000-8000-0000000000e1"),
            ("OUTPOST_EDGE_SECRET", &secret),
            ("OUTPOST_API_ADDR", &api),
        ],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let log = read_until(&mut child, "edge ready");
    assert!(log.contains("waiting for the first sync"), "{log}");
    assert!(!log.contains(&secret), "the secret is never logged");
    assert!(dir.path().join("data/edge.db").exists());
    let health = http_get(&api, "/api/v1/health", None);
    assert!(
        health.starts_with("HTTP/1.1 200") && health.contains("\"edge\""),
        "{health}"
    );
    assert!(
        !dir.path().join("data/admin-key").exists(),
        "edges get keys from the master"
    );
    stop(child);
}

/// Reads the child's stderr until a line contains `needle`; returns the log.
fn read_until(child: &mut std::process::Child, needle: &str) -> String {
    let stderr = child.stderr.as_mut().unwrap();
    let mut log = String::new();
    let mut byte = [0u8; 1];
    while !log.lines().any(|l| l.contains(needle)) {
        let n = std::io::Read::read(stderr, &mut byte).unwrap();
        assert!(n > 0, "process exited before '{needle}':\n{log}");
        log.push(byte[0] as char);
    }
    log
}

/// SIGTERM, then the exit status must be success; returns the rest of stderr.
fn stop(mut child: std::process::Child) -> String {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful stop exits 0: {status:?}");
    let mut rest = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut rest).unwrap();
    rest
}

#[test]
fn master_starts_on_embedded_defaults_and_stops_on_sigterm() {
    let dir = checkout();
    let link = format!("127.0.0.1:{}", free_port());
    let api = format!("127.0.0.1:{}", free_port());
    let mut child = outpost(
        dir.path(),
        &["master"],
        &[("OUTPOST_LINK_ADDR", &link), ("OUTPOST_API_ADDR", &api)],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let log = read_until(&mut child, "master ready");
    assert!(log.contains("development only"), "{log}");
    assert!(log.contains("generated the first admin API key"), "{log}");
    let key_file = dir.path().join("data/admin-key");
    let key = std::fs::read_to_string(&key_file).unwrap();
    assert!(!log.contains(key.trim()), "the key itself is never logged");
    let health = http_get(&api, "/api/v1/health", None);
    assert!(
        health.starts_with("HTTP/1.1 200") && health.contains("\"master\""),
        "{health}"
    );
    let edges = http_get(&api, "/api/v1/edges", Some(key.trim()));
    assert!(edges.starts_with("HTTP/1.1 200"), "{edges}");
    assert!(http_get(&api, "/api/v1/edges", None).starts_with("HTTP/1.1 401"));
    assert!(dir.path().join("data/master.db").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        for private in ["certs/master-key.pem", "data/admin-key"] {
            let mode = std::fs::metadata(dir.path().join(private))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{private}");
        }
    }
    let rest = stop(child);
    assert!(rest.contains("SIGTERM"), "{rest}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A blocking GET with `Connection: close`; returns the whole answer.
fn http_get(addr: &str, path: &str, key: Option<&str>) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn simulate_pjlink_speaks_the_protocol_until_sigterm() {
    use std::io::{BufRead as _, Write as _};
    let dir = checkout();
    let addr = format!("127.0.0.1:{}", free_port());
    let child = outpost(dir.path(), &["simulate", "pjlink", "--listen", &addr], &[])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stream = loop {
        match std::net::TcpStream::connect(&addr) {
            Ok(s) => break s,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    };
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    let mut line = Vec::new();
    reader.read_until(b'\r', &mut line).unwrap();
    assert_eq!(line, b"PJLINK 0\r");
    (&stream).write_all(b"%1POWR ?\r").unwrap();
    line.clear();
    reader.read_until(b'\r', &mut line).unwrap();
    assert_eq!(line, b"%1POWR=0\r");
    drop(stream);
    stop(child);
}

#[test]
fn a_toml_syntax_error_is_one_line_naming_the_file() {
    let dir = checkout();
    std::fs::write(dir.path().join("config/master.toml"), "api_addr = \n").unwrap();
    let out = run(dir.path(), &["master"], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("master.toml") && err.contains("line 1") && !err.contains("(configuration)"),
        "{err}"
    );
}

#[test]
fn config_is_offered_only_where_it_means_something() {
    let dir = checkout();
    let help = |args: &[&str]| {
        let mut args = args.to_vec();
        args.push("--help");
        let out = run(dir.path(), &args, &[]);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for args in [
        &["master"][..],
        &["edge"],
        &["admin"],
        &["admin", "export"],
        &["status"],
        &["exec"],
    ] {
        assert!(help(args).contains("--config"), "{args:?}");
    }
    for args in [
        &["simulate"][..],
        &["simulate", "pjlink"],
        &["simulate", "line"],
        &["certs"],
        &["certs", "init"],
        &["demo"],
    ] {
        assert!(!help(args).contains("--config"), "{args:?}");
    }
    // The line simulator's help says its commands, not where its source is.
    let line = help(&["simulate", "line"]);
    assert!(line.contains("PING") && !line.contains("sim::"), "{line}");
}

#[test]
fn export_without_a_store_fails_and_creates_none() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["admin", "export"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("no store at data/master.db"), "{err}");
    assert!(!dir.path().join("data").exists(), "export created a store");
}

#[test]
fn import_shows_its_changes_and_refuses_to_revert_newer_documents() {
    let dir = checkout();
    let import = |args: &[&str]| {
        let mut all = vec!["admin", "import"];
        all.extend_from_slice(args);
        run(dir.path(), &all, &[])
    };
    // A dry run on an empty store: every document would be created.
    let out = import(&["config/example-site.json", "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("would create "))
            .count(),
        14,
        "{stdout}"
    );
    assert!(
        stdout.contains("would create module 'Lobby projector'"),
        "{stdout}"
    );
    assert!(!stdout.contains("secret"), "{stdout}");
    let out = run(dir.path(), &["admin", "export"], &[]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "{\n  \"edges\": [],\n  \"systems\": [],\n  \"modules\": []\n}"
    );

    assert!(import(&["config/example-site.json"]).status.success());
    let out = run(dir.path(), &["admin", "export", "-o", "export.json"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let exported = std::fs::read_to_string(dir.path().join("export.json")).unwrap();
    assert!(exported.contains("\"rev\": 1"), "{exported}");
    // The same file again changes nothing.
    let out = import(&["config/example-site.json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("0 created, 0 replaced, 14 unchanged"),
        "{stdout}"
    );

    // An operator changes a module after the export (rev 2 now).
    let mut edited: serde_json::Value = serde_json::from_str(&exported).unwrap();
    edited["modules"][0]["name"] = "Renamed by an operator".into();
    std::fs::write(dir.path().join("newer.json"), edited.to_string()).unwrap();
    let out = import(&["newer.json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("replaced module 'Renamed by an operator'"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The older export, and the hand-written file, would revert it: refused.
    for file in ["export.json", "config/example-site.json"] {
        let out = import(&[file, "--dry-run"]);
        assert_eq!(out.status.code(), Some(1), "{file}");
        let err = stderr(&out);
        assert!(
            err.contains("changed since")
                && err.contains("--force")
                && err.contains("1 document(s)"),
            "{file}: {err}"
        );
    }
    let out = import(&["export.json"]);
    assert_eq!(out.status.code(), Some(1));
    // --dry-run --force lists the one replacement; --force does it.
    let out = import(&["export.json", "--dry-run", "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.matches("would replace module").count(),
        1,
        "{stdout}"
    );
    assert!(
        stdout.contains("would create 0, replace 1, leave 13 unchanged"),
        "{stdout}"
    );
    let out = import(&["export.json", "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(dir.path(), &["admin", "export"], &[]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("Renamed"));
}

#[test]
fn import_prints_each_problem_once() {
    let dir = checkout();
    let mut site: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("config/example-site.json")).unwrap(),
    )
    .unwrap();
    site["modules"][0]["uri"] = "udp://x:1".into();
    std::fs::write(dir.path().join("bad.json"), site.to_string()).unwrap();
    let out = run(dir.path(), &["admin", "import", "bad.json"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.matches("udp://x:1").count(), 1, "{err}");
    // A syntax error is said once too.
    std::fs::write(dir.path().join("broken.json"), "{\"modules\": [").unwrap();
    let out = run(dir.path(), &["admin", "import", "broken.json"], &[]);
    let err = stderr(&out);
    assert_eq!(err.matches("line 1").count(), 1, "{err}");
}

#[test]
fn the_pjlink_simulator_logs_each_command_and_state_change() {
    use std::io::{BufRead, BufReader, Read, Write};

    let dir = tempfile::tempdir().unwrap();
    let mut child = outpost(
        dir.path(),
        &[
            "simulate",
            "pjlink",
            "--listen",
            "127.0.0.1:0",
            "--warmup-ms",
            "0",
        ],
        &[],
    )
    .stdin(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // The log, line by line, with a deadline so a missing line fails
    // instead of hanging.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = || rx.recv_timeout(std::time::Duration::from_secs(30)).ok();
    let mut log = Vec::new();
    let addr = loop {
        let line = next().expect("the simulator's log");
        log.push(line.clone());
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    let mut device = std::net::TcpStream::connect(&addr).unwrap();
    let mut answer = |cmd: Option<&str>| {
        if let Some(cmd) = cmd {
            device.write_all(format!("{cmd}\r").as_bytes()).unwrap();
        }
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while device.read(&mut byte).unwrap() == 1 && byte[0] != b'\r' {
            got.push(byte[0]);
        }
        String::from_utf8(got).unwrap()
    };
    assert_eq!(answer(None), "PJLINK 0");
    assert_eq!(answer(Some("%1POWR 1")), "%1POWR=OK");
    assert_eq!(answer(Some("%1POWR ?")), "%1POWR=1");
    // Warming up (`POWR ?` would answer 3), the command, on (1), and the
    // question answered 1: each one line (the warm-up's end may be noticed
    // by the simulator's own tick before the command's line is written).
    let mut wanted = vec![
        "powr=3",
        "command=\"%1POWR 1\" reply=%1POWR=OK",
        "powr=1",
        "command=\"%1POWR ?\" reply=%1POWR=1",
    ];
    wanted.retain(|w| !log.iter().any(|l| l.contains(w)));
    while !wanted.is_empty()
        && let Some(line) = next()
    {
        wanted.retain(|w| !line.contains(w));
        log.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(wanted.is_empty(), "missing {wanted:?} in {log:#?}");
}

/// `outpost admin export` writes `"<redacted>"` for secret settings (the
/// example site's projector password); `--include-secrets` writes the
/// values, only to a file, created with mode 0600; re-importing the
/// redacted export keeps the stored password.
#[test]
fn export_redacts_secrets_unless_asked_and_then_writes_a_private_file() {
    let dir = checkout();
    let out = run(
        dir.path(),
        &["admin", "import", "config/example-site.json"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let password = "JBMIAProjectorLink";
    let out = run(dir.path(), &["admin", "export", "-o", "plain.json"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plain = std::fs::read_to_string(dir.path().join("plain.json")).unwrap();
    assert!(
        plain.contains("\"password\": \"<redacted>\"") && !plain.contains(password),
        "{plain}"
    );
    let out = run(dir.path(), &["admin", "export", "--include-secrets"], &[]);
    assert_eq!(out.status.code(), Some(1), "standard output is refused");
    assert!(stderr(&out).contains("--output"), "{}", stderr(&out));
    let out = run(
        dir.path(),
        &["admin", "export", "--include-secrets", "-o", "full.json"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let full = dir.path().join("full.json");
    assert!(std::fs::read_to_string(&full).unwrap().contains(password));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&full).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // The redacted file imported again: nothing changes, the password stays.
    let out = run(dir.path(), &["admin", "import", "plain.json"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0 created, 0 replaced"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = run(
        dir.path(),
        &["admin", "export", "--include-secrets", "-o", "full.json"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::read_to_string(&full).unwrap().contains(password));
}

/// A short operator-supplied admin key is refused at start, naming the key,
/// before anything is opened; `edge_secret_file` must be private (0600)
/// and is then read as the secret.
#[test]
fn a_short_admin_key_and_a_readable_secret_file_are_configuration_errors() {
    let dir = checkout();
    let out = run(
        dir.path(),
        &["master"],
        &[("OUTPOST_ADMIN_KEY", "short-admin-key")],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("`admin_key`") && err.contains("32"), "{err}");
    assert!(!dir.path().join("data").exists(), "the master started");

    let edge_id = "0191e9a0-0000-7000-8000-0000000000e1";
    let file = dir.path().join("edge.secret");
    std::fs::write(&file, format!("{}\n", "s".repeat(40))).unwrap();
    let env = [
        ("OUTPOST_EDGE_ID", edge_id),
        ("OUTPOST_EDGE_SECRET_FILE", "edge.secret"),
    ];
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = run(dir.path(), &["edge"], &env);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("`edge_secret_file`") && err.contains("0644"),
            "{err}"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // Private: the secret is taken, and the next missing piece is named.
    let out = run(dir.path(), &["edge"], &env);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("`ca_cert`"), "{err}");
}
