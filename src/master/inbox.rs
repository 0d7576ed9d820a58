//! A location task's inbox: bounded, and losing nothing.
//!
//! Two kinds of input reach a location's control task. Some say only what
//! the newest of them says (its document was edited, the boot wait ended
//! without its edge, the edge said it is stopping, its link came up or was
//! lost): a thousand of them mean what the last one means, so they are
//! **coalesced** into flags ([`Pending`]) that take no room however often
//! they are raised, and are raised by callers that must not wait (the
//! link's reader and event follower, the boot sequence). So an edge that
//! reconnects in a loop while its task is busy cannot fill anything, nor
//! hold up the link events of other sites. The rest are distinct messages
//! (an operator's restore or handover, each with its answer): they go
//! through a bounded channel, and a sender that finds it full **waits** for
//! room (back-pressure: the API caller slows down), counted in
//! `outpost_channel_full_total{channel="control_inbox",outcome="waited"}`.
//! Nothing is dropped.
//!
//! Flags raised before a message was sent are delivered before it. The
//! task reads the flags in the order they matter: the edge's "stopping"
//! before the loss of its link, a loss before a newer link.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc};

use crate::link::Peer;
use crate::util::Unpoisoned;

/// Messages one location's task may have waiting.
pub(super) const INBOX: usize = 64;

/// Raised flags, taken by the task all at once.
#[derive(Default, Clone)]
pub(super) struct Pending {
    /// The location's document changed (or may have): reschedule.
    pub edited: bool,
    /// The boot wait ended and the edge had not come.
    pub missing_at_boot: bool,
    /// The edge on link `session` says it stops on purpose (`restart`);
    /// the latest one counts.
    pub stopping: Option<(u64, bool)>,
    /// Every link of the edge up to this session was lost (sessions only
    /// grow, and a newer link replaces an older one).
    pub lost_through: Option<u64>,
    /// The newest link that came up.
    pub link_up: Option<Peer>,
}

impl Pending {
    fn any(&self) -> bool {
        self.edited
            || self.missing_at_boot
            || self.stopping.is_some()
            || self.lost_through.is_some()
            || self.link_up.is_some()
    }

    /// A link lost: keeps the newest session.
    pub(super) fn lost(&mut self, session: u64) {
        self.lost_through = self.lost_through.max(Some(session));
    }

    /// A link up: keeps the newest.
    pub(super) fn up(&mut self, peer: Peer) {
        let session = peer.meta().session;
        if self
            .link_up
            .as_ref()
            .is_none_or(|p| p.meta().session < session)
        {
            self.link_up = Some(peer);
        }
    }
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("edited", &self.edited)
            .field("missing_at_boot", &self.missing_at_boot)
            .field("stopping", &self.stopping)
            .field("lost_through", &self.lost_through)
            .field("link_up", &self.link_up.as_ref().map(|p| p.meta().session))
            .finish()
    }
}

struct Flags {
    pending: Mutex<Pending>,
    wake: Notify,
    /// Sends that found the channel full (tests read it).
    waited: AtomicU64,
}

/// The sending side, kept by the control loop per location.
pub(super) struct Inbox<M> {
    tx: mpsc::Sender<M>,
    flags: Arc<Flags>,
}

impl<M> Clone for Inbox<M> {
    fn clone(&self) -> Self {
        Inbox {
            tx: self.tx.clone(),
            flags: self.flags.clone(),
        }
    }
}

/// What the task receives next.
#[derive(Debug)]
pub(super) enum Delivery<M> {
    Flags(Pending),
    Message(M),
}

/// The receiving side, owned by the location's task.
pub(super) struct Mailbox<M> {
    rx: mpsc::Receiver<M>,
    flags: Arc<Flags>,
    /// A message received behind flags, delivered next.
    held: Option<M>,
}

pub(super) fn inbox<M>(capacity: usize) -> (Inbox<M>, Mailbox<M>) {
    let (tx, rx) = mpsc::channel(capacity);
    let flags = Arc::new(Flags {
        pending: Mutex::new(Pending::default()),
        wake: Notify::new(),
        waited: AtomicU64::new(0),
    });
    (
        Inbox {
            tx,
            flags: flags.clone(),
        },
        Mailbox {
            rx,
            flags,
            held: None,
        },
    )
}

impl<M> Inbox<M> {
    /// Sends a message, waiting for room when the inbox is full. A task
    /// that has ended (the master stops) takes nothing more.
    pub(super) async fn send(&self, msg: M) {
        let msg = match self.tx.try_send(msg) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => return,
            Err(mpsc::error::TrySendError::Full(msg)) => msg,
        };
        self.flags.waited.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("outpost_channel_full_total", "channel" => "control_inbox", "outcome" => "waited")
            .increment(1);
        let _ = self.tx.send(msg).await;
    }

    /// Raises flags; never waits.
    pub(super) fn raise(&self, raise: impl FnOnce(&mut Pending)) {
        raise(&mut self.flags.pending.lock_unpoisoned());
        self.flags.wake.notify_one();
    }

    pub(super) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// How many sends found the inbox full.
    #[cfg(test)]
    pub(super) fn waited(&self) -> u64 {
        self.flags.waited.load(Ordering::Relaxed)
    }
}

impl<M> Mailbox<M> {
    /// The next delivery: raised flags first, then a message. `None` once
    /// every sender is gone. Cancel-safe: flags live outside the wake-up,
    /// and a message received behind raised flags is kept here.
    pub(super) async fn recv(&mut self) -> Option<Delivery<M>> {
        if let Some(p) = self.take() {
            return Some(Delivery::Flags(p));
        }
        if let Some(msg) = self.held.take() {
            return Some(Delivery::Message(msg));
        }
        loop {
            tokio::select! {
                biased;
                () = self.flags.wake.notified() => {
                    if let Some(p) = self.take() {
                        return Some(Delivery::Flags(p));
                    }
                }
                msg = self.rx.recv() => {
                    let msg = msg?;
                    // Flags raised while the message waited go first.
                    if let Some(p) = self.take() {
                        self.held = Some(msg);
                        return Some(Delivery::Flags(p));
                    }
                    return Some(Delivery::Message(msg));
                }
            }
        }
    }

    fn take(&self) -> Option<Pending> {
        let p = std::mem::take(&mut *self.flags.pending.lock_unpoisoned());
        p.any().then_some(p)
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[tokio::test]
    async fn a_full_inbox_makes_senders_wait_and_loses_nothing() {
        let (inbox, mut mailbox) = inbox::<u32>(4);
        for n in 0..4 {
            inbox.send(n).await;
        }
        assert_eq!(inbox.waited(), 0);
        // The fifth waits for room: pending until the task takes one.
        let mut fifth = Box::pin(inbox.send(4));
        assert!(
            (&mut fifth).now_or_never().is_none(),
            "sent into a full inbox"
        );
        assert_eq!(inbox.waited(), 1, "counted as full");
        assert!(matches!(mailbox.recv().await, Some(Delivery::Message(0))));
        fifth.await;
        for n in 1..5 {
            assert!(matches!(mailbox.recv().await, Some(Delivery::Message(m)) if m == n));
        }
    }

    #[tokio::test]
    async fn flags_coalesce_without_room_and_come_before_later_messages() {
        let (inbox, mut mailbox) = inbox::<u32>(2);
        inbox.send(1).await;
        inbox.send(2).await;
        // Raised on a full inbox, any number of times: no wait, no room.
        for _ in 0..10_000 {
            inbox.raise(|p| p.edited = true);
        }
        inbox.raise(|p| p.stopping = Some((7, true)));
        for session in [9, 8] {
            inbox.raise(|p| p.lost(session));
        }
        match mailbox.recv().await {
            Some(Delivery::Flags(p)) => {
                assert!(p.edited && !p.missing_at_boot, "{p:?}");
                assert_eq!(p.stopping, Some((7, true)));
                assert_eq!(p.lost_through, Some(9), "the newest loss counts");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(mailbox.recv().await, Some(Delivery::Message(1))));
        assert!(matches!(mailbox.recv().await, Some(Delivery::Message(2))));
        // Raised before a message is sent: delivered before it.
        inbox.raise(|p| p.missing_at_boot = true);
        inbox.send(3).await;
        match mailbox.recv().await {
            Some(Delivery::Flags(p)) => assert!(p.missing_at_boot && !p.edited),
            other => panic!("{other:?}"),
        }
        assert!(matches!(mailbox.recv().await, Some(Delivery::Message(3))));
        assert_eq!(inbox.waited(), 0, "flags never wait");
    }
}
