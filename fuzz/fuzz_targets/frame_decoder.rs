//! Fuzz target: the length-delimited codec and the envelope decoder, fed
//! arbitrary bytes in arbitrary chunks. Must never panic; every frame the
//! codec yields respects the maximum size.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use outpost::proto::frame::{self, Frame};
use tokio_util::codec::Decoder as _;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let mut codec = frame::codec(4096);
    let mut buf = BytesMut::new();
    for chunk in rest.chunks(usize::from(split).max(1)) {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(f)) => {
                    assert!(f.len() <= 4096);
                    // The link reader's decoder, then its body parser.
                    if let Ok(Frame::Request { body, .. }) = frame::decode_sliced(&f) {
                        let _ = frame::parse_request(body);
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    if let Ok(Frame::Response { result, .. }) = frame::decode_sliced(rest) {
        let _ = frame::parse_result(result);
        let _ = frame::raw_value(result);
    }
});
