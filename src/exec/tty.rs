//! The sandbox init's side of `imgbuild run -t`: the command runs on a
//! pseudo-terminal of the sandbox's own devpts (see `linux::open_pty`), and
//! the init relays bytes between that terminal's master and its own stdin
//! and stdout, which are the user's terminal (put in raw mode by `imgbuild
//! run`, so Ctrl-C and Ctrl-Z reach the command's line discipline as bytes
//! and become its signals there, as with `docker run -it`). The init also
//! follows the outer window size: it looks at it whenever it wakes, at
//! least every 100 ms, which needs no signal handler in a PID 1.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, poll};

/// The running relay.
pub(super) struct Relay {
    /// Says when the master's output has been copied out to the end.
    done: mpsc::Receiver<()>,
}

impl Relay {
    /// After the command exited: waits (briefly: an orphan may still hold
    /// the terminal open) for its last output to be copied out.
    pub(super) fn finish(self) {
        let _ = self.done.recv_timeout(Duration::from_millis(500));
        let _ = std::io::stdout().flush();
    }
}

/// Starts relaying between `master` and our stdin/stdout; with `input`
/// false (no `-i`), only the output and the window size.
pub(super) fn relay(master: OwnedFd, input: bool) -> Relay {
    let (tx, done) = mpsc::channel();
    let Ok(reader) = master.try_clone() else {
        return Relay { done };
    };
    std::thread::spawn(move || {
        let mut from = std::fs::File::from(reader);
        let mut out = std::io::stdout().lock();
        let mut buf = [0u8; 8192];
        // EIO once every holder of the slave has closed it.
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                break;
            }
        }
        let _ = tx.send(());
    });
    std::thread::spawn(move || input_loop(master, input));
    Relay { done }
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
