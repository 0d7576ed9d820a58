//! Property tests of the decoders (the `fuzz/` targets run the same entry
//! points under libFuzzer): random and mutated input never panics, and
//! every frame round-trips.

use bytes::BytesMut;
use outpost::link::handshake;
use outpost::proto::frame::{self, decode, encode, parse_request};
use outpost::proto::{
    EventBody, Frame, Message, PREFACE_LEN, Preface, RequestBody, ResponseBody, WireError,
};
use serde_json::json;
use tokio_util::codec::Decoder as _;
use uuid::Uuid;

fn samples() -> Vec<Message> {
    let sys = Uuid::now_v7();
    let bodies = vec![
        RequestBody::Exec {
            module: "m".into(),
            method: "power".into(),
            args: json!([true, {"x": 1}]),
            epoch: Some(3),
        },
        RequestBody::Status {
            module: "m".into(),
            key: None,
        },
        RequestBody::Status {
            module: "m".into(),
            key: Some("k".into()),
        },
        RequestBody::StartSystem {
            system: sys,
            epoch: Some(3),
        },
        RequestBody::StopSystem {
            system: sys,
            epoch: None,
        },
        RequestBody::ReloadDriver {
            name: "d.lua".into(),
            source: Some("x = 1".into()),
        },
        RequestBody::ExpireSystemCache { system: sys },
        RequestBody::DebugSubscribe { module: "m".into() },
        RequestBody::DebugUnsubscribe { module: "m".into() },
        RequestBody::Repository {
            op: outpost::proto::RepoOp::Pull,
        },
        RequestBody::RepoTree {
            commit: "abc".into(),
        },
        RequestBody::RepoBlob {
            oid: "0".repeat(40),
        },
    ];
    let mut out: Vec<Message> = bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| Frame::Request {
            id: i as u64,
            deadline_ms: 1000,
            body,
        })
        .collect();
    out.push(Frame::Response {
        id: 1,
        result: Ok(ResponseBody::Done),
    });
    out.push(Frame::Response {
        id: 2,
        result: Err(WireError::Overloaded),
    });
    out.push(Frame::Response {
        id: 3,
        result: Ok(ResponseBody::Value {
            value: json!({"a": "é"}),
        }),
    });
    out.push(Frame::Cancel { id: 4 });
    out.push(Frame::Event {
        body: EventBody::Debug {
            module: "m".into(),
            level: "info".into(),
            message: "hi".into(),
        },
    });
    out.push(Frame::Ping);
    out.push(Frame::Pong);
    out
}

fn check_roundtrip(msg: &Message) {
    let bytes = encode(msg, 1 << 20).unwrap();
    let back: Message = decode(&bytes).unwrap().map_bodies(
        |body| parse_request(body.get().as_bytes()).unwrap().unwrap(),
        |result| frame::parse_result(result.get().as_bytes()).unwrap(),
        |body| serde_json::from_str(body.get()).unwrap(),
    );
    assert_eq!(&back, msg);
}

#[test]
fn every_frame_kind_round_trips_and_every_request_kind_is_listed() {
    for m in samples() {
        check_roundtrip(&m);
        if let Frame::Request { body, .. } = &m {
            assert!(RequestBody::KINDS.contains(&body.kind()));
            let v = serde_json::to_value(body).unwrap();
            assert_eq!(v["kind"], json!(body.kind()));
        }
    }
}

#[test]
fn random_and_mutated_input_never_panics() {
    let mut rng = fastrand::Rng::with_seed(0xfeed);
    let seeds: Vec<Vec<u8>> = samples()
        .iter()
        .map(|m| encode(m, 1 << 20).unwrap().to_vec())
        .collect();
    let hs = [
        br#"{"msg":"hello","edge_id":"00000000-0000-0000-0000-000000000000","nonce":"0000000000000000000000000000000000000000000000000000000000000000","boot_id":"00000000-0000-0000-0000-000000000000","commit":null,"max_in_flight":1}"#.to_vec(),
        br#"{"msg":"denied"}"#.to_vec(),
    ];
    for i in 0..20_000 {
        let mut input = if i % 4 == 0 {
            (0..rng.usize(0..64)).map(|_| rng.u8(..)).collect()
        } else if i % 4 == 1 {
            hs[rng.usize(..hs.len())].clone()
        } else {
            seeds[rng.usize(..seeds.len())].clone()
        };
        for _ in 0..rng.usize(0..4) {
            if input.is_empty() {
                break;
            }
            let at = rng.usize(..input.len());
            match rng.u8(0..3) {
                0 => input[at] = rng.u8(..),
                1 => {
                    input.remove(at);
                }
                _ => input.insert(at, rng.u8(..)),
            }
        }
        match frame::decode_sliced(&input) {
            Ok(Frame::Request { body, .. }) => {
                let _ = parse_request(body);
            }
            Ok(Frame::Response { result, .. }) => {
                let _ = frame::parse_result(result);
                let _ = frame::raw_value(result);
            }
            _ => {}
        }
        let _ = handshake::parse_msg(&input);
        if input.len() >= PREFACE_LEN {
            let _ = Preface::decode(input[..PREFACE_LEN].try_into().unwrap());
        }
        // The length-delimited codec over the same bytes, fed in pieces.
        let mut codec = frame::codec(256);
        let mut buf = BytesMut::new();
        for chunk in input.chunks(rng.usize(1..8)) {
            buf.extend_from_slice(chunk);
            match codec.decode(&mut buf) {
                Ok(Some(f)) => assert!(f.len() <= 256),
                Ok(None) => {}
                Err(_) => break,
            }
        }
    }
}

#[test]
fn preface_and_frame_tables() {
    // (input, expected) tables for the pure decoders.
    let ours = Preface::ours().encode();
    let mut newer = ours;
    newer[9] = newer[9].wrapping_add(1);
    let mut older = ours;
    older[9] = older[9].wrapping_sub(1);
    let mut other = ours;
    other[9] = other[9].wrapping_add(2);
    let mut bad = ours;
    bad[0] = b'X';
    let cases: Vec<([u8; PREFACE_LEN], Result<u16, &str>)> = vec![
        (ours, Ok(outpost::proto::PROTOCOL_VERSION)),
        // A peer one version either side is accepted; the lower one is spoken.
        (newer, Ok(outpost::proto::PROTOCOL_VERSION)),
        (older, Ok(outpost::proto::PROTOCOL_VERSION - 1)),
        (other, Err("protocol version mismatch")),
        (bad, Err("bad magic")),
    ];
    for (input, expected) in cases {
        match (Preface::check(&input), expected) {
            (Ok(spoken), Ok(v)) => assert_eq!(spoken, v),
            (Err(e), Err(msg)) => assert!(e.to_string().contains(msg), "{e}"),
            (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
        }
    }
    let frames: Vec<(&[u8], bool)> = vec![
        (br#""Ping""#, true),
        (br#"{"Cancel":{"id":3}}"#, true),
        (
            br#"{"Request":{"id":1,"deadline_ms":5,"body":{"kind":"new_thing"}}}"#,
            true,
        ),
        (br#"{"Request":{"id":1,"body":{}}}"#, false),
        (br#"{"Teleport":{}}"#, false),
        (b"", false),
    ];
    for (input, ok) in frames {
        assert_eq!(
            decode(input).is_ok(),
            ok,
            "{}",
            String::from_utf8_lossy(input)
        );
    }
    let big = Frame::<_, (), ()>::Request {
        id: 1,
        deadline_ms: 1,
        body: json!("x".repeat(100)),
    };
    assert!(matches!(
        encode(&big, 50),
        Err(frame::FrameError::TooLarge { .. })
    ));
}
