//! A generic line-protocol device on real TCP, with commands that make it
//! misbehave on purpose (flood, endless line, garbage, half a reply, close),
//! so the runtime's defences can be tested against real sockets.
//!
//! Protocol (lines end with the configured delimiter, `\n` by default):
//! `PING` → `PONG`; `GET k` → `k=v` or `ERR no such key k`; `SET k v` →
//! `k=v`; `ECHO text` → `text`; `DELAY ms text` → `text` after `ms`;
//! `SILENT` → nothing; `FLOOD` → endless lines; `ENDLESS` → endless bytes
//! without a delimiter; `GARBAGE n` → `n` random bytes; `HALF` → a partial
//! reply then close; `CLOSE` → close; anything else → `ERR unknown command`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Counter, Kick, LineReader};
use crate::util::Unpoisoned;

#[derive(Debug, Clone)]
pub struct LineOptions {
    pub delimiter: Vec<u8>,
    /// Sent to every client on connect.
    pub greeting: Option<String>,
    /// Longest command line accepted; a longer one closes the connection.
    pub max_line: usize,
}

impl Default for LineOptions {
    fn default() -> Self {
        LineOptions {
            delimiter: b"\n".to_vec(),
            greeting: None,
            max_line: 4096,
        }
    }
}

struct Inner {
    opts: LineOptions,
    values: Mutex<BTreeMap<String, String>>,
    commands: std::sync::atomic::AtomicU64,
    conns: Arc<Counter>,
    kick: Kick,
    push: broadcast::Sender<Vec<u8>>,
}

/// A running simulated line device.
pub struct LineSim {
    addr: SocketAddr,
    inner: Arc<Inner>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl LineSim {
    pub async fn start(addr: SocketAddr, opts: LineOptions) -> std::io::Result<LineSim> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            opts,
            values: Mutex::new(BTreeMap::new()),
            commands: Default::default(),
            conns: Arc::new(Counter::default()),
            kick: Kick::default(),
            push: broadcast::channel(64).0,
        });
        let cancel = CancellationToken::new();
        let task = tokio::spawn(super::accept(listener, inner.clone(), cancel.clone()));
        Ok(LineSim {
            addr,
            inner,
            cancel,
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn connections(&self) -> usize {
        self.inner.conns.current()
    }

    pub fn max_connections_seen(&self) -> usize {
        self.inner.conns.max()
    }

    /// Starts a new measurement for [`Self::max_connections_seen`].
    pub fn reset_max_connections(&self) {
        self.inner.conns.reset_max()
    }

    /// The recent changes of the number of open connections, with their
    /// time, oldest first.
    pub fn connection_log(&self) -> Vec<(std::time::Instant, usize)> {
        self.inner.conns.log()
    }

    pub fn total_connections(&self) -> u64 {
        self.inner.conns.total()
    }

    /// Command lines received since start.
    pub fn commands(&self) -> u64 {
        self.inner
            .commands
            .load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn value(&self, key: &str) -> Option<String> {
        self.inner.values.lock_unpoisoned().get(key).cloned()
    }

    /// Changes a value on the device side and tells every connected client
    /// (`k=v`, unsolicited), as a device does when someone presses a button.
    pub fn set_value(&self, key: &str, value: &str) {
        self.inner
            .values
            .lock_unpoisoned()
            .insert(key.to_owned(), value.to_owned());
        self.push_line(&format!("{key}={value}"));
    }

    /// Sends a line to every connected client.
    pub fn push_line(&self, line: &str) {
        let mut data = line.as_bytes().to_vec();
        data.extend_from_slice(&self.inner.opts.delimiter);
        let _ = self.inner.push.send(data);
    }

    pub fn kick_clients(&self) {
        self.inner.kick.kick();
    }

    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        self.inner.kick.kick();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for LineSim {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.inner.kick.kick();
    }
}

impl super::Served for Inner {
    const NAME: &'static str = "line sim";

    fn conns(&self) -> &Arc<Counter> {
        &self.conns
    }

    fn kick(&self) -> &Kick {
        &self.kick
    }

    async fn serve(self: Arc<Self>, stream: TcpStream) -> std::io::Result<()> {
        serve(stream, &self).await
    }
}

async fn serve(stream: TcpStream, inner: &Inner) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let (mut r, mut w) = stream.into_split();
    let delim = inner.opts.delimiter.clone();
    let mut push = inner.push.subscribe();
    if let Some(g) = &inner.opts.greeting {
        send_line(&mut w, g, &delim).await?;
    }
    let mut lines = LineReader::new(&delim, inner.opts.max_line);
    loop {
        let line = tokio::select! {
            l = lines.next_line(&mut r) => match l? {
                Ok(Some(l)) => l,
                Ok(None) | Err(super::TooLong) => return Ok(()),
            },
            p = push.recv() => {
                if let Ok(data) = p {
                    w.write_all(&data).await?;
                }
                continue;
            }
        };
        inner
            .commands
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let line = String::from_utf8_lossy(&line);
        tracing::info!(command = %line.trim_end_matches('\r'), "line device: command");
        if let Reply::Close = answer(&mut w, inner, &delim, line.trim_end_matches('\r')).await? {
            return Ok(());
        }
    }
}

/// Whether the connection stays open after a command.
enum Reply {
    Open,
    Close,
}

/// Answers one command line.
async fn answer(
    w: &mut OwnedWriteHalf,
    inner: &Inner,
    delim: &[u8],
    line: &str,
) -> std::io::Result<Reply> {
    let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
    match cmd {
        "PING" => send_line(w, "PONG", delim).await?,
        "GET" => {
            let v = inner.values.lock_unpoisoned().get(rest).cloned();
            let reply = match v {
                Some(v) => format!("{rest}={v}"),
                None => format!("ERR no such key {rest}"),
            };
            send_line(w, &reply, delim).await?;
        }
        "SET" => {
            let (k, v) = rest.split_once(' ').unwrap_or((rest, ""));
            let old = inner
                .values
                .lock_unpoisoned()
                .insert(k.to_owned(), v.to_owned());
            if old.as_deref() != Some(v) {
                tracing::info!(key = k, value = v, "line device: state changed");
            }
            send_line(w, &format!("{k}={v}"), delim).await?;
        }
        "ECHO" => send_line(w, rest, delim).await?,
        "DELAY" => {
            let (ms, text) = rest.split_once(' ').unwrap_or((rest, ""));
            let ms: u64 = ms.parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            send_line(w, text, delim).await?;
        }
        "SILENT" => {}
        "FLOOD" => flood(w, delim).await?,
        "ENDLESS" => {
            let chunk = vec![b'A'; 64 * 1024];
            loop {
                w.write_all(&chunk).await?;
            }
        }
        "GARBAGE" => {
            let n: usize = rest.parse::<usize>().unwrap_or(64).min(1024 * 1024);
            let data: Vec<u8> = (0..n).map(|_| fastrand::u8(..)).collect();
            w.write_all(&data).await?;
        }
        "HALF" => {
            w.write_all(b"partial rep").await?;
            w.shutdown().await?;
            return Ok(Reply::Close);
        }
        "CLOSE" => return Ok(Reply::Close),
        _ => send_line(w, "ERR unknown command", delim).await?,
    }
    Ok(Reply::Open)
}

async fn send_line(w: &mut OwnedWriteHalf, line: &str, delim: &[u8]) -> std::io::Result<()> {
    let mut data = Vec::with_capacity(line.len() + delim.len());
    data.extend_from_slice(line.as_bytes());
    data.extend_from_slice(delim);
    w.write_all(&data).await
}

/// Sends numbered lines until the peer goes away (a device flooding its
/// controller).
async fn flood(w: &mut OwnedWriteHalf, delim: &[u8]) -> std::io::Result<()> {
    let mut i = 0u64;
    loop {
        let mut chunk = Vec::with_capacity(64 * 1024);
        while chunk.len() < 60 * 1024 {
            chunk.extend_from_slice(format!("flood {i}").as_bytes());
            chunk.extend_from_slice(delim);
            i += 1;
        }
        w.write_all(&chunk).await?;
    }
}
