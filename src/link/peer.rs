//! The multiplexer: many concurrent requests in both directions over one
//! byte stream (generic over `AsyncRead + AsyncWrite`, so tests can use
//! `tokio::io::duplex` as well as TLS).
//!
//! A [`Peer`] is the handle: [`Peer::request`] sends a `Request`, parks a
//! `oneshot` in the in-flight map and waits for the matching `Response`
//! within the deadline, which one task per busy link keeps for all its
//! calls (no timer per call); dropping that future (or the deadline
//! passing) sends `Cancel` (tarpc's `ResponseGuard`). The [`Session`]
//! driver runs
//! - one reader loop: decodes frames, answers pings, checks liveness
//!   (no frame for `dead_after` ⇒ dead), routes responses to callers and
//!   starts each incoming request's handler: answered on the spot when it
//!   can be (no task, no wake-up), otherwise in a task of its own, so a
//!   slow handler never delays another; a `Cancel` aborts that task;
//! - one writer task: drains the bounded outbound queue, batching frames
//!   into one TLS write; a write that makes no progress for `dead_after`
//!   means the peer stopped reading, and the link is cut.
//!
//! Backpressure: a caller waits for one of the peer's advertised in-flight
//! slots before sending; a peer that ignores the bound gets `Overloaded`
//! answers without its handlers running. Memory per link is bounded by the
//! in-flight bounds and the outbound queue capacity.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt as _;
use futures_util::{SinkExt, StreamExt as _};
use serde_json::value::RawValue;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{Notify, Semaphore, TryAcquireError, mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::LinkTiming;
use crate::proto::frame::{self, FrameError};
use crate::proto::{EventBody, Frame, RequestBody, ResponseBody, WireError};
use crate::util::Unpoisoned;

/// What a role does with the requests and events its peer sends.
///
/// `handle` is first polled on the link's reader, so a request that can be
/// answered at once costs no task: its work up to its first wait must be
/// short (a lookup, not a computation). If it has to wait, it goes on in
/// its own task, which is aborted (dropped) when the caller cancels, the
/// deadline passes or the link closes.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        ctx: RequestCtx,
        body: RequestBody,
    ) -> impl Future<Output = Result<ResponseBody, WireError>> + Send;

    /// A one-way event from the peer. Called on the link's reader: must not
    /// block (forward it to a channel).
    fn event(&self, peer: &Peer, body: EventBody) {
        let _ = (peer, body);
    }
}

/// Context of one incoming request.
#[derive(Clone)]
pub struct RequestCtx {
    /// The link the request came on: handlers may send requests or events
    /// back (the debug proxy streams events; an edge fetches files).
    pub peer: Peer,
    pub id: u64,
    /// Time the caller allowed, as received.
    pub deadline: Duration,
}

/// Which side of the link this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    Master,
    Edge,
}

/// Per-link limits and timing.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Largest frame accepted or sent; a larger incoming frame closes the link.
    pub max_frame: usize,
    /// Requests from the peer we run at once (advertised in the handshake).
    pub max_in_flight: u32,
    /// Frames waiting to be written. When full, callers wait; a peer that
    /// stops reading is cut off by the write stall timer.
    pub outbound_queue: usize,
    pub timing: LinkTiming,
    /// The edge's own timer sends its pings; the master's [`Sweeper`] sends
    /// the master's. Each side answers a ping, and declares the peer dead
    /// after `timing.dead_after` without any frame.
    pub role: PeerRole,
}

impl PeerConfig {
    pub fn new(role: PeerRole, timing: LinkTiming) -> Self {
        Self {
            max_frame: crate::proto::DEFAULT_MAX_FRAME,
            max_in_flight: 1024,
            outbound_queue: 1024,
            timing,
            role,
        }
    }
}

/// Who is at the other end.
#[derive(Debug, Clone)]
pub struct PeerMeta {
    /// The edge this link belongs to (on both sides).
    pub edge_id: Uuid,
    /// Unique per connection in this process.
    pub session: u64,
    pub addr: SocketAddr,
    pub version: u16,
    pub remote_boot_id: Uuid,
}

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// A fresh session number.
pub fn next_session() -> u64 {
    NEXT_SESSION.fetch_add(1, Ordering::Relaxed)
}

/// Frames a link has read and written since it opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameCounts {
    pub read: u64,
    pub written: u64,
}

/// Why a link closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloseReason {
    #[error("closed locally")]
    Local,
    #[error("shutting down")]
    Shutdown,
    #[error("replaced by a newer connection of the same edge")]
    Replaced,
    #[error("the edge's credential was rotated or deleted")]
    CredentialChanged,
    #[error("the peer closed the connection")]
    PeerClosed,
    #[error("no frame from the peer for {0:?}")]
    Dead(Duration),
    #[error("the peer stopped reading")]
    Stalled,
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("I/O error: {0}")]
    Io(String),
}

/// Why a request failed, seen by the caller.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    #[error("remote error: {0}")]
    Remote(#[from] WireError),
    #[error("deadline exceeded")]
    DeadlineExceeded,
    #[error("link closed")]
    Closed,
    #[error("request too large: {0}")]
    TooLarge(String),
    #[error("undecodable response: {0}")]
    BadResponse(String),
}

/// What a caller waits for: the result, unparsed (a slice of the frame it
/// came in), or the news that its deadline passed.
type Reply = Result<Bytes, CallError>;

/// Our requests waiting for a response, each with the instant its caller
/// gives up. One task per busy link keeps those deadlines
/// ([`expire_calls`]) instead of a timer per call, whose registration in
/// tokio's timer wheel and removal cost about 5 % of a round trip.
#[derive(Default)]
struct Calls {
    waiting: HashMap<u64, (oneshot::Sender<Reply>, Instant)>,
    /// The earliest deadline the expiry task knows of; `None`: no task runs.
    wake_at: Option<Instant>,
    /// Expiry tasks started on this link so far.
    tasks_started: u64,
}

/// How long the expiry task outlives its link's last waiting call. A link
/// that makes one call at a time keeps one task, where ending it with
/// each call started a task per call (40 % of the throughput at one in
/// flight, `cargo bench --bench link -- rpc`); an idle link holds none
/// after this.
const EXPIRY_LINGER: Duration = Duration::from_secs(1);

type Pending = Mutex<Calls>;

impl PeerState {
    /// Takes a call out of the waiting set (answered or abandoned). The
    /// expiry task is left alone: it ends by itself within
    /// [`EXPIRY_LINGER`] once nothing waits.
    fn take_call(&self, id: u64) -> Option<oneshot::Sender<Reply>> {
        let mut calls = self.pending.lock_unpoisoned();
        calls.waiting.remove(&id).map(|(tx, _)| tx)
    }
}
/// Requests being served, by id: the task and the generation of its slot
/// (an id may be reused after a Cancel before the old task is gone).
type Running = Arc<Mutex<HashMap<u64, (AbortHandle, u64)>>>;

/// Generations of in-flight slots, so a finished task frees its own slot
/// and never a newer request's that reuses the id.
static SLOT_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// An in-flight slot, freed when the handler's task ends: after its
/// response is queued, or when it panics or is aborted. A slot can
/// therefore never leak, and the bound on requests in flight also bounds
/// the responses waiting to be queued.
struct Slot {
    running: Running,
    id: u64,
    generation: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.running.lock_unpoisoned();
        if map
            .get(&self.id)
            .is_some_and(|(_, g)| *g == self.generation)
        {
            map.remove(&self.id);
        }
    }
}

struct PeerState {
    meta: PeerMeta,
    out: mpsc::Sender<Bytes>,
    pending: Pending,
    /// Wakes the expiry task for a call due before the time it sleeps to.
    rearm: Notify,
    next_id: AtomicU64,
    calls: Semaphore,
    cancel: CancellationToken,
    reason: OnceLock<CloseReason>,
    max_frame: usize,
    /// A frame arrived since the sweeper last looked.
    seen: AtomicBool,
    /// A batch was written since the sweeper last looked.
    wrote: AtomicBool,
    frames_read: AtomicU64,
    frames_written: AtomicU64,
}

/// Handle to one live link. Cheap to clone.
#[derive(Clone)]
pub struct Peer(Arc<PeerState>);

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("meta", &self.0.meta)
            .field("closed", &self.is_closed())
            .finish()
    }
}

const PING: &[u8] = b"\"Ping\"";
const PONG: &[u8] = b"\"Pong\"";

impl Peer {
    pub fn meta(&self) -> &PeerMeta {
        &self.0.meta
    }

    /// Sends a request and waits for its response, at most `deadline`
    /// (including any wait for an in-flight slot). Dropping the returned
    /// future cancels the request at the peer.
    pub async fn request(
        &self,
        body: RequestBody,
        deadline: Duration,
    ) -> Result<ResponseBody, CallError> {
        self.timed(body.kind(), |start| async move {
            let raw = self.call(&body, start, deadline).await?;
            match frame::parse_result(&raw) {
                Ok(Ok(body)) => Ok(body),
                Ok(Err(e)) => Err(remote(e)),
                Err(e) => Err(self.bad_response(&raw, e)),
            }
        })
        .await
    }

    /// [`request`](Self::request) for a body that encodes as a
    /// [`RequestBody`] of `kind` and expects a `Value` answer, which it
    /// gives back as the peer's JSON text: the API passes an exec's
    /// arguments and result through without building either.
    pub async fn request_value<B: serde::Serialize + Sync>(
        &self,
        kind: &'static str,
        body: &B,
        deadline: Duration,
    ) -> Result<Box<RawValue>, CallError> {
        self.timed(kind, |start| async move {
            let raw = self.call(body, start, deadline).await?;
            if let Some(value) = frame::raw_value(&raw) {
                return Ok(value.to_owned());
            }
            match frame::parse_result(&raw) {
                Ok(Ok(other)) => Err(CallError::BadResponse(format!(
                    "expected a value, got {other:?}"
                ))),
                Ok(Err(e)) => Err(remote(e)),
                Err(e) => Err(self.bad_response(&raw, e)),
            }
        })
        .await
    }

    /// A result its caller cannot use. One that is not even JSON breaks
    /// the protocol, as a malformed envelope does, and cuts the link.
    fn bad_response(&self, raw: &[u8], e: serde_json::Error) -> CallError {
        if let Err(malformed) = frame::check_json(raw) {
            self.close(CloseReason::Protocol(malformed.to_string()));
        }
        CallError::BadResponse(e.to_string())
    }

    /// Runs one call and counts it; the call keeps its own deadline.
    async fn timed<T, F, Fut>(&self, kind: &'static str, call: F) -> Result<T, CallError>
    where
        F: FnOnce(Instant) -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let start = Instant::now();
        let result = call(start).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(CallError::Remote(_)) => "remote_error",
            Err(CallError::DeadlineExceeded) => "deadline",
            Err(CallError::Closed) => "closed",
            Err(_) => "error",
        };
        metrics::counter!("outpost_link_requests_total", "kind" => kind, "outcome" => outcome)
            .increment(1);
        metrics::histogram!("outpost_link_request_seconds", "kind" => kind)
            .record(start.elapsed().as_secs_f64());
        result
    }

    /// Sends one request and waits for its result, unparsed (a slice of
    /// the frame it came in), until `start + deadline` at the latest. Only
    /// a wait for an in-flight slot or for room in the outbound queue sets
    /// a timer of its own; the wait for the answer is the expiry task's.
    async fn call<B: serde::Serialize + Sync>(
        &self,
        body: &B,
        start: Instant,
        deadline: Duration,
    ) -> Result<Bytes, CallError> {
        let s = &*self.0;
        let give_up = start + deadline;
        let _permit = self.slot(give_up).await?;
        let id = s.next_id.fetch_add(1, Ordering::Relaxed);
        let remaining = give_up.saturating_duration_since(Instant::now());
        let bytes = frame::encode(
            &Frame::<_, (), ()>::Request {
                id,
                deadline_ms: (remaining.as_millis() as u64).max(1),
                body,
            },
            s.max_frame,
        )
        .map_err(|e| CallError::TooLarge(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        self.wait_for_answer(id, tx, give_up);
        let mut guard = ResponseGuard {
            peer: self,
            id,
            sent: false,
            done: false,
        };
        // The link closes before it drops the waiting calls: a call added
        // after that drop sees the close here.
        if s.cancel.is_cancelled() {
            return Err(CallError::Closed);
        }
        self.queue(bytes, give_up).await?;
        guard.sent = true;
        let reply = rx.await.map_err(|_| CallError::Closed)?;
        guard.done = reply.is_ok();
        reply
    }

    /// One of the peer's in-flight slots, waiting for one until `give_up`.
    async fn slot(&self, give_up: Instant) -> Result<tokio::sync::SemaphorePermit<'_>, CallError> {
        let s = &*self.0;
        if s.cancel.is_cancelled() {
            return Err(CallError::Closed);
        }
        match s.calls.try_acquire() {
            Ok(permit) => Ok(permit),
            Err(TryAcquireError::Closed) => Err(CallError::Closed),
            Err(TryAcquireError::NoPermits) => {
                let acquire = async { s.calls.acquire().await.map_err(|_| CallError::Closed) };
                self.wait_until(give_up, acquire).await
            }
        }
    }

    /// Queues a frame for the writer, waiting for room until `give_up`.
    async fn queue(&self, bytes: Bytes, give_up: Instant) -> Result<(), CallError> {
        let s = &*self.0;
        match s.out.try_send(bytes) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(CallError::Closed),
            Err(mpsc::error::TrySendError::Full(bytes)) => {
                let send = async { s.out.send(bytes).await.map_err(|_| CallError::Closed) };
                self.wait_until(give_up, send).await
            }
        }
    }

    /// A wait of a call that could not go on at once: `Closed` if the link
    /// closes first, `DeadlineExceeded` at `give_up`.
    async fn wait_until<T>(
        &self,
        give_up: Instant,
        wait: impl Future<Output = Result<T, CallError>>,
    ) -> Result<T, CallError> {
        let or_closed = async {
            tokio::select! {
                biased;
                _ = self.0.cancel.cancelled() => Err(CallError::Closed),
                r = wait => r,
            }
        };
        tokio::time::timeout_at(give_up, or_closed)
            .await
            .unwrap_or(Err(CallError::DeadlineExceeded))
    }

    /// Files a call as waiting for its answer until `give_up`, and makes
    /// sure the expiry task wakes by then.
    fn wait_for_answer(&self, id: u64, tx: oneshot::Sender<Reply>, give_up: Instant) {
        let s = &*self.0;
        let mut calls = s.pending.lock_unpoisoned();
        calls.waiting.insert(id, (tx, give_up));
        match calls.wake_at {
            None => {
                calls.wake_at = Some(give_up);
                calls.tasks_started += 1;
                drop(calls);
                tokio::spawn(expire_calls(self.clone(), give_up));
            }
            Some(at) if give_up < at => {
                calls.wake_at = Some(give_up);
                drop(calls);
                s.rearm.notify_one();
            }
            Some(_) => {}
        }
    }

    /// Sends a one-way event, waiting while the outbound queue is full.
    pub async fn event(&self, body: EventBody) -> Result<(), CallError> {
        let bytes = frame::encode(&Frame::<(), (), _>::Event { body: &body }, self.0.max_frame)
            .map_err(|e| CallError::TooLarge(e.to_string()))?;
        tokio::select! {
            biased;
            _ = self.0.cancel.cancelled() => Err(CallError::Closed),
            r = self.0.out.send(bytes) => r.map_err(|_| CallError::Closed),
        }
    }

    /// Closes the link (idempotent; the first reason wins).
    pub fn close(&self, reason: CloseReason) {
        let _ = self.0.reason.set(reason);
        self.0.cancel.cancel();
    }

    pub fn is_closed(&self) -> bool {
        self.0.cancel.is_cancelled()
    }

    /// Resolves when the link is closed.
    pub async fn closed(&self) {
        self.0.cancel.cancelled().await
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        self.0.reason.get().cloned()
    }

    /// Frames this link has moved (what an idle link costs in records).
    pub fn frames(&self) -> FrameCounts {
        FrameCounts {
            read: self.0.frames_read.load(Ordering::Relaxed),
            written: self.0.frames_written.load(Ordering::Relaxed),
        }
    }

    /// Requests of ours waiting for a response.
    pub fn pending_requests(&self) -> usize {
        self.0.pending.lock_unpoisoned().waiting.len()
    }

    /// The expiry tasks this link has started, and whether one runs now:
    /// what its calls cost in tasks (tests and benchmarks read it).
    pub fn expiry_tasks(&self) -> (u64, bool) {
        let calls = self.0.pending.lock_unpoisoned();
        (calls.tasks_started, calls.wake_at.is_some())
    }

    fn send_now(&self, bytes: Bytes) -> Result<(), mpsc::error::TrySendError<Bytes>> {
        self.0.out.try_send(bytes)
    }
}

/// Keeps the deadlines of a link's waiting calls: sleeps until the earliest
/// (or until a call due sooner wakes it), answers every call past its
/// deadline with `DeadlineExceeded`, and ends when it wakes and none
/// waits, or when the link closes (which drops the waiting calls:
/// `Closed`). A call that completes leaves the sleep alone (the task finds
/// it gone when it wakes), so a steady stream of calls costs a wake-up per
/// [`EXPIRY_LINGER`] at most, not a timer or a task each.
async fn expire_calls(peer: Peer, mut at: Instant) {
    let s = &*peer.0;
    loop {
        let wake = at.min(Instant::now() + EXPIRY_LINGER);
        tokio::select! {
            biased;
            _ = s.cancel.cancelled() => return,
            _ = s.rearm.notified() => {}
            _ = tokio::time::sleep_until(wake) => {}
        }
        let mut calls = s.pending.lock_unpoisoned();
        let now = Instant::now();
        let due: Vec<u64> = calls
            .waiting
            .iter()
            .filter(|(_, (_, give_up))| *give_up <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some((tx, _)) = calls.waiting.remove(&id) {
                let _ = tx.send(Err(CallError::DeadlineExceeded));
            }
        }
        match calls.waiting.values().map(|(_, give_up)| *give_up).min() {
            Some(next) => {
                calls.wake_at = Some(next);
                at = next;
            }
            None => {
                calls.wake_at = None;
                return;
            }
        }
    }
}

/// A remote error as the caller sees it. The peer enforces the same
/// deadline; whichever side notices first, the caller sees one error.
fn remote(e: WireError) -> CallError {
    match e {
        WireError::DeadlineExceeded => CallError::DeadlineExceeded,
        e => CallError::Remote(e),
    }
}

/// Removes an abandoned request from the in-flight map and tells the peer
/// to abort it.
struct ResponseGuard<'a> {
    peer: &'a Peer,
    id: u64,
    sent: bool,
    done: bool,
}

impl Drop for ResponseGuard<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let s = &*self.peer.0;
        s.take_call(self.id);
        if !self.sent || s.cancel.is_cancelled() {
            return;
        }
        let Ok(bytes) = frame::encode(&Frame::<(), (), ()>::Cancel { id: self.id }, s.max_frame)
        else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(bytes)) = self.peer.send_now(bytes) {
            // The queue is full: deliver the cancel once there is room,
            // unless the link closes first.
            let peer = self.peer.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    tokio::select! {
                        _ = peer.0.cancel.cancelled() => {}
                        _ = peer.0.out.send(bytes) => {}
                    }
                });
            }
        }
    }
}

/// Drives one link: see the module docs. Create with [`session`], then
/// `run` it (usually in its own task) while the [`Peer`] handle is used.
pub struct Session<IO> {
    io: IO,
    peer: Peer,
    out_rx: mpsc::Receiver<Bytes>,
    cfg: PeerConfig,
    sweeper: Option<Arc<Sweeper>>,
}

/// Builds a peer handle and its driver over an authenticated stream.
/// `peer_max_in_flight` is the bound the peer advertised.
pub fn session<IO>(
    io: IO,
    meta: PeerMeta,
    cfg: &PeerConfig,
    peer_max_in_flight: u32,
    parent: &CancellationToken,
) -> (Peer, Session<IO>) {
    let (out, out_rx) = mpsc::channel(cfg.outbound_queue.max(1));
    let peer = Peer(Arc::new(PeerState {
        meta,
        out,
        pending: Mutex::new(Calls::default()),
        rearm: Notify::new(),
        next_id: AtomicU64::new(1),
        calls: Semaphore::new(peer_max_in_flight.clamp(1, 1 << 20) as usize),
        cancel: parent.child_token(),
        reason: OnceLock::new(),
        max_frame: cfg.max_frame,
        seen: AtomicBool::new(false),
        wrote: AtomicBool::new(false),
        frames_read: AtomicU64::new(0),
        frames_written: AtomicU64::new(0),
    }));
    let session = Session {
        io,
        peer: peer.clone(),
        out_rx,
        cfg: cfg.clone(),
        sweeper: None,
    };
    (peer, session)
}

impl<IO> Session<IO>
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    /// Hands liveness of this link to a shared [`Sweeper`] instead of a
    /// timer of its own (the master does this for every edge).
    pub fn swept_by(mut self, sweeper: &Arc<Sweeper>) -> Self {
        sweeper.add(&self.peer);
        self.sweeper = Some(sweeper.clone());
        self
    }

    /// Runs the link until it closes; returns why.
    pub async fn run<H: Handler>(self, handler: Arc<H>) -> CloseReason {
        let Session {
            io,
            peer,
            out_rx,
            cfg,
            sweeper,
        } = self;
        let (r, w) = tokio::io::split(io);
        let writer = tokio::spawn(write_loop(
            FramedWrite::new(w, frame::codec(cfg.max_frame)),
            out_rx,
            peer.clone(),
            cfg.timing.dead_after,
        ));
        let running: Running = Arc::new(Mutex::new(HashMap::new()));
        let reason = read_loop(
            FramedRead::with_capacity(r, frame::codec(cfg.max_frame), 1024),
            &peer,
            &handler,
            &running,
            &cfg,
            sweeper.is_some(),
        )
        .await;
        peer.close(reason);
        // Handlers of a closed link have nobody to answer to.
        for (_, (h, _)) in running.lock_unpoisoned().drain() {
            h.abort();
        }
        // Dropping the senders wakes every waiting caller with `Closed`.
        peer.0.pending.lock_unpoisoned().waiting.clear();
        let _ = writer.await;
        let reason = peer.close_reason().unwrap_or(CloseReason::Local);
        tracing::debug!(edge = %peer.meta().edge_id, session = peer.meta().session, %reason, "link closed");
        reason
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut sink: FramedWrite<W, tokio_util::codec::LengthDelimitedCodec>,
    mut rx: mpsc::Receiver<Bytes>,
    peer: Peer,
    stall: Duration,
) {
    const BATCH: usize = 256;
    // Yields per batch at most; measured at 256 in flight: 2 → ~100k,
    // 8 → ~150k requests/s (bench `profile`), no effect with one in flight.
    const YIELDS: usize = 8;
    let cancelled = peer.0.cancel.cancelled();
    tokio::pin!(cancelled);
    loop {
        let first = tokio::select! {
            biased;
            m = rx.recv() => m,
            _ = &mut cancelled => None,
        };
        let Some(first) = first else { break };
        let res = tokio::time::timeout(stall, async {
            sink.feed(first).await?;
            // Batch: take what is queued, then yield once so that handlers
            // and callers already woken can add theirs, and write them all
            // in one TLS record and one system call.
            let mut queued = 1;
            for round in 0..YIELDS {
                let before = queued;
                while queued < BATCH {
                    match rx.try_recv() {
                        Ok(m) => {
                            sink.feed(m).await?;
                            queued += 1;
                        }
                        Err(_) => break,
                    }
                }
                // Only under load (a lone frame, one request in flight, goes
                // out at once), and only while yielding still gathers more.
                let gained = queued > before || round == 0;
                if round + 1 < YIELDS && queued > 1 && queued < BATCH && gained {
                    tokio::task::yield_now().await;
                } else {
                    break;
                }
            }
            SinkExt::<Bytes>::flush(&mut sink).await?;
            Ok::<u64, std::io::Error>(queued as u64)
        })
        .await;
        match res {
            Ok(Ok(n)) => {
                peer.0.frames_written.fetch_add(n, Ordering::Relaxed);
                peer.0.wrote.store(true, Ordering::Relaxed);
            }
            Ok(Err(e)) => {
                peer.close(CloseReason::Io(e.to_string()));
                return;
            }
            Err(_) => {
                peer.close(CloseReason::Stalled);
                return;
            }
        }
    }
    // Orderly end: send TLS close_notify, but never wait long for it.
    let _ = tokio::time::timeout(Duration::from_millis(200), sink.get_mut().shutdown()).await;
}

async fn read_loop<R, H>(
    mut frames: FramedRead<R, tokio_util::codec::LengthDelimitedCodec>,
    peer: &Peer,
    handler: &Arc<H>,
    running: &Running,
    cfg: &PeerConfig,
    swept: bool,
) -> CloseReason
where
    R: AsyncRead + Unpin,
    H: Handler,
{
    let timing = &cfg.timing;
    // Liveness is judged at each tick: `seen` says a frame arrived since the
    // previous one, so the hot path never reads the clock.
    let mut last_rx = Instant::now();
    let mut seen = false;
    let mut quiet = 0;
    let quiet_limit = keepalive_after(timing);
    let every = check_interval(timing);
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One registration with the token for the link's life, not one per frame.
    let cancelled = peer.0.cancel.cancelled();
    tokio::pin!(cancelled);
    loop {
        let next = tokio::select! {
            biased;
            _ = &mut cancelled => return peer.close_reason().unwrap_or(CloseReason::Local),
            now = tick.tick(), if !swept => {
                if std::mem::take(&mut seen) {
                    last_rx = now;
                }
                if now.duration_since(last_rx) >= timing.dead_after {
                    return CloseReason::Dead(timing.dead_after);
                }
                // The edge keeps the link alive as the master's sweeper
                // does: a ping only after `quiet_limit` checks in which it
                // wrote nothing, since any frame proves it is alive.
                if peer.0.wrote.swap(false, Ordering::Relaxed) {
                    quiet = 0;
                } else {
                    quiet += 1;
                }
                if cfg.role == PeerRole::Edge && quiet >= quiet_limit {
                    // A full queue already carries traffic: skipping is fine.
                    let _ = peer.send_now(Bytes::from_static(PING));
                    quiet = 0;
                }
                continue;
            }
            f = frames.next() => f,
        };
        let payload = match next {
            None => return CloseReason::PeerClosed,
            Some(Err(e)) => return read_error(e),
            Some(Ok(p)) => p,
        };
        peer.0.frames_read.fetch_add(1, Ordering::Relaxed);
        if swept {
            peer.0.seen.store(true, Ordering::Relaxed);
        } else {
            seen = true;
        }
        if let Err(reason) = dispatch(payload.freeze(), peer, handler, running, cfg) {
            tracing::warn!(edge = %peer.meta().edge_id, addr = %peer.meta().addr, %reason, "closing link");
            return reason;
        }
    }
}

fn read_error(e: std::io::Error) -> CloseReason {
    let too_large = e
        .get_ref()
        .is_some_and(|inner| inner.is::<tokio_util::codec::LengthDelimitedCodecError>());
    if too_large {
        CloseReason::Protocol("frame exceeds the maximum size".into())
    } else if e.kind() == std::io::ErrorKind::UnexpectedEof {
        CloseReason::PeerClosed
    } else {
        CloseReason::Io(e.to_string())
    }
}

fn dispatch<H: Handler>(
    payload: Bytes,
    peer: &Peer,
    handler: &Arc<H>,
    running: &Running,
    cfg: &PeerConfig,
) -> Result<(), CloseReason> {
    let frame = frame::decode_sliced(&payload).map_err(protocol_error)?;
    match frame {
        Frame::Request {
            id,
            deadline_ms,
            body,
        } => {
            let body = Body {
                payload: &payload,
                body,
            };
            start_request(id, deadline_ms, body, peer, handler, running, cfg)?
        }
        Frame::Response { id, result } => {
            let tx = peer.0.take_call(id);
            // The caller parses what it gets. No caller (it gave up): the
            // late answer is dropped, once it is known to be JSON.
            let unread = match tx {
                Some(tx) => match tx.send(Ok(payload.slice_ref(result))) {
                    Ok(()) => None,
                    Err(reply) => reply.ok(),
                },
                None => Some(payload.slice_ref(result)),
            };
            if let Some(result) = unread {
                frame::check_json(&result).map_err(protocol_error)?;
            }
        }
        Frame::Cancel { id } => {
            if let Some((h, _)) = running.lock_unpoisoned().remove(&id) {
                h.abort();
            }
        }
        Frame::Event { body } => match serde_json::from_slice::<EventBody>(body) {
            Ok(body) => handler.event(peer, body),
            Err(e) => {
                frame::check_json(body).map_err(protocol_error)?;
                tracing::debug!(edge = %peer.meta().edge_id, error = %e, "ignoring unknown event")
            }
        },
        Frame::Ping => {
            // Always answered, so each side hears the other within its own
            // `dead_after` whatever the other side's timing is (an edge set
            // to detect faster than the master's keepalive would otherwise
            // drop a healthy link every `dead_after`). An answer counts as
            // this side's write: no keepalive of its own follows it.
            let _ = peer.send_now(Bytes::from_static(PONG));
        }
        Frame::Pong => {}
    }
    Ok(())
}

fn protocol_error(e: FrameError) -> CloseReason {
    CloseReason::Protocol(e.to_string())
}

/// A request's body: its bytes, within the frame that brought it (which a
/// large body keeps alive until its task parses it, instead of a copy).
struct Body<'a> {
    payload: &'a Bytes,
    body: &'a [u8],
}

/// Bodies up to this size are parsed by the reader, on the spot; a larger
/// one is parsed by its own task, so that a big request never holds up the
/// frames behind it.
const PARSE_INLINE: usize = 16 * 1024;

/// Admits one request and runs its handler: first on the reader, once, so
/// that a handler that can answer at once (a status read, an echo) costs
/// neither a task nor a wake-up; only a handler that has to wait gets a
/// task of its own, with its slot in `running` so that it can be cancelled.
#[allow(
    clippy::too_many_arguments,
    reason = "the reader's state, passed through"
)]
fn start_request<H: Handler>(
    id: u64,
    deadline_ms: u64,
    body: Body<'_>,
    peer: &Peer,
    handler: &Arc<H>,
    running: &Running,
    cfg: &PeerConfig,
) -> Result<(), CloseReason> {
    let generation = {
        let map = running.lock_unpoisoned();
        let refusal = if map.len() >= cfg.max_in_flight as usize {
            Some(WireError::Overloaded)
        } else if map.contains_key(&id) {
            Some(WireError::bad_request("duplicate request id"))
        } else {
            None
        };
        if let Some(err) = refusal {
            drop(map);
            let bytes = encode_response(id, &Err(err), cfg.max_frame);
            // A peer that floods and does not read is cut off here.
            return peer
                .send_now(bytes)
                .map_err(|_| CloseReason::Protocol("request flood while not reading".into()));
        }
        SLOT_GENERATION.fetch_add(1, Ordering::Relaxed)
    };
    let body = if body.body.len() <= PARSE_INLINE {
        Incoming::Parsed(frame::parse_request(body.body).map_err(protocol_error)?)
    } else {
        Incoming::Raw(body.payload.slice_ref(body.body))
    };
    let slot = Slot {
        running: running.clone(),
        id,
        generation,
    };
    let mut task = Box::pin(run_handler(
        handler.clone(),
        peer.clone(),
        slot,
        Duration::from_millis(deadline_ms),
        body,
        cfg.max_frame,
    ));
    // The waker is never used: a task that is spawned is polled again by
    // the runtime, with its own waker, before it can wait on anything.
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    if task.as_mut().poll(&mut cx).is_pending() {
        // Under the lock, so that a task ending at once cannot free its
        // slot before the slot is recorded.
        let mut map = running.lock_unpoisoned();
        let spawned = tokio::spawn(task);
        map.insert(id, (spawned.abort_handle(), generation));
    }
    Ok(())
}

/// A request body as the reader hands it to the handler's task.
enum Incoming {
    Parsed(Result<RequestBody, WireError>),
    Raw(Bytes),
}

async fn run_handler<H: Handler>(
    handler: Arc<H>,
    peer: Peer,
    slot: Slot,
    deadline: Duration,
    body: Incoming,
    max_frame: usize,
) {
    let id = slot.id;
    let body = match body {
        Incoming::Parsed(body) => body,
        Incoming::Raw(raw) => match frame::parse_request(&raw) {
            Ok(body) => body,
            Err(e) => return peer.close(protocol_error(e)),
        },
    };
    let result = match body {
        Ok(body) => {
            let ctx = RequestCtx {
                peer: peer.clone(),
                id,
                deadline,
            };
            let kind = body.kind();
            let served = tokio::time::timeout(deadline, handler.handle(ctx, body));
            match std::panic::AssertUnwindSafe(served).catch_unwind().await {
                Ok(answer) => answer.unwrap_or(Err(WireError::DeadlineExceeded)),
                Err(_) => {
                    // The panic message went to the log through the hook;
                    // the peer learns only that it failed.
                    metrics::counter!("outpost_link_handler_panics_total", "kind" => kind)
                        .increment(1);
                    tracing::error!(edge = %peer.meta().edge_id, kind, "a link request handler panicked");
                    Err(WireError::failed("internal error"))
                }
            }
        }
        Err(e) => Err(e),
    };
    let bytes = encode_response(id, &result, max_frame);
    // Most answers fit in the queue at once; only a full queue waits.
    if let Err(mpsc::error::TrySendError::Full(bytes)) = peer.send_now(bytes) {
        tokio::select! {
            biased;
            _ = peer.0.cancel.cancelled() => {}
            _ = peer.0.out.send(bytes) => {}
        }
    }
    // Queued (or the link is gone): only now is the slot free.
    drop(slot);
}

#[allow(
    clippy::expect_used,
    reason = "the fallback is a short error message, far below any frame limit"
)]
fn encode_response(id: u64, result: &Result<ResponseBody, WireError>, max: usize) -> Bytes {
    match frame::encode(&Frame::<(), _, ()>::Response { id, result }, max) {
        Ok(b) => b,
        Err(e) => {
            let err: Result<ResponseBody, WireError> = Err(WireError::failed(match e {
                FrameError::TooLarge { .. } => "response too large for one frame".to_string(),
                e => e.to_string(),
            }));
            frame::encode(&Frame::<(), _, ()>::Response { id, result: &err }, max)
                .expect("a short error response always encodes")
        }
    }
}

/// Liveness checks per heartbeat. A check only reads two flags per link,
/// so checking more often than frames are sent costs next to nothing, and
/// it bounds how late a dead peer is declared: at most one check interval
/// (a quarter heartbeat) past `dead_after` after its last frame.
const LIVENESS_CHECKS: u32 = 4;

/// How often liveness is checked (and a keepalive considered).
fn check_interval(timing: &LinkTiming) -> Duration {
    (timing.heartbeat / LIVENESS_CHECKS).max(Duration::from_millis(1))
}

/// Checks without a write after which a side sends a keepalive. The
/// keepalive goes every `dead_after - heartbeat` on an idle link (two
/// seconds with the defaults, one frame each way), which leaves a full
/// heartbeat of margin for a late check or a busy writer; sparser
/// keepalives proved too thin on a saturated machine. The keepalive's own
/// write fills the first check after it, hence the one check less.
fn keepalive_after(timing: &LinkTiming) -> u32 {
    let hb = timing.heartbeat.max(Duration::from_millis(1));
    let heartbeats =
        ((timing.dead_after.saturating_sub(hb)).as_millis() / hb.as_millis()).max(2) as u32;
    heartbeats * LIVENESS_CHECKS - 1
}

/// Liveness for many links at once: one timer instead of one per link.
///
/// Four times a `heartbeat` it looks at each link: a link with no frame
/// for `dead_after` is closed as dead; a link that wrote nothing since its
/// last keepalive `dead_after - heartbeat` ago gets a `Ping`, so its peer hears
/// from it well within `dead_after`, with no timer per link and nothing at
/// all while other frames flow. It is a ping, which the edge answers, so
/// the master hears the edge within the master's `dead_after` even when the
/// edge's own timing is slower.
pub struct Sweeper {
    timing: LinkTiming,
    links: Mutex<HashMap<u64, Swept>>,
}

struct Swept {
    link: Weak<PeerState>,
    last_rx: Instant,
    quiet: u32,
}

impl Sweeper {
    pub fn new(timing: LinkTiming) -> Arc<Self> {
        Arc::new(Self {
            timing,
            links: Mutex::new(HashMap::new()),
        })
    }

    fn add(&self, peer: &Peer) {
        self.links.lock_unpoisoned().insert(
            peer.0.meta.session,
            Swept {
                link: Arc::downgrade(&peer.0),
                last_rx: Instant::now(),
                quiet: 0,
            },
        );
    }

    /// Links being watched.
    pub fn len(&self) -> usize {
        self.links.lock_unpoisoned().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sweeps every `heartbeat / LIVENESS_CHECKS` until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(check_interval(&self.timing));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                now = tick.tick() => self.sweep(now),
            }
        }
    }

    fn sweep(&self, now: Instant) {
        let dead_after = self.timing.dead_after;
        let quiet_limit = keepalive_after(&self.timing);
        let mut dead = Vec::new();
        self.links.lock_unpoisoned().retain(|_, e| {
            let Some(link) = e.link.upgrade() else {
                return false;
            };
            if link.cancel.is_cancelled() {
                return false;
            }
            if link.seen.swap(false, Ordering::Relaxed) {
                e.last_rx = now;
            }
            if now.duration_since(e.last_rx) >= dead_after {
                dead.push(Peer(link));
                return false;
            }
            if link.wrote.swap(false, Ordering::Relaxed) {
                e.quiet = 0;
            } else {
                e.quiet += 1;
                if e.quiet >= quiet_limit {
                    let _ = link.out.try_send(Bytes::from_static(PING));
                    e.quiet = 0;
                }
            }
            true
        });
        for p in dead {
            p.close(CloseReason::Dead(dead_after));
        }
    }
}
