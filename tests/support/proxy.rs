//! A fault-injecting TCP proxy for link tests: it forwards to a target and,
//! on command, cuts every connection (and refuses new ones), blackholes
//! them (stops forwarding without closing anything, as a partition does),
//! delays every chunk, or caps the bandwidth. `heal` forwards again; connections that were
//! blackholed are closed then, as a peer's TCP would eventually do.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Forward,
    /// Close every connection; accept new ones and close them at once.
    Cut,
    /// Forward nothing, close nothing.
    Blackhole,
    /// Forward every chunk after this delay.
    Delay(Duration),
    /// Forward at most this many bytes per second in each direction.
    Throttle(u64),
}

pub struct Proxy {
    addr: SocketAddr,
    mode: watch::Sender<(Mode, u64)>,
    accepted: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        Proxy::start_on("127.0.0.1".parse().unwrap(), target).await
    }

    /// A proxy listening on `ip` (port 0), e.g. the root side of a veth
    /// pair, for a peer in another network namespace.
    pub async fn start_on(ip: std::net::IpAddr, target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, _) = watch::channel((Mode::Forward, 0));
        let accepted = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        tokio::spawn(accept(
            listener,
            target,
            mode.subscribe(),
            accepted.clone(),
            stop.clone(),
        ));
        Proxy {
            addr,
            mode,
            accepted,
            stop,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Acquire)
    }

    fn set(&self, mode: Mode) {
        self.mode.send_modify(|(m, generation)| {
            *m = mode;
            *generation += 1;
        });
    }

    pub fn cut(&self) {
        self.set(Mode::Cut);
    }

    pub fn blackhole(&self) {
        self.set(Mode::Blackhole);
    }

    pub fn delay(&self, by: Duration) {
        self.set(Mode::Delay(by));
    }

    pub fn throttle(&self, bytes_per_second: u64) {
        self.set(Mode::Throttle(bytes_per_second.max(1)));
    }

    pub fn heal(&self) {
        self.set(Mode::Forward);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept(
    listener: TcpListener,
    target: SocketAddr,
    mode: watch::Receiver<(Mode, u64)>,
    accepted: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    loop {
        let client = tokio::select! {
            () = stop.cancelled() => return,
            r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
        };
        accepted.fetch_add(1, Ordering::AcqRel);
        if mode.borrow().0 == Mode::Cut {
            drop(client);
            continue;
        }
        let Ok(server) = TcpStream::connect(target).await else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (cr, cw) = client.into_split();
        let (sr, sw) = server.into_split();
        let done = stop.child_token();
        for (r, w) in [
            (
                Box::new(cr) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
                Box::new(sw) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
            ),
            (Box::new(sr), Box::new(cw)),
        ] {
            tokio::spawn(pump(r, w, mode.clone(), done.clone()));
        }
    }
}

/// Copies one direction. A cut or a heal after a blackhole ends the
/// connection (both directions, through `done`).
async fn pump(
    mut r: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    mut w: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    mut mode: watch::Receiver<(Mode, u64)>,
    done: CancellationToken,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut blackholed = mode.borrow().0 == Mode::Blackhole;
    loop {
        let n = tokio::select! {
            () = done.cancelled() => return,
            changed = mode.changed() => {
                if changed.is_err() {
                    done.cancel();
                    return;
                }
                let now = mode.borrow().0;
                match now {
                    Mode::Cut => { done.cancel(); return; }
                    Mode::Blackhole => blackholed = true,
                    Mode::Forward | Mode::Delay(_) | Mode::Throttle(_) if blackholed => { done.cancel(); return; }
                    _ => {}
                }
                continue;
            }
            r = r.read(&mut buf) => match r {
                Ok(0) | Err(_) => {
                    if !blackholed {
                        done.cancel();
                        return;
                    }
                    // A partition does not carry the close either.
                    done.cancelled().await;
                    return;
                }
                Ok(n) => n,
            },
        };
        let now = mode.borrow().0;
        match now {
            Mode::Blackhole => continue,
            Mode::Delay(d) => tokio::time::sleep(d).await,
            Mode::Throttle(rate) => {
                tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
            }
            _ => {}
        }
        if w.write_all(&buf[..n]).await.is_err() {
            done.cancel();
            return;
        }
    }
}
