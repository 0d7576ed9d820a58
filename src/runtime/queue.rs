//! The outbound command queue of one device: bounded, ordered by priority
//! then arrival, with at most one command waiting for its response at a time
//! (most device protocols answer in order and cannot take a second command
//! before answering the first), per-command timeout and retries.

use std::collections::BinaryHeap;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// Why a queued command produced no response. Raised into the driver as a
/// Lua error; `Timeout` becomes [`super::ExecError::Timeout`] if the driver
/// does not catch it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RequestError {
    #[error("timed out waiting for the device's response")]
    Timeout,
    #[error("device disconnected before responding")]
    Disconnected,
    #[error("device is not connected")]
    NotConnected,
    #[error("command queue is full ({0} commands)")]
    QueueFull(usize),
    #[error("command queue is full ({0} bytes waiting)")]
    QueueBytesFull(usize),
    #[error("module has no device transport")]
    NoTransport,
}

pub(crate) type Reply = oneshot::Sender<Result<Vec<u8>, RequestError>>;

/// One command for the device.
#[derive(Debug)]
pub(crate) struct Command {
    pub data: Vec<u8>,
    /// Hold the queue until a response arrives (or the timeout).
    pub wait: bool,
    pub timeout: Duration,
    pub retries: u32,
    /// Higher goes first; equal priorities keep their order.
    pub priority: i32,
    /// Only a frame starting with these bytes counts as the response; others
    /// are unsolicited and go to the driver's `on_received`.
    pub expect: Option<Vec<u8>>,
    /// Set for awaitable requests: receives the response frame.
    pub reply: Option<Reply>,
}

struct Queued {
    cmd: Command,
    seq: u64,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Max-heap: higher priority first, then lower sequence (older) first.
        self.cmd
            .priority
            .cmp(&other.cmd.priority)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

struct InFlight {
    cmd: Command,
    deadline: Instant,
    attempts: u32,
}

/// What a received frame was, as far as the queue is concerned.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FrameFor {
    /// The response to an awaitable request; it went to the requester.
    Request,
    /// The response to a `send` with `wait`; the driver's `on_received` gets it.
    Send,
    /// Nothing was waiting for it (or it did not match `expect`).
    Unsolicited,
}

pub(crate) struct Queue {
    heap: BinaryHeap<Queued>,
    capacity: usize,
    /// Bytes of the queued commands, bounded by `max_bytes`: a driver may
    /// not park its whole Lua heap's worth of data per command.
    bytes: usize,
    max_bytes: usize,
    seq: u64,
    in_flight: Option<InFlight>,
}

impl Queue {
    pub(crate) fn new(capacity: usize, max_bytes: usize) -> Queue {
        Queue {
            heap: BinaryHeap::new(),
            capacity,
            bytes: 0,
            max_bytes,
            seq: 0,
            in_flight: None,
        }
    }

    // Only the tests look at the length: the module task asks for the next
    // command instead.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.heap.len() + usize::from(self.in_flight.is_some())
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn push(&mut self, cmd: Command) -> Result<(), RequestError> {
        let full = if self.heap.len() >= self.capacity {
            Some(RequestError::QueueFull(self.capacity))
        } else if self.bytes + cmd.data.len() > self.max_bytes {
            Some(RequestError::QueueBytesFull(self.bytes))
        } else {
            None
        };
        if let Some(err) = full {
            if let Some(r) = cmd.reply {
                let _ = r.send(Err(err.clone()));
            }
            return Err(err);
        }
        self.seq += 1;
        self.bytes += cmd.data.len();
        self.heap.push(Queued { cmd, seq: self.seq });
        Ok(())
    }

    /// The next bytes to write, if the queue is not held by a command that
    /// waits for its response. Commands that do not wait complete as soon as
    /// they are handed to the transport.
    pub(crate) fn next_to_send(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.in_flight.is_some() {
            return None;
        }
        let Queued { mut cmd, .. } = self.heap.pop()?;
        self.bytes -= cmd.data.len();
        let data = std::mem::take(&mut cmd.data);
        if cmd.wait || cmd.reply.is_some() {
            // Keep a copy for retries.
            cmd.data.clone_from(&data);
            self.in_flight = Some(InFlight {
                deadline: now + cmd.timeout,
                cmd,
                attempts: 1,
            });
        }
        Some(data)
    }

    /// Offers a received frame to the command waiting for a response.
    pub(crate) fn on_frame(&mut self, frame: &[u8]) -> FrameFor {
        // The waiting command takes the frame unless it expects a prefix
        // the frame does not have.
        let Some(f) = self
            .in_flight
            .take_if(|f| f.cmd.expect.as_ref().is_none_or(|p| frame.starts_with(p)))
        else {
            return FrameFor::Unsolicited;
        };
        match f.cmd.reply {
            Some(reply) => {
                let _ = reply.send(Ok(frame.to_vec()));
                FrameFor::Request
            }
            None => FrameFor::Send,
        }
    }

    /// When the waiting command times out, if one is waiting.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.in_flight.as_ref().map(|f| f.deadline)
    }

    /// Handles an expired deadline: returns bytes to send again (a retry), or
    /// fails the command and frees the queue.
    pub(crate) fn on_timeout(&mut self, now: Instant) -> Option<Vec<u8>> {
        let f = self.in_flight.as_mut()?;
        if f.deadline > now {
            return None;
        }
        if f.attempts <= f.cmd.retries {
            f.attempts += 1;
            f.deadline = now + f.cmd.timeout;
            return Some(f.cmd.data.clone());
        }
        let f = self.in_flight.take()?;
        if let Some(reply) = f.cmd.reply {
            let _ = reply.send(Err(RequestError::Timeout));
        }
        None
    }

    /// Fails every queued and waiting command (the device went away).
    pub(crate) fn fail_all(&mut self, err: RequestError) {
        let waiting = self.in_flight.take().map(|f| f.cmd);
        for cmd in waiting.into_iter().chain(self.heap.drain().map(|q| q.cmd)) {
            if let Some(r) = cmd.reply {
                let _ = r.send(Err(err.clone()));
            }
        }
        self.heap = BinaryHeap::new();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(data: &str, priority: i32, wait: bool) -> Command {
        Command {
            data: data.as_bytes().to_vec(),
            wait,
            timeout: Duration::from_secs(1),
            retries: 1,
            priority,
            expect: None,
            reply: None,
        }
    }

    #[test]
    fn priority_then_fifo_and_wait_holds_queue() {
        let now = Instant::now();
        let mut q = Queue::new(10, 1024);
        q.push(cmd("a", 0, false)).unwrap();
        q.push(cmd("b", 5, true)).unwrap();
        q.push(cmd("c", 0, false)).unwrap();
        assert_eq!(q.next_to_send(now).unwrap(), b"b");
        assert_eq!(q.next_to_send(now), None, "b waits for its response");
        assert_eq!(q.on_frame(b"resp"), FrameFor::Send);
        assert_eq!(q.next_to_send(now).unwrap(), b"a");
        assert_eq!(q.next_to_send(now).unwrap(), b"c");
    }

    #[test]
    fn retry_then_timeout_and_bounded() {
        let now = Instant::now();
        let mut q = Queue::new(1, 1024);
        let (tx, mut rx) = oneshot::channel();
        let mut c = cmd("x", 0, true);
        c.reply = Some(tx);
        q.push(c).unwrap();
        assert!(matches!(
            q.push(cmd("y", 0, false)),
            Err(RequestError::QueueFull(1))
        ));
        assert_eq!(q.next_to_send(now).unwrap(), b"x");
        assert!(matches!(
            q.push(Command {
                data: vec![0; 2000],
                ..cmd("z", 0, false)
            }),
            Err(RequestError::QueueBytesFull(0))
        ));
        let later = now + Duration::from_secs(2);
        assert_eq!(q.on_timeout(later).unwrap(), b"x", "one retry");
        assert_eq!(q.on_timeout(later + Duration::from_secs(2)), None);
        assert_eq!(rx.try_recv().unwrap(), Err(RequestError::Timeout));
        assert!(q.is_empty());
    }
}
