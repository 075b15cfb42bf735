//! The sandbox init's side of `imgbuild run -t`: the command runs on a
//! pseudo-terminal of the sandbox's own devpts (see `linux::open_pty`), and
//! the init relays bytes between that terminal's master and its own stdin
//! and stdout, which are the user's terminal (put in raw mode by `imgbuild
//! run`, so Ctrl-C and Ctrl-Z reach the command's line discipline as bytes
//! and become its signals there, as with `docker run -it`). The init also
//! follows the outer window size: it looks at it whenever it wakes, at
//! least every 100 ms, which needs no signal handler in a PID 1.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, poll};

/// The running relay.
pub(super) struct Relay {
    /// Says when the master's output has been copied out to the end.
    done: mpsc::Receiver<()>,
    /// When output last moved (milliseconds since `start`).
    moved: Arc<AtomicU64>,
    start: Instant,
}

impl Relay {
    /// After the command exited: copies out what it still wrote, until the
    /// terminal is closed or nothing has moved for half a second (a
    /// background process may hold the terminal open for ever, as after
    /// `docker run -t`'s command exits).
    pub(super) fn finish(self) {
        loop {
            match self.done.recv_timeout(Duration::from_millis(100)) {
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
                    if now.saturating_sub(self.moved.load(Ordering::Relaxed)) > 500 {
                        return;
                    }
                }
                _ => return,
            }
        }
    }
}

/// Starts relaying between `master` and our stdin/stdout; with `input`
/// false (no `-i`), only the output and the window size.
pub(super) fn relay(master: OwnedFd, input: bool) -> Relay {
    let (tx, done) = mpsc::channel();
    let start = Instant::now();
    let moved = Arc::new(AtomicU64::new(0));
    let relay = Relay {
        done,
        moved: Arc::clone(&moved),
        start,
    };
    let Ok(reader) = master.try_clone() else {
        return relay;
    };
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        // EIO once every holder of the slave has closed it. Written to fd 1
        // directly: no lock of std's stdout is held while the read waits.
        while let Ok(n) = rustix::io::read(&reader, &mut buf) {
            if n == 0 || write_all(rustix::stdio::stdout(), &buf[..n]).is_err() {
                break;
            }
            let now = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
            moved.store(now, Ordering::Relaxed);
        }
        let _ = tx.send(());
    });
    std::thread::spawn(move || input_loop(master, input));
    relay
}

fn write_all(fd: impl AsFd, mut buf: &[u8]) -> rustix::io::Result<()> {
    while !buf.is_empty() {
        match rustix::io::write(&fd, buf) {
            Ok(0) => return Err(rustix::io::Errno::PIPE),
            Ok(n) => buf = &buf[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn input_loop(master: OwnedFd, mut input: bool) {
    let stdin = rustix::stdio::stdin();
    let mut to = std::fs::File::from(master);
    let mut size = None;
    let mut buf = [0u8; 4096];
    loop {
        let now = super::linux::outer_winsize();
        if now.is_some() && now.map(key) != size.map(key) {
            if let Some(ws) = now {
                let _ = rustix::termios::tcsetwinsize(to.as_fd(), ws);
            }
            size = now;
        }
        if !input {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let mut fds = [PollFd::new(&stdin, PollFlags::IN)];
        let timeout = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => {}
            Err(_) => return,
        }
        match rustix::io::read(stdin, &mut buf) {
            // End of input: the terminal gets no more; the output goes on.
            Ok(0) => input = false,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => {}
            Err(_) => input = false,
        }
    }
}

fn key(w: rustix::termios::Winsize) -> (u16, u16) {
    (w.ws_row, w.ws_col)
}
