//! The envelope and its codec: length-delimited frames (4-byte big-endian
//! length, tokio-util's `LengthDelimitedCodec` with `max_frame_length`)
//! carrying one JSON-encoded [`Frame`] each.
//!
//! Decoding is two-step: the envelope first, with bodies kept raw
//! ([`RawFrame`]), then each body by whoever needs it. So a body of an
//! unknown kind costs a typed error response, not the link, and the reader
//! task never pays for parsing results on behalf of callers.
//!
//! The link's reader uses [`decode_sliced`]: for the envelopes our encoder
//! writes, it finds the body by the envelope's fixed opening and closing
//! bytes without scanning the body, which is then parsed once, by whoever
//! needs it. A body that turns out not to be JSON is the same protocol
//! error as a malformed envelope ([`check_json`]).

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

impl<Q, R, E> Frame<Q, R, E> {
    /// The same frame with each body (request, result, event) converted.
    pub fn map_bodies<Q2, R2, E2>(
        self,
        request: impl FnOnce(Q) -> Q2,
        result: impl FnOnce(R) -> R2,
        event: impl FnOnce(E) -> E2,
    ) -> Frame<Q2, R2, E2> {
        match self {
            Frame::Request {
                id,
                deadline_ms,
                body,
            } => Frame::Request {
                id,
                deadline_ms,
                body: request(body),
            },
            Frame::Response { id, result: r } => Frame::Response {
                id,
                result: result(r),
            },
            Frame::Event { body } => Frame::Event { body: event(body) },
            Frame::Cancel { id } => Frame::Cancel { id },
            Frame::Ping => Frame::Ping,
            Frame::Pong => Frame::Pong,
        }
    }
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
    #[error("malformed frame: {0}")]
    NotUtf8(#[source] std::str::Utf8Error),
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
    // `Vec::extend_from_slice` is the cheapest sink for that. One per
    // thread, copied out at its exact size: one allocation per frame,
    // where a fresh Vec handed to `Bytes` costs two (the buffer and the
    // `Bytes` header of a buffer with spare capacity).
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    /// A scratch buffer grown past this by a large frame is let go.
    const KEEP: usize = 64 * 1024;
    SCRATCH.with_borrow_mut(|buf| {
        buf.clear();
        let written = serde_json::to_writer(&mut *buf, frame).map_err(FrameError::Encode);
        let encoded = written.and_then(|()| match buf.len() {
            len if len > max => Err(FrameError::TooLarge { len, max }),
            _ => Ok(Bytes::copy_from_slice(buf)),
        });
        if buf.capacity() > KEEP {
            *buf = Vec::new();
        }
        encoded
    })
}

/// Parses a payload into an envelope with raw bodies.
pub fn decode(payload: &[u8]) -> Result<RawFrame, FrameError> {
    serde_json::from_slice(payload).map_err(FrameError::Malformed)
}

/// [`decode`] without copying the bodies out of `payload`.
pub fn decode_borrowed(payload: &[u8]) -> Result<BorrowedFrame<'_>, FrameError> {
    serde_json::from_slice(payload).map_err(FrameError::Malformed)
}

/// A frame whose bodies are byte ranges of the payload, not yet checked to
/// be JSON: whoever parses a body learns that (see [`check_json`]).
pub type SlicedFrame<'a> = Frame<&'a [u8], &'a [u8], &'a [u8]>;

/// The link reader's decoder: [`decode_borrowed`], except that the body of
/// a request, response or event in the shape our encoder writes is found
/// by the envelope's fixed bytes instead of being scanned (serde's
/// `RawValue` capture reads every byte of it, and so would the parse that
/// follows). Any other shape (other field orders, spaces, extra fields)
/// takes the general path. The two agree: a body that is JSON yields the
/// same frame either way, and one that is not fails [`check_json`] exactly
/// when [`decode_borrowed`] would have refused the frame.
pub fn decode_sliced(payload: &[u8]) -> Result<SlicedFrame<'_>, FrameError> {
    if let Some(frame) = sliced_shortcut(payload) {
        return Ok(frame);
    }
    Ok(decode_borrowed(payload)?.map_bodies(raw_bytes, raw_bytes, raw_bytes))
}

fn raw_bytes(body: &RawValue) -> &[u8] {
    body.get().as_bytes()
}

/// The body of an envelope as serde writes it: `{"Request":{"id":1,
/// "deadline_ms":2,"body":…}}`, `{"Response":{"id":1,"result":…}}`,
/// `{"Event":{"body":…}}`. The body runs to the envelope's last two bytes.
fn sliced_shortcut(payload: &[u8]) -> Option<SlicedFrame<'_>> {
    // Bodies must be UTF-8 as serde's capture requires; checking that is
    // far cheaper than a JSON scan.
    std::str::from_utf8(payload).ok()?;
    let inner = payload.strip_suffix(b"}}")?;
    if let Some(rest) = inner.strip_prefix(br#"{"Response":{"id":"#) {
        let (id, rest) = json_u64(rest)?;
        let result = rest.strip_prefix(br#","result":"#)?;
        let result = trim_json_space(result);
        return Some(Frame::Response { id, result });
    }
    if let Some(rest) = inner.strip_prefix(br#"{"Request":{"id":"#) {
        let (id, rest) = json_u64(rest)?;
        let rest = rest.strip_prefix(br#","deadline_ms":"#)?;
        let (deadline_ms, rest) = json_u64(rest)?;
        let body = trim_json_space(rest.strip_prefix(br#","body":"#)?);
        return Some(Frame::Request {
            id,
            deadline_ms,
            body,
        });
    }
    let body = trim_json_space(inner.strip_prefix(br#"{"Event":{"body":"#)?);
    Some(Frame::Event { body })
}

/// `s` without the whitespace JSON allows around a value (serde's capture
/// leaves it out too).
fn trim_json_space(s: &[u8]) -> &[u8] {
    let space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let start = s.iter().position(|b| !space(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !space(b)).map_or(start, |i| i + 1);
    &s[start..end]
}

/// A JSON unsigned integer at the start of `s` as serde writes one (no
/// sign, no leading zero, no fraction), and what follows it; `None` for
/// anything else, which the general path then judges.
fn json_u64(s: &[u8]) -> Option<(u64, &[u8])> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || (digits > 1 && s[0] == b'0') {
        return None;
    }
    let (number, rest) = s.split_at(digits);
    let n = std::str::from_utf8(number).ok()?.parse().ok()?;
    if matches!(rest.first(), Some(b'.' | b'e' | b'E')) {
        return None;
    }
    Some((n, rest))
}

/// Whether `body` is one JSON value, as the envelope's general decoder
/// requires of every body: a peer that sends one that is not broke the
/// protocol. Only error paths call this; it scans the whole body.
pub fn check_json(body: &[u8]) -> Result<(), FrameError> {
    // Serde skips the strings it ignores without checking their UTF-8.
    let text = std::str::from_utf8(body).map_err(FrameError::NotUtf8)?;
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| ())
        .map_err(FrameError::Malformed)
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

/// Parses a request body. `Err` when the body is not JSON at all (the
/// peer broke the protocol: see [`check_json`]); otherwise an unknown
/// `kind` is [`WireError::UnknownKind`] and a known kind with bad fields
/// is [`WireError::BadRequest`].
pub fn parse_request(raw: &[u8]) -> Result<Result<RequestBody, WireError>, FrameError> {
    // The hot kind first; anything unusual takes the general path, which
    // gives the same answer, only slower.
    if raw.starts_with(EXEC_PREFIX.as_bytes())
        && let Ok(e) = serde_json::from_slice::<ExecFields>(raw)
    {
        return Ok(Ok(RequestBody::Exec {
            module: e.module,
            method: e.method,
            args: e.args,
            epoch: e.epoch,
        }));
    }
    match serde_json::from_slice::<RequestBody>(raw) {
        Ok(body) => Ok(Ok(body)),
        Err(e) => {
            check_json(raw)?;
            #[derive(Deserialize)]
            struct Kind {
                kind: String,
            }
            Ok(match serde_json::from_slice::<Kind>(raw) {
                Ok(k) if !RequestBody::KINDS.contains(&k.kind.as_str()) => {
                    Err(WireError::UnknownKind { kind: k.kind })
                }
                _ => Err(WireError::bad_request(e.to_string())),
            })
        }
    }
}

/// Parses a response result. `Err` when it is not one; [`check_json`]
/// tells whether it is not JSON at all.
pub fn parse_result(raw: &[u8]) -> Result<Result<ResponseBody, WireError>, serde_json::Error> {
    if raw.starts_with(VALUE_PREFIX.as_bytes())
        && let Ok(v) = serde_json::from_slice::<OkValue>(raw)
    {
        return Ok(Ok(ResponseBody::Value { value: v.Ok.value }));
    }
    serde_json::from_slice(raw)
}

/// The value of a successful `Value` answer, still raw, when `raw` is one
/// (the API passes an exec result through to its client without building
/// it); `None` for any other answer, which [`parse_result`] parses.
pub fn raw_value(raw: &[u8]) -> Option<&RawValue> {
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
    if !raw.starts_with(VALUE_PREFIX.as_bytes()) {
        return None;
    }
    serde_json::from_slice::<OkRaw<'_>>(raw)
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

    /// What [`decode_sliced`] answers, with each body checked: the same as
    /// [`decode_borrowed`] for every input.
    pub(super) fn sliced_then_checked(payload: &[u8]) -> Option<SlicedFrame<'_>> {
        let frame = decode_sliced(payload).ok()?;
        let bodies_are_json = match &frame {
            Frame::Request { body, .. } | Frame::Event { body } => check_json(body).is_ok(),
            Frame::Response { result, .. } => check_json(result).is_ok(),
            _ => true,
        };
        bodies_are_json.then_some(frame)
    }

    pub(super) fn borrowed_as_sliced(payload: &[u8]) -> Option<SlicedFrame<'_>> {
        let frame = decode_borrowed(payload).ok()?;
        Some(frame.map_bodies(raw_bytes, raw_bytes, raw_bytes))
    }

    /// The sliced decoder's shortcut finds the same bodies as serde, and
    /// leaves to serde (or to the body's check) whatever it does not write.
    #[test]
    fn the_sliced_decoder_agrees_with_serde() {
        let frames = [
            r#"{"Request":{"id":7,"deadline_ms":250,"body":{"kind":"exec","module":"m"}}}"#,
            r#"{"Response":{"id":18446744073709551615,"result":{"Ok":{"kind":"done"}}}}"#,
            r#"{"Response":{"id":18446744073709551616,"result":1}}"#,
            r#"{"Response":{"id":07,"result":1}}"#,
            r#"{"Response":{"id":7.0,"result":1}}"#,
            r#"{"Response":{"id":7e1,"result":1}}"#,
            r#"{"Response":{"id":-7,"result":1}}"#,
            r#"{"Response":{"id":7,"result":1,"id":8}}"#,
            r#"{"Response":{"id":7,"result":{"a":1}},"x":{"y":2}}"#,
            r#"{"Response":{"id":7,"result":{"a":1}}}}"#,
            r#"{"Response":{"id":7,"result":}}"#,
            r#"{"Response":{"id":7,"result":"}}"#,
            r#"{"Response":{"id":7,"result":[1,2] }}"#,
            r#"{"Response":{"result":1,"id":7}}"#,
            r#"{"Response": {"id":7,"result":1}}"#,
            r#"{"Event":{"body":{"kind":"debug"}}}"#,
            r#"{"Event":{"body":{"kind":"debug"}},"Ping":1}"#,
            r#"{"Cancel":{"id":3}}"#,
            r#""Ping""#,
            r#""Pong""#,
            r#"{"Request":{"id":1,"deadline_ms":2,"body":"é"}}"#,
        ];
        for text in frames {
            assert_eq!(
                sliced_then_checked(text.as_bytes()),
                borrowed_as_sliced(text.as_bytes()),
                "{text}"
            );
        }
        // A body that is not UTF-8 is not JSON either.
        let latin1 = b"{\"Request\":{\"id\":1,\"deadline_ms\":2,\"body\":\"\xff\"}}";
        assert_eq!(sliced_then_checked(latin1), None);
        assert_eq!(borrowed_as_sliced(latin1), None);
        let Ok(Frame::Response { id, result }) = decode_sliced(frames[1].as_bytes()) else {
            panic!("not a response");
        };
        assert_eq!((id, result), (u64::MAX, &br#"{"Ok":{"kind":"done"}}"#[..]));
    }

    /// The same agreement over random mutations of real frames (bytes
    /// flipped, dropped and inserted), which mostly hit the envelope's
    /// fixed bytes and the numbers the shortcut reads.
    #[test]
    fn the_sliced_decoder_agrees_with_serde_on_mutated_frames() {
        let exec = RequestBody::Exec {
            module: "m".into(),
            method: "f".into(),
            args: json!({"a": [1, "é"]}),
            epoch: Some(3),
        };
        let seeds: Vec<Vec<u8>> = vec![
            encode(
                &Frame::<_, (), ()>::Request {
                    id: 1234,
                    deadline_ms: 90,
                    body: &exec,
                },
                1 << 20,
            ),
            encode(
                &Frame::<(), _, ()>::Response {
                    id: 99,
                    result: &json!({"Ok": {"kind": "done"}}),
                },
                1 << 20,
            ),
            encode(
                &Frame::<(), (), _>::Event {
                    body: &json!({"kind": "debug", "m": 1}),
                },
                1 << 20,
            ),
            encode(&Frame::<(), (), ()>::Cancel { id: 5 }, 1 << 20),
        ]
        .into_iter()
        .map(|b| b.unwrap().to_vec())
        .collect();
        const JSON_BYTES: &[u8] = b"{}[]\":,0123456789 ex-.";
        let mut rng = fastrand::Rng::with_seed(0x51ced);
        for _ in 0..50_000 {
            let mut input = seeds[rng.usize(..seeds.len())].clone();
            for _ in 0..rng.usize(1..4) {
                let at = rng.usize(..input.len());
                match rng.u8(0..3) {
                    0 => input[at] = JSON_BYTES[rng.usize(..JSON_BYTES.len())],
                    1 => {
                        input.remove(at);
                    }
                    _ => input.insert(at, rng.u8(..)),
                }
            }
            assert_eq!(
                sliced_then_checked(&input),
                borrowed_as_sliced(&input),
                "{}",
                String::from_utf8_lossy(&input)
            );
        }
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
            let fast = parse_request(text.as_bytes()).unwrap().map_err(|_| ());
            assert_eq!(fast, derived, "{text}");
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
            let fast = parse_result(text.as_bytes()).map_err(|_| ());
            assert_eq!(fast, derived, "{text}");
            let value = raw_value(text.as_bytes()).map(|v| v.get().to_owned());
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
        let value = raw_value(results[0].as_bytes()).unwrap();
        assert_eq!(value.get(), r#"{"a":[1,2.5,"x"]}"#);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(value.get()).unwrap(),
            json!({"a": [1, 2.5, "x"]})
        );
    }
}
