//! The stream protocol between a shim and its clients (the CLI's `run`,
//! `attach` and `start -a`, later the daemon): length-prefixed frames over a
//! unix stream socket. A frame is one kind byte, a 32-bit big-endian length and
//! the payload, like Docker's multiplexed attach stream with a few control
//! frames added.

use std::io::{self, Read, Write};

/// The kinds of frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Client → shim: bytes for the container's stdin.
    Stdin = 0,
    /// Shim → client: bytes the container wrote to stdout (or the terminal).
    Stdout = 1,
    /// Shim → client: bytes the container wrote to stderr.
    Stderr = 2,
    /// Shim → client: the container exited; payload is the exit code (i32 BE)
    /// and one byte, 1 when the OOM killer ended it.
    Exit = 3,
    /// Client → shim: close the container's stdin.
    CloseStdin = 4,
    /// Client → shim: the terminal's size, rows and columns (u16 BE each).
    Resize = 5,
    /// Client → shim: send this signal (i32 BE) to the container's pid 1.
    Signal = 6,
}

impl Kind {
    /// The kind for a byte.
    pub fn from_byte(b: u8) -> Option<Kind> {
        Some(match b {
            0 => Kind::Stdin,
            1 => Kind::Stdout,
            2 => Kind::Stderr,
            3 => Kind::Exit,
            4 => Kind::CloseStdin,
            5 => Kind::Resize,
            6 => Kind::Signal,
            _ => return None,
        })
    }
}

/// The largest payload accepted; larger frames are a protocol error.
pub const MAX_FRAME: usize = 1 << 20;

/// Encodes a frame into `out`.
pub fn encode(out: &mut Vec<u8>, kind: Kind, payload: &[u8]) {
    out.push(kind as u8);
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, kind: Kind, payload: &[u8]) -> io::Result<()> {
    let mut buf = Vec::with_capacity(5 + payload.len());
    encode(&mut buf, kind, payload);
    w.write_all(&buf)
}

/// Reads one frame; `None` at a clean end of stream.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<(Kind, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let kind = Kind::from_byte(head[0]).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown frame kind {}", head[0]),
        )
    })?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is too large"),
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some((kind, payload)))
}

/// Splits complete frames off the front of `buf`, leaving a partial one.
pub fn split_frames(buf: &mut Vec<u8>) -> io::Result<Vec<(Kind, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut at = 0;
    while buf.len() - at >= 5 {
        let kind = Kind::from_byte(buf[at]).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unknown frame kind {}", buf[at]),
            )
        })?;
        let len = u32::from_be_bytes([buf[at + 1], buf[at + 2], buf[at + 3], buf[at + 4]]) as usize;
        if len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "frame too large",
            ));
        }
        if buf.len() - at - 5 < len {
            break;
        }
        out.push((kind, buf[at + 5..at + 5 + len].to_vec()));
        at += 5 + len;
    }
    buf.drain(..at);
    Ok(out)
}

/// The payload of an [`Kind::Exit`] frame.
pub fn exit_payload(code: i32, oom: bool) -> [u8; 5] {
    let c = code.to_be_bytes();
    [c[0], c[1], c[2], c[3], u8::from(oom)]
}

/// Reads an [`Kind::Exit`] payload.
pub fn parse_exit(payload: &[u8]) -> Option<(i32, bool)> {
    let code = i32::from_be_bytes(payload.get(..4)?.try_into().ok()?);
    Some((code, payload.get(4).copied().unwrap_or(0) == 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_partial_frames_wait() {
        let mut buf = Vec::new();
        encode(&mut buf, Kind::Stdout, b"hello");
        encode(&mut buf, Kind::Exit, &exit_payload(3, true));
        let mut partial = buf.clone();
        partial.extend_from_slice(&[1, 0, 0, 0, 9, b'x']);
        let frames = split_frames(&mut partial).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0], (Kind::Stdout, b"hello".to_vec()));
        assert_eq!(parse_exit(&frames[1].1), Some((3, true)));
        assert_eq!(partial, vec![1, 0, 0, 0, 9, b'x']);
        let mut r = io::Cursor::new(buf);
        assert_eq!(read_frame(&mut r).unwrap().unwrap().0, Kind::Stdout);
        assert_eq!(read_frame(&mut r).unwrap().unwrap().0, Kind::Exit);
        assert!(read_frame(&mut r).unwrap().is_none());
    }

    #[test]
    fn unknown_kinds_and_huge_frames_are_refused() {
        let mut buf = vec![9, 0, 0, 0, 0];
        assert!(split_frames(&mut buf).is_err());
        let mut buf = vec![1, 0xff, 0xff, 0xff, 0xff];
        assert!(split_frames(&mut buf).is_err());
    }
}
