//! Device simulators: real TCP servers speaking real protocols, used by the
//! tests, the benchmark and `outpost simulate`. Each counts its concurrent
//! client connections, because the failover tests assert that only one
//! controller is connected to a device.

pub mod cli;
pub mod line;
pub mod pjlink;

pub use line::{LineOptions, LineSim};
pub use pjlink::{PjlinkOptions, PjlinkSim, Power};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use memchr::memmem;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use crate::util::Unpoisoned;

/// Concurrent connection bookkeeping of one simulator.
#[derive(Debug, Default)]
pub(crate) struct Counter {
    current: AtomicUsize,
    max: AtomicUsize,
    total: AtomicU64,
    /// The recent changes of `current`, with their time (gap and overlap
    /// measurements of a hand-over).
    log: std::sync::Mutex<std::collections::VecDeque<(std::time::Instant, usize)>>,
}

/// Changes of the connection count kept for [`Counter::log`].
const LOG_LEN: usize = 256;

impl Counter {
    pub(crate) fn enter(self: &Arc<Self>) -> ConnGuard {
        let now = self.current.fetch_add(1, Ordering::AcqRel) + 1;
        self.max.fetch_max(now, Ordering::AcqRel);
        self.total.fetch_add(1, Ordering::AcqRel);
        self.note(now);
        ConnGuard(self.clone())
    }

    fn note(&self, count: usize) {
        let mut log = self.log.lock_unpoisoned();
        if log.len() == LOG_LEN {
            log.pop_front();
        }
        log.push_back((std::time::Instant::now(), count));
    }

    /// The recent changes of the open-connection count, oldest first.
    pub(crate) fn log(&self) -> Vec<(std::time::Instant, usize)> {
        self.log.lock_unpoisoned().iter().copied().collect()
    }

    /// Starts a new measurement of the most connections open at once.
    pub(crate) fn reset_max(&self) {
        self.max.store(self.current(), Ordering::Release);
    }

    pub(crate) fn current(&self) -> usize {
        self.current.load(Ordering::Acquire)
    }

    pub(crate) fn max(&self) -> usize {
        self.max.load(Ordering::Acquire)
    }

    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Acquire)
    }
}

/// Decrements the count when a connection handler ends, however it ends.
pub(crate) struct ConnGuard(Arc<Counter>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let now = self.0.current.fetch_sub(1, Ordering::AcqRel) - 1;
        self.0.note(now);
    }
}

/// Cancels the connections open now without stopping the listener (to
/// simulate a device that drops its clients).
#[derive(Debug, Default)]
pub(crate) struct Kick(std::sync::Mutex<CancellationToken>);

impl Kick {
    pub(crate) fn token(&self) -> CancellationToken {
        self.0.lock_unpoisoned().clone()
    }

    pub(crate) fn kick(&self) {
        let old = std::mem::take(&mut *self.0.lock_unpoisoned());
        old.cancel();
    }
}

/// Reads delimited lines with a bounded buffer; cancel-safe (bytes read are
/// kept in `buf` if the caller's select drops the future).
pub(crate) struct LineReader {
    buf: Vec<u8>,
    delim: Vec<u8>,
    max: usize,
}

/// A line longer than the simulator accepts.
#[derive(Debug)]
pub(crate) struct TooLong;

impl LineReader {
    pub(crate) fn new(delim: &[u8], max: usize) -> LineReader {
        LineReader {
            buf: Vec::new(),
            delim: delim.to_vec(),
            max,
        }
    }

    /// `Ok(None)` at end of stream.
    pub(crate) async fn next_line<R: tokio::io::AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
    ) -> std::io::Result<Result<Option<Vec<u8>>, TooLong>> {
        loop {
            if let Some(pos) = memmem::find(&self.buf, &self.delim) {
                let line = self.buf[..pos].to_vec();
                self.buf.drain(..pos + self.delim.len());
                return Ok(Ok(Some(line)));
            }
            if self.buf.len() > self.max {
                return Ok(Err(TooLong));
            }
            self.buf.reserve(1024);
            if r.read_buf(&mut self.buf).await? == 0 {
                return Ok(Ok(None));
            }
        }
    }
}

/// What the shared accept loop needs from a simulator.
pub(crate) trait Served: Send + Sync + 'static {
    /// For log lines, e.g. `pjlink sim`.
    const NAME: &'static str;
    fn conns(&self) -> &Arc<Counter>;
    fn kick(&self) -> &Kick;
    /// Serves one client connection until it ends.
    fn serve(
        self: Arc<Self>,
        stream: tokio::net::TcpStream,
    ) -> impl std::future::Future<Output = std::io::Result<()>> + Send;
}

/// Accepts clients until `cancel`; each connection is counted while open and
/// dropped when the simulator kicks its clients.
pub(crate) async fn accept<S: Served>(
    listener: tokio::net::TcpListener,
    inner: Arc<S>,
    cancel: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("{} accept failed: {e}", S::NAME);
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Let the reactor report what else happened meanwhile: a client
        // that closed just before this one connected is counted out before
        // this one is counted in (a hand-over is not an overlap).
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        let guard = inner.conns().enter();
        let kick = inner.kick().token();
        let inner = inner.clone();
        tokio::spawn(async move {
            let _guard = guard;
            tokio::select! {
                _ = kick.cancelled() => {}
                r = inner.serve(stream) => {
                    if let Err(e) = r {
                        tracing::debug!("{} connection ended: {e}", S::NAME);
                    }
                }
            }
        });
    }
}
