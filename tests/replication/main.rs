//! Replication tests (store level): a replica following the master's change
//! feed with its checkpoint, and the edge and master event logs.

mod events;
mod replica;
#[path = "../support/mod.rs"]
mod support;
