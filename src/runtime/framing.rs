//! Splits a device's byte stream into frames: by delimiter, by fixed length,
//! or not at all. The buffer is bounded: a frame longer than `max_frame` is
//! an error, so a device that never sends its delimiter cannot grow memory.

use memchr::memmem;

/// How a driver wants its device's bytes cut into frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Every read is handed over as it came.
    None,
    /// Frames end with this byte sequence (not included in the frame).
    Delimiter(Vec<u8>),
    /// Every frame is exactly this many bytes.
    Fixed(usize),
}

/// A frame grew past the limit without being complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("frame longer than {limit} bytes without a delimiter")]
pub(crate) struct FrameTooLong {
    pub limit: usize,
}

/// Incremental frame splitter over an owned, bounded buffer.
#[derive(Debug)]
pub(crate) struct Framer {
    framing: Framing,
    max_frame: usize,
    /// Bytes read but not yet part of a complete frame. The transport reads
    /// straight into it, so there is no second copy.
    pub(crate) buf: Vec<u8>,
    /// Where the delimiter search resumes, so a long partial line is not
    /// rescanned on every read.
    scanned: usize,
}

impl Framer {
    pub(crate) fn new(framing: Framing, max_frame: usize) -> Framer {
        Framer {
            framing,
            max_frame,
            buf: Vec::new(),
            scanned: 0,
        }
    }

    pub(crate) fn framing(&self) -> &Framing {
        &self.framing
    }

    /// Appends `data` and extracts the complete frames (the tests' path;
    /// the transport reads into `buf` directly and calls [`Framer::extract`]).
    #[cfg(test)]
    fn push(&mut self, data: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), FrameTooLong> {
        self.buf.extend_from_slice(data);
        self.extract(out)
    }

    /// Moves every complete frame in the buffer to `out`.
    pub(crate) fn extract(&mut self, out: &mut Vec<Vec<u8>>) -> Result<(), FrameTooLong> {
        match &self.framing {
            Framing::None => {
                if !self.buf.is_empty() {
                    out.push(std::mem::take(&mut self.buf));
                }
            }
            Framing::Fixed(n) => {
                let n = *n;
                let whole = self.buf.len() / n * n;
                out.extend(self.buf[..whole].chunks(n).map(<[u8]>::to_vec));
                self.buf.drain(..whole);
            }
            Framing::Delimiter(delim) => {
                let dl = delim.len();
                let mut start = 0;
                let mut from = self.scanned;
                // memmem::find rather than a stored Finder: a searcher per
                // connection costs more memory than building one per read.
                while let Some(pos) = memmem::find(&self.buf[from..], delim) {
                    let end = from + pos;
                    if end - start > self.max_frame {
                        return Err(FrameTooLong {
                            limit: self.max_frame,
                        });
                    }
                    out.push(self.buf[start..end].to_vec());
                    start = end + dl;
                    from = start;
                }
                self.buf.drain(..start);
                // Resume just before the end in case the delimiter is split
                // across two reads.
                self.scanned = self.buf.len().saturating_sub(dl - 1);
                if self.buf.len() > self.max_frame {
                    return Err(FrameTooLong {
                        limit: self.max_frame,
                    });
                }
            }
        }
        // A burst can leave a large allocation behind; give it back so an
        // idle module stays small.
        if self.buf.capacity() > 16 * 1024 && self.buf.len() < 1024 {
            self.buf.shrink_to(1024);
        }
        Ok(())
    }

    /// Drops any partial frame (after a reconnect the old bytes mean nothing).
    pub(crate) fn reset(&mut self) {
        self.buf = Vec::new();
        self.scanned = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(framing: Framing, max: usize, chunks: &[&[u8]], expect: &[&[u8]], err: bool) {
        let mut f = Framer::new(framing, max);
        let mut out = Vec::new();
        let mut failed = false;
        for c in chunks {
            if f.push(c, &mut out).is_err() {
                failed = true;
                break;
            }
        }
        let got: Vec<&[u8]> = out.iter().map(Vec::as_slice).collect();
        assert_eq!(got, expect);
        assert_eq!(failed, err);
    }

    #[test]
    fn framing_table() {
        let cr = || Framing::Delimiter(b"\r".to_vec());
        let crlf = || Framing::Delimiter(b"\r\n".to_vec());
        check(cr(), 100, &[b"a\rb\r"], &[b"a", b"b"], false);
        check(cr(), 100, &[b"ab", b"c\rd"], &[b"abc"], false);
        check(crlf(), 100, &[b"ab\r", b"\ncd\r\n"], &[b"ab", b"cd"], false);
        check(cr(), 4, &[b"abcdef"], &[], true);
        check(cr(), 4, &[b"abc", b"def"], &[], true);
        check(cr(), 4, &[b"abcd\r"], &[b"abcd"], false);
        check(cr(), 4, &[b"abcde\r"], &[], true);
        check(
            Framing::Fixed(2),
            10,
            &[b"abc", b"d"],
            &[b"ab", b"cd"],
            false,
        );
        check(Framing::None, 10, &[b"abc", b"d"], &[b"abc", b"d"], false);
        check(cr(), 100, &[b"\r\r"], &[b"", b""], false);
    }

    /// However a stream is cut into reads, the frames are the same.
    #[test]
    fn random_chunking_gives_the_same_frames() {
        let mut rng = fastrand::Rng::with_seed(7);
        for delim in [&b"\n"[..], b"\r\n", b"END"] {
            let mut stream = Vec::new();
            let mut expect = Vec::new();
            for _ in 0..200 {
                let len = rng.usize(0..40);
                let frame: Vec<u8> = (0..len).map(|_| rng.u8(b'a'..=b'z')).collect();
                stream.extend_from_slice(&frame);
                stream.extend_from_slice(delim);
                expect.push(frame);
            }
            for _ in 0..20 {
                let mut f = Framer::new(Framing::Delimiter(delim.to_vec()), 64);
                let mut out = Vec::new();
                let mut rest = &stream[..];
                while !rest.is_empty() {
                    let n = rng.usize(1..=rest.len().min(17));
                    f.push(&rest[..n], &mut out).unwrap();
                    rest = &rest[n..];
                }
                assert_eq!(out, expect);
            }
        }
    }
}
