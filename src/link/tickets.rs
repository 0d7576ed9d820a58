//! TLS session tickets that every master sharing one secret can open: a
//! master restarted on its database, or the next MASTER of a cluster,
//! resumes the sessions of the edges that reconnect to it, instead of a
//! full handshake (a certificate signature and its check) per edge.
//!
//! The secret lives in the database (`Store::link_ticket_secret`);
//! each 6-hour period's key is derived from it, so keys roll and expire
//! (rustls asks that a ticket's lifetime be enforced by erasing keys, not
//! by a date in the ticket) with nothing more to store or coordinate.
//! Nodes whose clocks disagree at a period's boundary only fall back to
//! full handshakes for a moment.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf::{HKDF_SHA256, Salt};
use ring::rand::{SecureRandom as _, SystemRandom};

use crate::secret::TicketSecret;
use crate::util::Unpoisoned;

/// How long one key issues tickets; a ticket opens during its period and
/// the next, so it lives between one and two periods.
const PERIOD_SECS: u64 = 6 * 60 * 60;
const EPOCH_LEN: usize = 8;
const NONCE_LEN: usize = 12;
/// Longer tickets are refused unread: ours carry a session's secrets and,
/// with mutual TLS, the edge's certificate chain, well under this.
const MAX_TICKET: usize = 16 * 1024;

/// Tickets sealed with the current period's key derived from a shared
/// secret; the ticket starts with its period, which is also authenticated.
pub struct SharedTickets {
    secret: ring::hkdf::Prk,
    now_secs: fn() -> u64,
    /// The current period's key, derived once per period.
    current: Mutex<Option<(u64, LessSafeKey)>>,
}

impl std::fmt::Debug for SharedTickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret, nor a key.
        f.debug_struct("SharedTickets").finish_non_exhaustive()
    }
}

impl SharedTickets {
    pub fn new(secret: &TicketSecret) -> Self {
        Self::with_clock(secret, wall_clock_secs)
    }

    /// With a clock of our choosing (tests move it across periods).
    pub fn with_clock(secret: &TicketSecret, now_secs: fn() -> u64) -> Self {
        Self {
            secret: Salt::new(HKDF_SHA256, b"outpost link session tickets")
                .extract(secret.as_bytes()),
            now_secs,
            current: Mutex::new(None),
        }
    }

    fn epoch_now(&self) -> u64 {
        (self.now_secs)() / PERIOD_SECS
    }

    fn key(&self, epoch: u64) -> Option<LessSafeKey> {
        let info = epoch.to_be_bytes();
        let info = [info.as_slice()];
        let okm = self.secret.expand(&info, &CHACHA20_POLY1305).ok()?;
        Some(LessSafeKey::new(UnboundKey::from(okm)))
    }

    fn current_key(&self, epoch: u64) -> Option<LessSafeKey> {
        let mut current = self.current.lock_unpoisoned();
        match &*current {
            Some((e, key)) if *e == epoch => Some(key.clone()),
            _ => {
                let key = self.key(epoch)?;
                *current = Some((epoch, key.clone()));
                Some(key)
            }
        }
    }
}

impl rustls::server::ProducesTickets for SharedTickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        PERIOD_SECS as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let epoch = self.epoch_now();
        let mut nonce = [0u8; NONCE_LEN];
        // Random, not a counter: nodes share keys, and a counter would
        // repeat across them.
        SystemRandom::new().fill(&mut nonce).ok()?;
        let mut ticket = Vec::with_capacity(EPOCH_LEN + NONCE_LEN + plain.len() + 16);
        ticket.extend_from_slice(&epoch.to_be_bytes());
        ticket.extend_from_slice(&nonce);
        ticket.extend_from_slice(plain);
        let head = EPOCH_LEN + NONCE_LEN;
        let tag = self
            .current_key(epoch)?
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(epoch.to_be_bytes()),
                &mut ticket[head..],
            )
            .ok()?;
        ticket.extend_from_slice(tag.as_ref());
        Some(ticket)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        if ticket.len() > MAX_TICKET {
            return None;
        }
        let (epoch, rest) = ticket.split_first_chunk::<EPOCH_LEN>()?;
        let (nonce, sealed) = rest.split_first_chunk::<NONCE_LEN>()?;
        let epoch = u64::from_be_bytes(*epoch);
        let now = self.epoch_now();
        let key = if epoch == now {
            self.current_key(epoch)?
        } else if epoch.checked_add(1) == Some(now) {
            self.key(epoch)?
        } else {
            return None;
        };
        let mut sealed = sealed.to_vec();
        let plain_len = key
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(epoch.to_be_bytes()),
                &mut sealed,
            )
            .ok()?
            .len();
        sealed.truncate(plain_len);
        Some(sealed)
    }
}

fn wall_clock_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use rustls::server::ProducesTickets as _;

    use super::*;

    fn secret() -> TicketSecret {
        TicketSecret::from_slice(&[7; 32]).unwrap()
    }

    #[test]
    fn another_holder_of_the_secret_opens_a_ticket_and_nobody_else_does() {
        let sealed = SharedTickets::new(&secret()).encrypt(b"session").unwrap();
        assert_eq!(
            SharedTickets::new(&secret()).decrypt(&sealed).as_deref(),
            Some(&b"session"[..])
        );
        assert_eq!(
            SharedTickets::new(&TicketSecret::generate()).decrypt(&sealed),
            None
        );
        for at in 0..sealed.len() {
            let mut bent = sealed.clone();
            bent[at] ^= 1;
            assert_eq!(SharedTickets::new(&secret()).decrypt(&bent), None, "{at}");
        }
        for len in 0..sealed.len() {
            assert_eq!(SharedTickets::new(&secret()).decrypt(&sealed[..len]), None);
        }
        assert_eq!(
            SharedTickets::new(&secret()).decrypt(&[0; MAX_TICKET + 1]),
            None
        );
    }

    #[test]
    fn a_ticket_opens_in_its_period_and_the_next_only() {
        fn start() -> u64 {
            10 * PERIOD_SECS + 5
        }
        fn next() -> u64 {
            11 * PERIOD_SECS + 5
        }
        fn after() -> u64 {
            12 * PERIOD_SECS
        }
        fn before() -> u64 {
            10 * PERIOD_SECS - 1
        }
        let sealed = SharedTickets::with_clock(&secret(), start)
            .encrypt(b"session")
            .unwrap();
        let opens = |clock: fn() -> u64| {
            SharedTickets::with_clock(&secret(), clock)
                .decrypt(&sealed)
                .is_some()
        };
        assert!(opens(start));
        assert!(opens(next));
        assert!(!opens(after), "its key is gone after two periods");
        assert!(!opens(before), "nor is it valid before it was made");
    }
}
