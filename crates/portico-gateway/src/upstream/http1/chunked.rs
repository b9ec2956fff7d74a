//! The chunked transfer coding (RFC 9112 §7.1), read strictly: hex sizes without signs or
//! spaces inside, lines ended by CRLF, bounded extensions and trailers (which are read and
//! dropped).

use super::head::Malformed;
use bytes::{Bytes, BytesMut};

/// At most this many bytes of extensions per chunk and of trailers per body.
const MAX_EXTRA_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size.
    Size {
        digits: u8,
    },
    /// After the size: optional whitespace, then `;` extensions, up to CR.
    Extension,
    SizeLf,
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the empty line that ends the body).
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

/// Decodes a chunked body from the bytes that arrive on the connection.
#[derive(Debug)]
pub(crate) struct Decoder {
    state: State,
    size: u64,
    extra: usize,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder { state: State::Size { digits: 0 }, size: 0, extra: 0 }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The next piece of body data in `buf`, taken from it without a copy. `Ok(None)` means
    /// that `buf` holds no more data: more bytes are needed, or the body is done.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Malformed> {
        self.skip_framing(buf)?;
        match self.state {
            State::Data(left) if !buf.is_empty() => {
                let take = left.min(buf.len() as u64);
                let data = buf.split_to(take as usize).freeze();
                self.state = if take == left { State::DataCr } else { State::Data(left - take) };
                // The framing after the data may be here already: reading it now lets the
                // body tell that it has ended together with its last piece.
                self.skip_framing(buf)?;
                Ok(Some(data))
            }
            _ => Ok(None),
        }
    }

    /// Reads framing bytes from `buf` until data, the end of `buf`, or the end of the body.
    fn skip_framing(&mut self, buf: &mut BytesMut) -> Result<(), Malformed> {
        let mut used = 0;
        for &byte in buf.iter() {
            if matches!(self.state, State::Data(_) | State::Done) {
                break;
            }
            used += 1;
            self.state = match (self.state, byte) {
                (State::Size { digits }, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                    // 15 hex digits are more than any body: refuse before the size overflows.
                    if digits == 15 {
                        return Err(Malformed::Chunk);
                    }
                    self.size = self.size * 16 + u64::from((byte as char).to_digit(16).unwrap_or(0));
                    State::Size { digits: digits + 1 }
                }
                (State::Size { digits: 1.. }, b';' | b' ' | b'\t') => State::Extension,
                (State::Size { digits: 1.. }, b'\r') => State::SizeLf,
                (State::Extension, b'\r') => State::SizeLf,
                (State::Extension, b'\n') => return Err(Malformed::Chunk),
                (State::Extension, _) => {
                    self.count_extra()?;
                    State::Extension
                }
                (State::SizeLf, b'\n') if self.size == 0 => State::TrailerStart,
                (State::SizeLf, b'\n') => State::Data(std::mem::take(&mut self.size)),
                (State::DataCr, b'\r') => State::DataLf,
                (State::DataLf, b'\n') => State::Size { digits: 0 },
                (State::TrailerStart, b'\r') => State::EndLf,
                (State::Trailer, b'\r') => State::TrailerLf,
                (State::TrailerStart | State::Trailer, b'\n') => return Err(Malformed::Chunk),
                (State::TrailerStart | State::Trailer, _) => {
                    self.count_extra()?;
                    State::Trailer
                }
                (State::TrailerLf, b'\n') => State::TrailerStart,
                (State::EndLf, b'\n') => State::Done,
                _ => return Err(Malformed::Chunk),
            };
        }
        let _ = buf.split_to(used);
        Ok(())
    }

    fn count_extra(&mut self) -> Result<(), Malformed> {
        self.extra += 1;
        if self.extra > MAX_EXTRA_BYTES {
            return Err(Malformed::Chunk);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `wire` fed in pieces of `step` bytes; returns the body and whether it ended.
    fn decode(wire: &[u8], step: usize) -> Result<(Vec<u8>, bool), Malformed> {
        let (mut decoder, mut buf, mut body) = (Decoder::new(), BytesMut::new(), Vec::new());
        for piece in wire.chunks(step) {
            buf.extend_from_slice(piece);
            while let Some(data) = decoder.next(&mut buf)? {
                body.extend_from_slice(&data);
            }
        }
        Ok((body, decoder.is_done()))
    }

    #[test]
    fn bodies_decode_whole_or_fed_a_byte_at_a_time() {
        let wire = b"5\r\nhello\r\n7;name=value\r\n, world\r\nA\r\n0123456789\r\n0\r\n\r\n";
        for step in [1, 2, 3, 7, wire.len()] {
            assert_eq!(decode(wire, step), Ok((b"hello, world0123456789".to_vec(), true)), "step {step}");
        }
    }

    #[test]
    fn trailers_are_read_and_dropped() {
        assert_eq!(decode(b"3\r\nabc\r\n0\r\nx-sum: 1\r\nx-more: 2\r\n\r\n", 4), Ok((b"abc".to_vec(), true)));
    }

    #[test]
    fn an_unfinished_body_is_not_done() {
        assert_eq!(decode(b"3\r\nabc\r\n", 100), Ok((b"abc".to_vec(), false)));
        assert_eq!(decode(b"3\r\nabc\r\n0\r\n", 100), Ok((b"abc".to_vec(), false)));
    }

    #[test]
    fn malformed_framing_is_refused() {
        for wire in [
            &b"x\r\n"[..],                      // not hex
            b"\r\n",                            // no size
            b"-1\r\n",                          // a sign
            b"3\nabc\r\n",                      // bare LF after the size
            b"3\r\nabcd\r\n",                   // more data than the size
            b"3\r\nabc\n0\r\n\r\n",             // bare LF after the data
            b"1000000000000000\r\n",            // 16 hex digits: would overflow
            b"3\r\nabc\r\n0\r\nx-sum: 1\n\r\n", // bare LF in a trailer
        ] {
            assert_eq!(decode(wire, 1).map(|_| ()), Err(Malformed::Chunk), "{:?}", String::from_utf8_lossy(wire));
        }
    }

    #[test]
    fn endless_extensions_are_refused() {
        let mut wire = b"1;".to_vec();
        wire.extend(std::iter::repeat_n(b'a', MAX_EXTRA_BYTES + 1));
        assert_eq!(decode(&wire, 4096).map(|_| ()), Err(Malformed::Chunk));
    }
}
