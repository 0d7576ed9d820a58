//! Fuzz target: the preface and handshake message parsers. Must never
//! panic on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost::link::handshake;
use outpost::proto::{PREFACE_LEN, Preface};

fuzz_target!(|data: &[u8]| {
    if data.len() >= PREFACE_LEN {
        let _ = Preface::check(data[..PREFACE_LEN].try_into().unwrap());
    }
    let _ = handshake::parse_msg(data);
});
