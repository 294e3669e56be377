//! A leaf module (it imports nothing from the crate, so any layer may use
//! it): a blocking [`Read`] over chunks of bytes that an async task sends
//! through a bounded channel. It joins an async producer (a request body, a
//! registry download) to blocking consumers (tar extraction, the blob
//! store) with only a few chunks in flight, so memory stays bounded however
//! large the stream is.

use std::io::{self, Read};

use bytes::Bytes;
use tokio::sync::mpsc;

/// Reads what the sender sends, in order; an `Err` chunk is returned as the
/// read error, and the end of the stream is the sender's drop.
#[derive(Debug)]
pub struct ChunkReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl ChunkReader {
    /// A reader over what `rx` receives.
    pub fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> ChunkReader {
        ChunkReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChunkReader {
    /// Blocks the calling thread: call it off the async workers (on
    /// `spawn_blocking` or a thread of its own).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        let chunk = self.current.split_to(n);
        buf.get_mut(..n)
            .expect("n is at most the buffer length")
            .copy_from_slice(&chunk);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_chunks_in_order_across_short_buffers_and_then_the_end() {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(Bytes::from_static(b"hello "))).unwrap();
        tx.try_send(Ok(Bytes::from_static(b"world"))).unwrap();
        drop(tx);
        let mut reader = ChunkReader::new(rx);
        let mut small = [0u8; 4];
        assert_eq!(reader.read(&mut small).unwrap(), 4);
        assert_eq!(&small, b"hell");
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"o world");
    }

    #[test]
    fn an_error_chunk_is_the_read_error() {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(Bytes::from_static(b"ab"))).unwrap();
        tx.try_send(Err(io::Error::other("broken"))).unwrap();
        let mut reader = ChunkReader::new(rx);
        let mut all = Vec::new();
        let err = reader.read_to_end(&mut all).unwrap_err();
        assert_eq!(err.to_string(), "broken");
        assert_eq!(all, b"ab");
    }
}
