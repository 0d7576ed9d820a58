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

/// A frame whose bodies are still raw JSON, borrowed from the payload (the
/// link's reader: no copy of a body it hands on or parses at once).
pub type BorrowedFrame<'a> = Frame<&'a RawValue, &'a RawValue, &'a RawValue>;

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

/// [`decode`] without copying the bodies out of `payload`.
pub fn decode_borrowed(payload: &[u8]) -> Result<BorrowedFrame<'_>, FrameError> {
    serde_json::from_slice(payload).map_err(FrameError::Malformed)
}

/// How every encoder of this crate opens an exec body (serde writes an
/// internally tagged enum's tag first, without spaces).
const EXEC_PREFIX: &str = r#"{"kind":"exec","#;
/// How an encoded successful `Value` answer opens.
const VALUE_PREFIX: &str = r#"{"Ok":{"kind":"value","value":"#;

/// The fields of [`RequestBody::Exec`], parsed without the derived
/// internally tagged visitor (which buffers the whole body, arguments
/// included, into an intermediate tree first). Unknown fields, `kind`
/// among them, are ignored, as the derived parser ignores them.
#[derive(Deserialize)]
struct ExecFields {
    module: String,
    method: String,
    #[serde(default)]
    args: serde_json::Value,
    #[serde(default)]
    epoch: Option<u64>,
}

#[derive(Deserialize)]
#[allow(non_snake_case, reason = "the field is the wire's `Ok` tag")]
struct OkValue {
    Ok: ValueFields,
}

#[derive(Deserialize)]
struct ValueFields {
    value: serde_json::Value,
}

/// Parses a raw request body. An unknown `kind` is
/// [`WireError::UnknownKind`]; a known kind with bad fields is
/// [`WireError::BadRequest`].
pub fn parse_request(raw: &RawValue) -> Result<RequestBody, WireError> {
    // The hot kind first; anything unusual takes the general path, which
    // gives the same answer, only slower.
    if raw.get().starts_with(EXEC_PREFIX)
        && let Ok(e) = serde_json::from_str::<ExecFields>(raw.get())
    {
        return Ok(RequestBody::Exec {
            module: e.module,
            method: e.method,
            args: e.args,
            epoch: e.epoch,
        });
    }
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
    if raw.get().starts_with(VALUE_PREFIX)
        && let Ok(v) = serde_json::from_str::<OkValue>(raw.get())
    {
        return Ok(Ok(ResponseBody::Value { value: v.Ok.value }));
    }
    serde_json::from_str(raw.get())
}

/// The value of a successful `Value` answer, still raw, when `raw` is one
/// (the API passes an exec result through to its client without building
/// it); `None` for any other answer, which [`parse_result`] parses.
pub fn raw_value(raw: &RawValue) -> Option<&RawValue> {
    #[derive(Deserialize)]
    #[allow(non_snake_case, reason = "the field is the wire's `Ok` tag")]
    struct OkRaw<'a> {
        #[serde(borrow)]
        Ok: ValueRaw<'a>,
    }
    #[derive(Deserialize)]
    struct ValueRaw<'a> {
        #[serde(borrow)]
        value: &'a RawValue,
    }
    if !raw.get().starts_with(VALUE_PREFIX) {
        return None;
    }
    serde_json::from_str::<OkRaw<'_>>(raw.get())
        .ok()
        .map(|v| v.Ok.value)
}

/// Prepends the 4-byte length the codec expects (for writers that bypass
/// the codec, such as the handshake).
pub fn with_length_prefix(payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(payload.len() + 4);
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    /// The exec and value shortcuts answer exactly what the derived
    /// parsers answer, for what our encoder writes and for what it never
    /// writes (other field orders, spaces, bad fields).
    #[test]
    fn shortcuts_agree_with_the_derived_parsers() {
        let requests = [
            r#"{"kind":"exec","module":"m","method":"f","args":{"b":[1,{"c":null}],"a":"é"},"epoch":3}"#,
            r#"{"kind":"exec","module":"m","method":"f"}"#,
            r#"{"kind":"exec","module":"m","method":"f","args":null,"epoch":null,"extra":1}"#,
            r#"{"kind":"exec","module":5,"method":"f"}"#,
            r#"{"kind":"exec","method":"f"}"#,
            r#"{"module":"m","kind":"exec","method":"f","args":[1]}"#,
            r#"{ "kind":"exec","module":"m","method":"f"}"#,
            r#"{"kind":"status","module":"m"}"#,
            r#"{"kind":"nope","module":"m"}"#,
        ];
        for text in requests {
            let derived = match serde_json::from_str::<RequestBody>(text) {
                Ok(b) => Ok(b),
                Err(_) => Err(()),
            };
            assert_eq!(parse_request(&raw(text)).map_err(|_| ()), derived, "{text}");
        }
        let results = [
            r#"{"Ok":{"kind":"value","value":{"a":[1,2.5,"x"]}}}"#,
            r#"{"Ok":{"kind":"value","value":null}}"#,
            r#"{"Ok":{"kind":"value"}}"#,
            r#"{"Ok":{"kind":"done"}}"#,
            r#"{"Err":{"code":"overloaded"}}"#,
            r#"{"Ok":{"value":1,"kind":"value"}}"#,
        ];
        for text in results {
            let derived =
                serde_json::from_str::<Result<ResponseBody, WireError>>(text).map_err(|_| ());
            let fast = parse_result(&raw(text)).map_err(|_| ());
            assert_eq!(fast, derived, "{text}");
            let whole = raw(text);
            let value = raw_value(&whole).map(|v| v.get().to_owned());
            let expected = match derived {
                Ok(Ok(ResponseBody::Value { value })) if text.starts_with(VALUE_PREFIX) => {
                    Some(value)
                }
                _ => None,
            };
            assert_eq!(
                value.map(|v| serde_json::from_str::<serde_json::Value>(&v).unwrap()),
                expected,
                "{text}"
            );
        }
        let whole = raw(results[0]);
        let value = raw_value(&whole).unwrap();
        assert_eq!(value.get(), r#"{"a":[1,2.5,"x"]}"#);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(value.get()).unwrap(),
            json!({"a": [1, 2.5, "x"]})
        );
    }
}
