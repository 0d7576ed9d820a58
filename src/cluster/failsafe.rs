//! Patroni's failsafe (`cluster_failsafe`): a MASTER that cannot reach the
//! database keeps acting while every other node answers, over its link
//! listener, that it is not MASTER and cannot reach the database either.
//!
//! Two sides:
//! - Every node answers probes ([`Witness`]). Answering "I cannot reach the
//!   database" is a promise: the asking MASTER may act until `lease_ms`
//!   after the probe began, so this node does not take the lease until
//!   `lease_ms` after its answer (on `CLOCK_BOOTTIME`, like the deadline),
//!   even if it reaches the database first when the outage ends.
//! - The MASTER, when a renewal gets no answer, probes every other node it
//!   knows from `cluster_nodes` ([`confirm`]); only if each one answers
//!   (authenticated by its certificate, naming the node asked) not MASTER
//!   and not reaching the database does its deadline extend, as a renewal
//!   sent when the probes began would have extended it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use super::clock::boottime;
use crate::control::leadership::Leadership;
use crate::link::{ProbeResponder, ProbeStatus};

fn nanos(t: Duration) -> u64 {
    u64::try_from(t.as_nanos()).unwrap_or(u64::MAX)
}

/// This node's side of the probes: what it answers, and the promise its
/// answers make (see the module's documentation).
pub struct Witness {
    node_id: String,
    published: Arc<watch::Sender<Leadership>>,
    lease: Duration,
    renew: Duration,
    /// Boot time (ns) at which the last lease call of this node that the
    /// database answered was sent; 0: none yet, or the last call failed.
    reached: AtomicU64,
    /// Boot time (ns) at which the lease call under way was sent; 0: none.
    pending: AtomicU64,
    /// Boot time (ns) of this node's last answer "cannot reach the
    /// database"; 0: none. It takes no lease until `lease` after it.
    promised: AtomicU64,
}

impl std::fmt::Debug for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Witness")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Witness {
    pub(super) fn new(
        node_id: String,
        published: Arc<watch::Sender<Leadership>>,
        lease: Duration,
        renew: Duration,
    ) -> Witness {
        Witness {
            node_id,
            published,
            lease,
            renew,
            reached: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            promised: AtomicU64::new(0),
        }
    }

    /// A lease call (heartbeat and acquire, or renewal) sent at `sent`
    /// is under way.
    pub(super) fn begin(&self, sent: Duration) {
        self.pending.store(nanos(sent), Ordering::Release);
    }

    /// The database answered a lease call of this node sent at `sent`.
    pub(super) fn reached(&self, sent: Duration) {
        self.reached.fetch_max(nanos(sent), Ordering::AcqRel);
    }

    /// The lease call under way ended; `answered`: the database answered
    /// it (else it failed or timed out, and this node does not reach it).
    pub(super) fn end(&self, answered: bool) {
        if !answered {
            self.reached.store(0, Ordering::Release);
        }
        self.pending.store(0, Ordering::Release);
    }

    /// Whether this node reaches the database, from its own lease calls
    /// (one per renewal period; no query is made for a probe): the last
    /// one that ended was answered, was sent less than two periods ago,
    /// and the one under way, if any, has not waited more than a quarter
    /// of a period (a database that answers does so in milliseconds). So a
    /// node says "cannot reach" soon after an outage begins, and the
    /// MASTER's probes, repeated until its deadline, find out in time.
    pub fn reaches_database(&self) -> bool {
        let now = nanos(boottime());
        let reached = self.reached.load(Ordering::Acquire);
        let pending = self.pending.load(Ordering::Acquire);
        reached != 0
            && now < reached.saturating_add(nanos(self.renew * 2))
            && (pending == 0 || now < pending.saturating_add(nanos(self.renew / 4)))
    }

    /// Takes the promise as if this node had just answered "cannot reach
    /// the database": a node that starts with `cluster_failsafe` may have
    /// answered so before it restarted, and forgot.
    pub(super) fn promise_now(&self) {
        self.promised.fetch_max(nanos(boottime()), Ordering::AcqRel);
    }

    /// Until when (boot time) this node must not take the lease: `lease`
    /// after its last answer "cannot reach the database" (zero: no
    /// promise).
    pub fn promised_until(&self) -> Duration {
        match self.promised.load(Ordering::Acquire) {
            0 => Duration::ZERO,
            at => Duration::from_nanos(at) + self.lease,
        }
    }

    /// Whether this node answered "cannot reach the database" at or after
    /// `since` (boot time): a lease call sent at `since` that was granted
    /// must not make it act.
    pub(super) fn promised_since(&self, since: Duration) -> bool {
        self.promised.load(Ordering::Acquire) >= nanos(since)
    }
}

impl ProbeResponder for Witness {
    fn answer(&self) -> ProbeStatus {
        let state = self.published.borrow().state;
        let reaches_database = self.reaches_database();
        if !reaches_database {
            // Recorded before the answer is sent (the link writes it after
            // this returns): the asker may act from now on until `lease`
            // after its probe began, earlier than this.
            self.promised.fetch_max(nanos(boottime()), Ordering::AcqRel);
        }
        ProbeStatus {
            node_id: self.node_id.clone(),
            state: state.as_str().to_owned(),
            reaches_database,
        }
    }
}

/// Another node of the cluster, as `cluster_nodes` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Peer {
    pub node_id: String,
    pub link: Option<String>,
}

/// Probes every node of `peers` at once, within `budget`: `Ok` when each
/// answered, as the node asked, that it is not MASTER and cannot reach
/// the database; otherwise why not (the first reason).
pub(super) async fn confirm(
    tls: &Arc<rustls::ClientConfig>,
    peers: &[Peer],
    budget: Duration,
) -> Result<(), String> {
    let asks = peers.iter().map(|peer| async move {
        let Some(link) = &peer.link else {
            return Err(format!("{} advertises no link address", peer.node_id));
        };
        let answer = tokio::time::timeout(budget, crate::link::probe::ask(tls.clone(), link)).await;
        match answer {
            Err(_) => Err(format!("{} ({link}) did not answer in time", peer.node_id)),
            Ok(Err(e)) => Err(format!("{} ({link}) did not answer: {e}", peer.node_id)),
            Ok(Ok(a)) if a.node_id != peer.node_id => Err(format!(
                "{link} answered as {}, not as {}",
                a.node_id, peer.node_id
            )),
            Ok(Ok(a)) if a.state == "MASTER" => Err(format!("{} says it is MASTER", peer.node_id)),
            Ok(Ok(a)) if a.reaches_database => {
                Err(format!("{} reaches the database", peer.node_id))
            }
            Ok(Ok(_)) => Ok(()),
        }
    });
    futures_util::future::join_all(asks)
        .await
        .into_iter()
        .collect::<Result<Vec<()>, String>>()
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::leadership::NodeState;

    fn witness() -> Witness {
        let published = Arc::new(
            watch::channel(Leadership {
                state: NodeState::Standby,
                term: 0,
                leader: None,
            })
            .0,
        );
        Witness::new(
            "b".into(),
            published,
            Duration::from_secs(60),
            Duration::from_secs(1),
        )
    }

    #[test]
    fn a_node_that_reaches_the_database_promises_nothing() {
        let w = witness();
        w.reached(boottime());
        let a = w.answer();
        assert!(a.reaches_database);
        assert_eq!((a.node_id.as_str(), a.state.as_str()), ("b", "STANDBY"));
        assert_eq!(w.promised_until(), Duration::ZERO);
    }

    #[test]
    fn answering_cannot_reach_holds_the_lease_off_for_a_lease() {
        let w = witness();
        let before = boottime();
        // Never reached the database, then reached it long ago: both
        // answer "cannot reach".
        assert!(!w.answer().reaches_database);
        w.reached(Duration::from_nanos(1));
        assert!(!w.answer().reaches_database);
        let after = boottime();
        assert!(w.promised_until() >= before + Duration::from_secs(60));
        assert!(w.promised_until() <= after + Duration::from_secs(60));
        assert!(w.promised_since(before));
        assert!(!w.promised_since(after + Duration::from_nanos(1)));
    }

    #[test]
    fn a_failed_or_overdue_lease_call_means_cannot_reach() {
        let w = witness();
        let t = boottime();
        w.begin(t);
        w.reached(t);
        w.end(true);
        assert!(w.reaches_database());
        // A call under way for less than a quarter period changes nothing.
        w.begin(boottime());
        assert!(w.reaches_database());
        w.end(false);
        assert!(!w.reaches_database(), "the last call failed");
        w.reached(boottime());
        w.end(true);
        assert!(w.reaches_database());
        w.begin(boottime().saturating_sub(Duration::from_secs(1)));
        assert!(!w.reaches_database(), "a call overdue by a quarter period");
    }
}
