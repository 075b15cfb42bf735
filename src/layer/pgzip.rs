//! Block-parallel gzip whose bytes do not depend on the number of threads.
//!
//! Hand-written because no crate gives this guarantee: the uncompressed
//! stream is cut into fixed 512 KiB blocks; each is deflated on its own,
//! primed with the previous block's last 32 KiB as a preset dictionary (so
//! the ratio stays close to a single stream), and ended with a sync flush so
//! the pieces concatenate into one valid deflate stream (pigz's scheme). The
//! output is a function of the data, the level and the block size only:
//! `-j1` and `-j8` write the same bytes.
//!
//! Threads come from the caller's rayon pool; this module spawns none.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, sync_channel};

use flate2::{Compress, FlushCompress, Status};

/// Uncompressed bytes per block.
pub(crate) const BLOCK: usize = 512 * 1024;
const DICT: usize = 32 * 1024;

/// gzip header: no name, no mtime, unknown OS (as Go and flate2 write it).
const HEADER: [u8; 10] = [0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff];

fn deflate_block(level: u32, dict: &[u8], data: &[u8], last: bool) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(flate2::Compression::new(level), false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    loop {
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let done_input = c.total_in() as usize == data.len();
        match status {
            Status::StreamEnd => break,
            // A sync flush is complete once all input is in and there was
            // room left over for more output.
            Status::Ok | Status::BufError if !last && done_input && out.len() < out.capacity() => {
                break;
            }
            _ => out.reserve(out.capacity().max(64 * 1024)),
        }
    }
    Ok(out)
}

/// A gzip writer that compresses blocks on `pool` (or inline without one).
pub(crate) struct ParGzip<'p, W: Write> {
    out: W,
    level: u32,
    pool: Option<&'p rayon::ThreadPool>,
    buf: Vec<u8>,
    dict: Vec<u8>,
    crc: crc32fast::Hasher,
    total: u64,
    pending: VecDeque<Receiver<io::Result<Vec<u8>>>>,
}

impl<'p, W: Write> ParGzip<'p, W> {
    pub(crate) fn new(
        mut out: W,
        level: u32,
        pool: Option<&'p rayon::ThreadPool>,
    ) -> io::Result<Self> {
        out.write_all(&HEADER)?;
        Ok(ParGzip {
            out,
            level,
            pool,
            buf: Vec::with_capacity(BLOCK),
            dict: Vec::new(),
            crc: crc32fast::Hasher::new(),
            total: 0,
            pending: VecDeque::new(),
        })
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(BLOCK));
        let dict = std::mem::take(&mut self.dict);
        self.dict = data[data.len().saturating_sub(DICT)..].to_vec();
        let level = self.level;
        match self.pool.filter(|p| p.current_num_threads() > 1) {
            None => {
                let piece = deflate_block(level, &dict, &data, last)?;
                self.out.write_all(&piece)
            }
            Some(pool) => {
                let (tx, rx) = sync_channel(1);
                pool.spawn(move || {
                    let _ = tx.send(deflate_block(level, &dict, &data, last));
                });
                self.pending.push_back(rx);
                // Bounded memory: a few blocks in flight per thread.
                while self.pending.len() > 2 * pool.current_num_threads() {
                    self.write_front()?;
                }
                Ok(())
            }
        }
    }

    fn write_front(&mut self) -> io::Result<()> {
        let Some(rx) = self.pending.pop_front() else {
            return Ok(());
        };
        let vanished = || io::Error::other("compression worker vanished");
        // The writer may itself run on a pool thread (a build step); waiting
        // there must help the pool rather than block it, or a pool whose
        // threads all wait for blocks would never compress them.
        let piece = loop {
            match rx.try_recv() {
                Ok(r) => break r?,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return Err(vanished()),
                Err(std::sync::mpsc::TryRecvError::Empty) => match rayon::yield_now() {
                    Some(rayon::Yield::Executed) => {}
                    _ => match rx.recv_timeout(std::time::Duration::from_millis(1)) {
                        Ok(r) => break r?,
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        Err(_) => return Err(vanished()),
                    },
                },
            }
        };
        self.out.write_all(&piece)
    }

    /// Ends the stream (final block, CRC-32, size) and returns the sink.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        while !self.pending.is_empty() {
            self.write_front()?;
        }
        let crc = self.crc.clone().finalize();
        self.out.write_all(&crc.to_le_bytes())?;
        self.out.write_all(&(self.total as u32).to_le_bytes())?;
        Ok(self.out)
    }
}

impl<W: Write> Write for ParGzip<'_, W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = BLOCK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        self.crc.update(&data[..n]);
        self.total += n as u64;
        if self.buf.len() == BLOCK {
            self.submit(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn data(n: usize) -> Vec<u8> {
        let mut x = 0x1234_5678_u64;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Half text-like, half noise, so both paths are exercised.
                if (i / 4096) % 2 == 0 {
                    b"abcdefgh"[(x % 8) as usize]
                } else {
                    x as u8
                }
            })
            .collect()
    }

    fn gz(input: &[u8], threads: usize) -> Vec<u8> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut w = ParGzip::new(Vec::new(), 6, Some(&pool)).unwrap();
        for chunk in input.chunks(7777) {
            w.write_all(chunk).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn same_bytes_for_any_thread_count_and_valid_gzip() {
        for n in [0, 1, BLOCK - 1, BLOCK, 3 * BLOCK + 17] {
            let input = data(n);
            let one = gz(&input, 1);
            assert_eq!(one, gz(&input, 2), "n={n}");
            assert_eq!(one, gz(&input, 5), "n={n}");
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&one[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, input, "n={n}");
        }
    }
}
