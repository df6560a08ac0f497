//! Chunk: large documents (/metrics, /status) written in pieces of about [`CHUNK_BYTES`].
//!
//! With 10,000 pairs the exposition is tens of megabytes, so a renderer writes into a
//! [`ChunkWriter`] and each full chunk goes to a consumer at once (an HTTP body, or a `String`
//! in tests). The renderer decides where a chunk may end: it fills the buffer while it holds
//! its locks, releases them, and only then lets the writer send. What the consumer does with
//! a chunk, and how long it may take, is left to the caller.

use bytes::Bytes;
use thiserror::Error;

/// The size at which a chunk is sent. A chunk can be larger by the one item (a pair's series
/// of one family, or one pair's status entry) that crossed this size.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// The consumer of a document stopped taking chunks (its client went away or stopped
/// reading), so the rest of the document is not rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("the reader of the document stopped taking chunks")]
pub struct Stopped;

/// A buffer that is sent to a consumer in chunks of about [`CHUNK_BYTES`].
pub struct ChunkWriter<F> {
    buffer: Vec<u8>,
    send: F,
}

impl<F> ChunkWriter<F>
where
    F: FnMut(Bytes) -> Result<(), Stopped>,
{
    /// Creates a writer that hands each chunk to `send`.
    pub fn new(send: F) -> Self {
        ChunkWriter {
            buffer: Vec::with_capacity(CHUNK_BYTES),
            send,
        }
    }

    /// Returns the unsent buffer, to write into.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buffer
    }

    /// Returns true when the buffer has reached [`CHUNK_BYTES`] and should be sent.
    pub fn is_full(&self) -> bool {
        self.buffer.len() >= CHUNK_BYTES
    }

    /// Sends the buffer if it is full.
    ///
    /// # Errors
    ///
    /// Returns [`Stopped`] when the consumer takes no more chunks.
    pub fn send_if_full(&mut self) -> Result<(), Stopped> {
        if self.is_full() {
            let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK_BYTES));
            (self.send)(Bytes::from(chunk))?;
        }
        Ok(())
    }

    /// Sends what is left in the buffer, if anything.
    ///
    /// # Errors
    ///
    /// Returns [`Stopped`] when the consumer takes no more chunks.
    pub fn finish(mut self) -> Result<(), Stopped> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        (self.send)(Bytes::from(self.buffer))
    }
}

/// Runs `write` with a writer whose chunks are appended to one `String`, for tests and other
/// callers that want the whole document.
///
/// # Panics
///
/// Panics if the document is not UTF-8; both renderers write only UTF-8.
pub fn collect_string<W>(write: W) -> String
where
    W: FnOnce(&mut dyn FnMut(Bytes) -> Result<(), Stopped>) -> Result<(), Stopped>,
{
    let mut document = Vec::new();
    let mut append = |chunk: Bytes| {
        document.extend_from_slice(&chunk);
        Ok(())
    };
    write(&mut append).expect("appending to a Vec never stops");
    String::from_utf8(document).expect("documents are written as UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_if_full_sends_only_full_buffers() {
        let mut sent: Vec<usize> = Vec::new();
        let mut writer = ChunkWriter::new(|chunk: Bytes| {
            sent.push(chunk.len());
            Ok(())
        });
        writer.buffer().extend_from_slice(&[b'a'; CHUNK_BYTES - 1]);
        writer.send_if_full().unwrap();
        writer.buffer().extend_from_slice(b"bc");
        writer.send_if_full().unwrap();
        writer.buffer().extend_from_slice(b"tail");
        writer.send_if_full().unwrap();
        writer.finish().unwrap();
        assert_eq!(sent, [CHUNK_BYTES + 1, 4]);
    }

    #[test]
    fn finish_empty_buffer_sends_nothing() {
        let mut calls = 0;
        let writer = ChunkWriter::new(|_chunk: Bytes| {
            calls += 1;
            Ok(())
        });
        writer.finish().unwrap();
        assert_eq!(calls, 0);
    }

    #[test]
    fn send_if_full_passes_on_stopped() {
        let mut writer = ChunkWriter::new(|_chunk: Bytes| Err(Stopped));
        writer.buffer().extend_from_slice(&[b'a'; CHUNK_BYTES]);
        assert_eq!(writer.send_if_full(), Err(Stopped));
    }
}
