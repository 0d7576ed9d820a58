//! The commands an operator reaches for on a running master, all through its
//! web API: `outpost status` (every site: link, controller, epoch),
//! `outpost exec MODULE METHOD [ARGS…]`, `outpost logs MODULE` (the live
//! debug stream) and `outpost certs issue-edge EDGE_ID`.
//!
//! The key comes from `--key-file`, else `OUTPOST_ADMIN_KEY` (the
//! configuration's `admin_key`), else `<data_dir>/admin-key`, as for
//! `outpost admin restore`; the API from `--api`, else the configured
//! `api_addr`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::Value;

use crate::config::{Config, Role, Sources};

/// Where the master's API is and which key to use.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// The master's API, e.g. `http://10.0.0.5:8080` (default: the
    /// configured `api_addr`).
    #[arg(long)]
    pub api: Option<String>,
    /// A file holding an API key (default: `OUTPOST_ADMIN_KEY`, else
    /// `<data_dir>/admin-key`).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Print the sites as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The module: its id or its name.
    pub module: String,
    /// The driver function.
    pub method: String,
    /// Arguments, each read as JSON when it parses (`true`, `3`, `"x"`),
    /// else as a string.
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The module: its id or its name.
    pub module: String,
}

#[derive(Debug, Args)]
pub struct IssueEdgeArgs {
    /// The edge location's id (the certificate's common name).
    pub edge_id: uuid::Uuid,
    /// Directory holding the development CA (ca.pem, ca-key.pem); the
    /// certificate and key are written there too.
    #[arg(long, default_value = "certs")]
    pub dir: PathBuf,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

/// A connection to the master's API: base URL and key.
pub struct Client {
    pub base: String,
    key: String,
}

impl Client {
    /// From the command line and the configuration, as `admin restore` does.
    pub fn new(config: &Config, args: &ApiArgs) -> Result<Client, String> {
        let key = match (&args.key_file, &config.admin_key) {
            (Some(path), _) => read_key(path)?,
            (None, Some(key)) => key.expose().to_owned(),
            (None, None) => read_key(&config.data_dir.join("admin-key"))?,
        };
        let base = args
            .api
            .clone()
            .unwrap_or_else(|| format!("http://{}", config.api_addr));
        Ok(Client { base, key })
    }

    /// A request whose answer must be 2xx JSON.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, String> {
        let text = body.map(Value::to_string);
        let (status, answer) =
            crate::http::request(&self.base, method, path, &self.key, text.as_deref())
                .await
                .map_err(|e| format!("cannot reach the master's API at {}: {e}", self.base))?;
        let json: Value = serde_json::from_str(&answer).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            Ok(json)
        } else {
            let why = json["error"].as_str().unwrap_or(answer.trim());
            Err(format!("{method} {path}: {status} {why}"))
        }
    }

    /// A module's id from its id or its name (exactly one module may have it).
    pub async fn module_id(&self, module: &str) -> Result<uuid::Uuid, String> {
        if let Ok(id) = module.parse() {
            return Ok(id);
        }
        let mut found = Vec::new();
        let mut after = String::new();
        loop {
            let page = self
                .call("GET", &format!("/api/v1/modules?limit=1000{after}"), None)
                .await?;
            for m in page["items"].as_array().into_iter().flatten() {
                if m["name"].as_str() == Some(module) {
                    found.push(m["id"].as_str().unwrap_or_default().to_owned());
                }
            }
            match page["next"].as_str() {
                Some(next) => after = format!("&after={next}"),
                None => break,
            }
        }
        match found.as_slice() {
            [one] => one.parse().map_err(|e| format!("bad module id {one}: {e}")),
            [] => Err(format!("no module named '{module}'")),
            _ => Err(format!(
                "{} modules are named '{module}': give its id",
                found.len()
            )),
        }
    }
}

fn read_key(path: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| {
            format!(
                "cannot read an API key from {}: {e} (pass --key-file or set OUTPOST_ADMIN_KEY)",
                path.display()
            )
        })
}

/// Loads the master's configuration and runs `f` with a client, printing
/// its error and choosing the exit code.
fn with_client<F, Fut>(file: Option<PathBuf>, args: &ApiArgs, f: F) -> ExitCode
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let config = match Config::load(&Sources {
        file,
        role: Some(Role::Master),
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("outpost: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match Client::new(&config, args) {
        Ok(client) => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(f(client)),
            Err(e) => Err(format!("cannot start the tokio runtime: {e}")),
        },
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("outpost: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `outpost status [--json]`.
pub fn status(file: Option<PathBuf>, args: StatusArgs) -> ExitCode {
    with_client(file, &args.api.clone(), async move |client| {
        let sites = client.call("GET", "/api/v1/sites", None).await?;
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&sites).unwrap_or_default()
            );
        } else {
            print!("{}", status_table(sites.as_array().map_or(&[][..], |v| v)));
        }
        Ok(())
    })
}

/// The sites as a plain-text table, one line each, sorted by name.
pub fn status_table(sites: &[Value]) -> String {
    let mut rows: Vec<[String; 6]> = sites
        .iter()
        .map(|s| {
            let link = if s["connected"].as_bool() == Some(true) {
                "connected".to_owned()
            } else if s["last_stop"] == "planned" {
                // It stopped gracefully, saying it would restart.
                "restarting".to_owned()
            } else {
                "lost".to_owned()
            };
            let failover = if s["maintenance_since_ms"].is_i64() {
                "maintenance".to_owned()
            } else if s["failover"].as_bool() == Some(true) {
                format!("on ({} ms)", s["failover_timeout_ms"])
            } else {
                "off".to_owned()
            };
            let unsynced = s["events_unsynced"]
                .as_i64()
                .map_or("-".to_owned(), |n| n.to_string());
            [
                s["name"].as_str().unwrap_or("?").to_owned(),
                link,
                s["controller"].as_str().unwrap_or("?").to_owned(),
                s["epoch"].to_string(),
                failover,
                unsynced,
            ]
        })
        .collect();
    rows.sort();
    let header = [
        "SITE",
        "LINK",
        "CONTROLLER",
        "EPOCH",
        "FAILOVER",
        "UNSYNCED",
    ]
    .map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// An argument as JSON when it parses, else as a string.
fn arg(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// `outpost exec MODULE METHOD [ARGS…]`: prints the driver's answer as JSON.
pub fn exec(file: Option<PathBuf>, args: ExecArgs) -> ExitCode {
    with_client(file, &args.api.clone(), async move |client| {
        let id = client.module_id(&args.module).await?;
        let body = serde_json::json!({
            "method": args.method,
            "args": args.args.iter().map(|a| arg(a)).collect::<Vec<_>>(),
        });
        let answer = client
            .call("POST", &format!("/api/v1/modules/{id}/exec"), Some(&body))
            .await?;
        println!(
            "{}",
            serde_json::to_string_pretty(&answer["result"]).unwrap_or_default()
        );
        Ok(())
    })
}

/// `outpost logs MODULE`: the module's live debug stream until Ctrl-C.
pub fn logs(file: Option<PathBuf>, args: LogsArgs) -> ExitCode {
    with_client(file, &args.api.clone(), async move |client| {
        let id = client.module_id(&args.module).await?;
        tokio::select! {
            r = follow_debug(&client, id) => r,
            () = crate::shutdown::signal() => Ok(()),
        }
    })
}

async fn follow_debug(client: &Client, module: uuid::Uuid) -> Result<(), String> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let authority = crate::http::authority(&client.base)?;
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("cannot reach the master's API at {}: {e}", client.base))?;
    let mut req = format!("ws://{authority}/api/v1/ws")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", client.key)
            .parse()
            .map_err(|_| "the key is not a valid header value".to_owned())?,
    );
    let (mut ws, _) = tokio_tungstenite::client_async(req, stream)
        .await
        .map_err(|e| format!("cannot open the WebSocket: {e}"))?;
    let subscribe =
        serde_json::json!({"op": "subscribe", "id": 1, "topic": "debug", "module": module});
    ws.send(Message::Text(subscribe.to_string().into()))
        .await
        .map_err(|e| e.to_string())?;
    while let Some(msg) = ws.next().await {
        let text = match msg.map_err(|e| e.to_string())? {
            Message::Text(t) => t,
            Message::Close(_) => break,
            _ => continue,
        };
        let v: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
        match v["type"].as_str() {
            Some("debug") => println!(
                "{:<5} {}",
                v["level"].as_str().unwrap_or("?"),
                v["message"].as_str().unwrap_or("")
            ),
            Some("subscribed") => eprintln!("following module {module}; Ctrl-C to stop"),
            Some("dropped") => eprintln!("({} lines dropped: reading too slowly)", v["count"]),
            Some("error") => return Err(v["error"].as_str().unwrap_or("error").to_owned()),
            _ => {}
        }
    }
    Err("the master closed the stream".to_owned())
}

/// `outpost certs issue-edge EDGE_ID`.
pub fn issue_edge(args: IssueEdgeArgs) -> ExitCode {
    crate::certs::install_crypto_provider();
    match crate::certs::issue_edge(&args.dir, args.edge_id, args.force) {
        Ok((cert, key)) => {
            println!(
                "wrote {} and {} (signed by the development CA in {}); on the edge set \
                 OUTPOST_TLS_CLIENT_CERT and OUTPOST_TLS_CLIENT_KEY to them, and \
                 OUTPOST_LINK_CLIENT_CA={} on the master",
                cert.display(),
                key.display(),
                args.dir.display(),
                args.dir.join("ca.pem").display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("outpost: {}", crate::util::describe(&e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_table_lines_up_and_sorts_by_name() {
        let sites = serde_json::json!([
            {"name": "Sydney", "connected": false, "controller": "master", "epoch": 2, "failover": true, "failover_timeout_ms": 5000},
            {"name": "Perth", "connected": true, "controller": "edge", "epoch": 1, "failover": false},
            {"name": "Oslo", "connected": false, "last_stop": "planned", "controller": "edge", "epoch": 3, "failover": true, "maintenance_since_ms": 1},
        ]);
        let table = status_table(sites.as_array().unwrap());
        assert_eq!(
            table,
            "SITE    LINK        CONTROLLER  EPOCH  FAILOVER      UNSYNCED\n\
             Oslo    restarting  edge        3      maintenance   -\n\
             Perth   connected   edge        1      off           -\n\
             Sydney  lost        master      2      on (5000 ms)  -\n"
        );
    }

    #[test]
    fn arguments_are_json_when_they_parse() {
        assert_eq!(arg("true"), Value::Bool(true));
        assert_eq!(arg("31"), serde_json::json!(31));
        assert_eq!(arg("on"), Value::String("on".into()));
    }
}
