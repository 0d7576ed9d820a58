//! The TCP client a device module uses: connect with a timeout, reconnect
//! with exponential backoff and jitter, TCP keepalive, framing, a bounded
//! outbound buffer and a flood limit. Drivers never see a socket; the module
//! task owns one [`DeviceConnection`] and polls [`DeviceConnection::next`] in its select loop.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::{Instant, Sleep};

use super::framing::{Framer, Framing};

/// Whether this process may send anything to a device now. A master node
/// of a cluster passes one that reads its lease deadline on a clock that
/// keeps counting through suspension; the runtime asks it before every
/// socket write and every connect, so a node resumed past its deadline
/// sends nothing, whatever its other tasks have not noticed yet.
#[derive(Clone, Default)]
pub struct DeviceGate(Option<std::sync::Arc<dyn Fn() -> bool + Send + Sync>>);

impl DeviceGate {
    pub fn new(open: impl Fn() -> bool + Send + Sync + 'static) -> DeviceGate {
        DeviceGate(Some(std::sync::Arc::new(open)))
    }

    /// True when no gate was given (a master alone, an edge).
    pub fn open(&self) -> bool {
        self.0.as_ref().is_none_or(|f| f())
    }
}

impl std::fmt::Debug for DeviceGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "DeviceGate(some)"
        } else {
            "DeviceGate(none)"
        })
    }
}

const GATE_CLOSED: &str =
    "this node may no longer drive devices (its cluster lease may have expired)";

/// Transport tuning shared by every module of a runtime.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// A connect attempt (DNS included) that takes longer fails and backs off.
    pub connect_timeout: Duration,
    /// First reconnect delay; doubles per failed attempt up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// TCP keepalive idle time; `None` leaves the OS default (off).
    pub keepalive: Option<Duration>,
    /// Longest frame (or partial frame) kept in memory.
    pub max_frame: usize,
    /// More than this many bytes received within `flood_window` disconnects
    /// the device: a flooding device must not starve the other modules.
    pub flood_bytes: usize,
    pub flood_window: Duration,
    /// More than this many unsolicited frames (frames no request waited
    /// for) within `flood_window` also counts as a flood: each costs a
    /// driver call, so a device can overwhelm its module long before the
    /// byte limit. Answers to our own requests are not counted.
    pub flood_frames: usize,
    /// Bytes accepted for writing but not yet taken by the socket; past it,
    /// commands stay in the queue instead of growing the buffer.
    pub max_outbound: usize,
    /// Consulted before every write and connect (see [`DeviceGate`]).
    pub gate: DeviceGate,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            connect_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            keepalive: Some(Duration::from_secs(30)),
            max_frame: 64 * 1024,
            flood_bytes: 1024 * 1024,
            flood_window: Duration::from_secs(1),
            flood_frames: 5000,
            max_outbound: 64 * 1024,
            gate: DeviceGate::default(),
        }
    }
}

/// What happened on the device connection.
#[derive(Debug)]
pub(crate) enum ConnectionEvent {
    Connected,
    ConnectFailed(String),
    Frames(Vec<Vec<u8>>),
    /// `error` is true when we cut the device off (flood, overlong frame, I/O
    /// error) rather than the device closing cleanly.
    Disconnected {
        reason: String,
        error: bool,
    },
}

enum Io {
    Read(std::io::Result<usize>),
    Wrote(std::io::Result<usize>),
}

type ConnectFuture = Pin<Box<dyn Future<Output = std::io::Result<TcpStream>> + Send>>;

enum State {
    Idle,
    Connecting(ConnectFuture),
    Connected(Box<Conn>),
    Backoff(Pin<Box<Sleep>>),
}

struct Conn {
    read: OwnedReadHalf,
    write: OwnedWriteHalf,
    out: Vec<u8>,
    since: Instant,
    window_start: Instant,
    window_bytes: usize,
}

/// Delay before reconnect attempt `attempt` (0-based): doubling from `min`
/// up to `max`, times a jitter of ±25% (`sample` in [0, 1)) so many modules
/// that lost the same network do not reconnect in lock step.
pub(crate) fn backoff_delay(attempt: u32, min: Duration, max: Duration, sample: f64) -> Duration {
    let base = min.saturating_mul(1 << attempt.min(16)).min(max);
    base.mul_f64(0.75 + sample.clamp(0.0, 1.0) * 0.5)
}

pub(crate) struct DeviceConnection {
    host: String,
    port: u16,
    cfg: TransportConfig,
    state: State,
    framer: Framer,
    attempt: u32,
}

impl DeviceConnection {
    pub(crate) fn new(
        host: String,
        port: u16,
        framing: Framing,
        cfg: TransportConfig,
    ) -> DeviceConnection {
        let framer = Framer::new(framing, cfg.max_frame);
        DeviceConnection {
            host,
            port,
            cfg,
            state: State::Idle,
            framer,
            attempt: 0,
        }
    }

    pub(crate) fn endpoint(&self) -> (&str, u16) {
        (&self.host, self.port)
    }

    pub(crate) fn framing(&self) -> &Framing {
        self.framer.framing()
    }

    /// Replaces the framing; a partial frame under the old rules is dropped.
    pub(crate) fn set_framing(&mut self, framing: Framing) {
        self.framer = Framer::new(framing, self.cfg.max_frame);
    }

    pub(crate) fn is_connected(&self) -> bool {
        matches!(self.state, State::Connected(_))
    }

    pub(crate) fn is_active(&self) -> bool {
        !matches!(self.state, State::Idle)
    }

    /// Starts connecting now (no-op if already connecting or connected).
    pub(crate) fn start(&mut self) {
        if matches!(self.state, State::Idle | State::Backoff(_)) {
            self.state = State::Connecting(self.connect());
        }
    }

    /// Closes the connection and stops reconnecting.
    pub(crate) fn stop(&mut self) {
        self.state = State::Idle;
        self.framer.reset();
        self.attempt = 0;
    }

    /// Bytes of outbound buffer still free (0 when not connected).
    pub(crate) fn write_room(&self) -> usize {
        match &self.state {
            State::Connected(c) => self.cfg.max_outbound.saturating_sub(c.out.len()),
            _ => 0,
        }
    }

    /// Queues bytes for the socket. The caller checks [`DeviceConnection::write_room`]
    /// first; one command may overshoot the bound, never more.
    pub(crate) fn write(&mut self, data: &[u8]) -> bool {
        if !self.cfg.gate.open() {
            self.close_gated();
            return false;
        }
        match &mut self.state {
            State::Connected(c) => {
                let mut rest = data;
                // Write at once when nothing is pending: saves a turn of the
                // module's select loop per command. What the socket does not
                // take now (or an error) is left to `next`.
                if c.out.is_empty()
                    && let Ok(n) = c.write.try_write(data)
                {
                    rest = &data[n..];
                }
                c.out.extend_from_slice(rest);
                true
            }
            _ => false,
        }
    }

    /// The gate closed: the connection goes, with what was waiting to be
    /// sent, and reconnecting waits for the gate.
    fn close_gated(&mut self) {
        if self.is_connected() {
            tracing::warn!(host = %self.host, port = self.port, "{GATE_CLOSED}: device connection closed");
            self.framer.reset();
            self.backoff();
        }
    }

    fn connect(&self) -> ConnectFuture {
        let host = self.host.clone();
        let port = self.port;
        let timeout = self.cfg.connect_timeout;
        let keepalive = self.cfg.keepalive;
        Box::pin(async move {
            let stream = tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), port)))
                .await
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("connect timed out after {timeout:?}"),
                    )
                })??;
            stream.set_nodelay(true)?;
            if let Some(idle) = keepalive {
                let ka = socket2::TcpKeepalive::new()
                    .with_time(idle)
                    .with_interval((idle / 3).max(Duration::from_secs(1)));
                socket2::SockRef::from(&stream).set_tcp_keepalive(&ka)?;
            }
            Ok(stream)
        })
    }

    fn backoff(&mut self) {
        let delay = backoff_delay(
            self.attempt,
            self.cfg.backoff_min,
            self.cfg.backoff_max,
            fastrand::f64(),
        );
        self.attempt = self.attempt.saturating_add(1);
        self.state = State::Backoff(Box::pin(tokio::time::sleep(delay)));
    }

    fn disconnected(&mut self, reason: String, error: bool) -> ConnectionEvent {
        if let State::Connected(c) = &self.state
            && c.since.elapsed() >= self.cfg.backoff_max
        {
            // A connection that lived long was healthy: start over quickly.
            self.attempt = 0;
        }
        self.framer.reset();
        self.backoff();
        ConnectionEvent::Disconnected { reason, error }
    }

    /// Waits for the next event. Cancel-safe: every await point either
    /// completes or leaves the state untouched. Pending forever when idle.
    pub(crate) async fn next(&mut self) -> ConnectionEvent {
        loop {
            match &mut self.state {
                State::Idle => std::future::pending::<()>().await,
                State::Backoff(sleep) => {
                    sleep.as_mut().await;
                    if self.cfg.gate.open() {
                        self.state = State::Connecting(self.connect());
                    } else {
                        self.backoff();
                    }
                }
                State::Connecting(fut) => {
                    let res = fut.as_mut().await;
                    match res {
                        Ok(_) if !self.cfg.gate.open() => self.backoff(),
                        Ok(stream) => {
                            let (read, write) = stream.into_split();
                            let now = Instant::now();
                            self.state = State::Connected(Box::new(Conn {
                                read,
                                write,
                                out: Vec::new(),
                                since: now,
                                window_start: now,
                                window_bytes: 0,
                            }));
                            self.framer.reset();
                            return ConnectionEvent::Connected;
                        }
                        Err(e) => {
                            self.backoff();
                            return ConnectionEvent::ConnectFailed(e.to_string());
                        }
                    }
                }
                State::Connected(c) => {
                    let buf = &mut self.framer.buf;
                    buf.reserve(2048);
                    let gate = &self.cfg.gate;
                    let (write, out) = (&mut c.write, &c.out);
                    // The gate is read at every poll of the write, so bytes
                    // queued before the deadline are not sent after it.
                    let gated_write = std::future::poll_fn(|cx| {
                        if !gate.open() {
                            return std::task::Poll::Ready(Err(std::io::Error::other(GATE_CLOSED)));
                        }
                        std::pin::Pin::new(&mut *write).poll_write(cx, out)
                    });
                    let io = tokio::select! {
                        r = c.read.read_buf(buf) => Io::Read(r),
                        r = gated_write, if !out.is_empty() => Io::Wrote(r),
                    };
                    if let Some(ev) = self.on_io(io) {
                        return ev;
                    }
                }
            }
        }
    }

    fn on_io(&mut self, io: Io) -> Option<ConnectionEvent> {
        let State::Connected(c) = &mut self.state else {
            return None;
        };
        match io {
            Io::Read(Ok(0)) => {
                Some(self.disconnected("device closed the connection".into(), false))
            }
            Io::Read(Ok(n)) => {
                let now = Instant::now();
                if now.duration_since(c.window_start) > self.cfg.flood_window {
                    c.window_start = now;
                    c.window_bytes = 0;
                }
                c.window_bytes += n;
                if c.window_bytes > self.cfg.flood_bytes {
                    let reason = format!(
                        "device flooded: more than {} bytes within {:?}",
                        self.cfg.flood_bytes, self.cfg.flood_window
                    );
                    return Some(self.disconnected(reason, true));
                }
                let mut frames = Vec::new();
                if let Err(e) = self.framer.extract(&mut frames) {
                    return Some(self.disconnected(e.to_string(), true));
                }
                (!frames.is_empty()).then_some(ConnectionEvent::Frames(frames))
            }
            Io::Read(Err(e)) => Some(self.disconnected(format!("read failed: {e}"), true)),
            Io::Wrote(Ok(n)) => {
                c.out.drain(..n);
                if c.out.is_empty() && c.out.capacity() > 4096 {
                    c.out = Vec::new();
                }
                None
            }
            Io::Wrote(Err(e)) => Some(self.disconnected(format!("write failed: {e}"), true)),
        }
    }

    /// Cuts the connection because of something the device did; reconnects
    /// after the backoff like any other loss.
    pub(crate) fn cut(&mut self, reason: String) -> ConnectionEvent {
        if self.is_connected() {
            self.disconnected(reason, true)
        } else {
            ConnectionEvent::Disconnected {
                reason,
                error: true,
            }
        }
    }

    /// Flushes what is buffered (best effort, bounded by `limit`), used
    /// before a graceful close so a final command still reaches the device.
    pub(crate) async fn flush(&mut self, limit: Duration) {
        if let State::Connected(c) = &mut self.state
            && !c.out.is_empty()
            && self.cfg.gate.open()
        {
            let _ = tokio::time::timeout(limit, c.write.write_all(&c.out)).await;
            c.out.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let ms = Duration::from_millis;
        let check = |attempt, sample, expect: Duration| {
            assert_eq!(
                backoff_delay(attempt, ms(500), ms(30_000), sample),
                expect,
                "attempt {attempt} sample {sample}"
            );
        };
        check(0, 0.5, ms(500));
        check(1, 0.5, ms(1000));
        check(3, 0.5, ms(4000));
        check(10, 0.5, ms(30_000));
        check(40, 0.5, ms(30_000));
        check(0, 0.0, ms(375));
        check(0, 1.0, ms(625));
        check(10, 0.0, ms(22_500));
    }
}
