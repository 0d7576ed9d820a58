//! The envelope and its codec: length-delimited frames (4-byte big-endian
//! length, tokio-util's `LengthDelimitedCodec` with `max_frame_length`)
//! carrying one JSON-encoded [`Frame`] each.
//!
//! Decoding is two-step: the envelope first, with bodies kept raw
//! ([`RawFrame`]), then each body by whoever needs it. So a body of an
//! unknown kind costs a typed error response, not the link, and the reader
//! task never pays for parsing results on behalf of callers.

use bytes::{BufMut as _, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio_util::codec::LengthDelimitedCodec;

use super::{RequestBody, ResponseBody, WireError};

/// One message on an established link. Deadlines travel as durations
/// (milliseconds left when the request was sent), never as clock readings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Frame<Q, R, E> {
    Request { id: u64, deadline_ms: u64, body: Q },
    Response { id: u64, result: R },
    Cancel { id: u64 },
    Event { body: E },
    Ping,
    Pong,
}

/// A fully typed frame.
pub type Message = Frame<RequestBody, Result<ResponseBody, WireError>, super::EventBody>;

/// A frame whose bodies are still raw JSON.
pub type RawFrame = Frame<Box<RawValue>, Box<RawValue>, Box<RawValue>>;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("malformed frame: {0}")]
    Malformed(#[source] serde_json::Error),
    #[error("cannot encode frame: {0}")]
    Encode(#[source] serde_json::Error),
}

/// The codec for an established link.
pub fn codec(max_frame: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(max_frame)
        .new_codec()
}

/// Serialises a frame into its payload (no length prefix), refusing one
/// larger than `max` so the sender gets an error instead of the peer a
/// protocol violation.
pub fn encode<Q: Serialize, R: Serialize, E: Serialize>(
    frame: &Frame<Q, R, E>,
    max: usize,
) -> Result<Bytes, FrameError> {
    // A Vec, not a BytesMut writer: serde_json writes token by token and
    // `Vec::extend_from_slice` is the cheapest sink for that.
    let mut buf = Vec::with_capacity(256);
    serde_json::to_writer(&mut buf, frame).map_err(FrameError::Encode)?;
    if buf.len() > max {
        return Err(FrameError::TooLarge {
            len: buf.len(),
            max,
        });
    }
    Ok(Bytes::from(buf))
}

/// Parses a payload into an envelope with raw bodies.
pub fn decode(payload: &[u8]) -> Result<RawFrame, FrameError> {
    serde_json::from_slice(payload).map_err(FrameError::Malformed)
}

/// Parses a raw request body. An unknown `kind` is
/// [`WireError::UnknownKind`]; a known kind with bad fields is
/// [`WireError::BadRequest`].
pub fn parse_request(raw: &RawValue) -> Result<RequestBody, WireError> {
    match serde_json::from_str::<RequestBody>(raw.get()) {
        Ok(body) => Ok(body),
        Err(e) => {
            #[derive(Deserialize)]
            struct Kind {
                kind: String,
            }
            match serde_json::from_str::<Kind>(raw.get()) {
                Ok(k) if !RequestBody::KINDS.contains(&k.kind.as_str()) => {
                    Err(WireError::UnknownKind { kind: k.kind })
                }
                _ => Err(WireError::bad_request(e.to_string())),
            }
        }
    }
}

/// Parses a raw response result.
pub fn parse_result(raw: &RawValue) -> Result<Result<ResponseBody, WireError>, serde_json::Error> {
    serde_json::from_str(raw.get())
}

/// Prepends the 4-byte length the codec expects (for writers that bypass
/// the codec, such as the handshake).
pub fn with_length_prefix(payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(payload.len() + 4);
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.freeze()
}
