//! `netqos top [IFACE]`: the live per-class view, redrawn every second. On a terminal the
//! keyboard is read unbuffered (`q`, Ctrl-C or Ctrl-D quit) and the screen is redrawn in
//! place, with colour unless `NO_COLOR`/`--color never`; otherwise frames are printed one
//! after another (`--count` bounds them) and `q` on standard input quits.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use super::live::state_dir;
use super::{Exit, Ui};
use netqos::agent::counters::Counters;
use netqos::agent::metrics::{self, ClassInfo};
use netqos::agent::view;

/// Restores the terminal's mode when dropped.
struct Raw {
    saved: Option<rustix::termios::Termios>,
}

impl Raw {
    fn enter() -> Raw {
        let stdin = std::io::stdin();
        let fd = stdin.as_fd();
        let saved = rustix::termios::tcgetattr(fd).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            raw.make_raw();
            // Keep output processing: `\n` still returns the carriage.
            raw.output_modes = t.output_modes;
            let _ = rustix::termios::tcsetattr(fd, rustix::termios::OptionalActions::Now, &raw);
        }
        Raw { saved }
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin().as_fd(),
                rustix::termios::OptionalActions::Now,
                t,
            );
        }
    }
}

/// Waits up to `timeout` for a key; true when it asks to quit (or input ended).
fn quit_requested(timeout: Duration) -> bool {
    let stdin = std::io::stdin();
    let mut fds = [rustix::event::PollFd::new(
        &stdin,
        rustix::event::PollFlags::IN,
    )];
    let ts = rustix::event::Timespec {
        tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    match rustix::event::poll(&mut fds, Some(&ts)) {
        Ok(0) | Err(_) => false,
        Ok(_) => {
            let mut b = [0u8; 64];
            match std::io::stdin().lock().read(&mut b) {
                // End of input quits only on a terminal (Ctrl-D); a closed pipe just
                // means nobody types.
                Ok(0) => std::io::stdin().is_terminal(),
                Ok(n) => b[..n].iter().any(|&c| matches!(c, b'q' | b'Q' | 3 | 4)),
                Err(_) => false,
            }
        }
    }
}

/// The classes to show: the saved names of the applied policy, else the applied target.
fn classes(dir: &netqos::apply::state_dir::StateDir) -> Result<Vec<ClassInfo>, String> {
    if let Some(c) = super::agent::load_classes(dir) {
        return Ok(c);
    }
    match dir.applied() {
        Ok(Some(t)) => Ok(metrics::classes_of_target(&t)),
        Ok(None) => Err(format!(
            "no policy has been applied (state in {})",
            dir.path.display()
        )),
        Err(e) => Err(e.to_string()),
    }
}

pub fn run(iface: Option<&str>, count: Option<u64>, state: Option<&Path>, ui: Ui) -> Exit {
    let dir = match state_dir(state) {
        Ok(d) => d,
        Err(e) => return e,
    };
    let mut all = match classes(&dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("netqos: {e}");
            return Exit::Io;
        }
    };
    if let Some(i) = iface {
        all.retain(|c| c.interface == i || c.device == i);
        if all.is_empty() {
            eprintln!("netqos: the applied policy does not shape {i}");
            return Exit::Io;
        }
    }
    let mut devices: Vec<String> = all.iter().map(|c| c.device.clone()).collect();
    devices.sort();
    devices.dedup();
    let mut reader = match Counters::open() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("netqos: {e}");
            return Exit::Io;
        }
    };
    let tty = std::io::stdout().is_terminal();
    let _raw = std::io::stdin().is_terminal().then(Raw::enter);
    let colour = tty && ui.color;
    let mut before = reader.read(&devices).unwrap_or_default();
    let mut at = Instant::now();
    let mut frames = 0u64;
    if tty {
        out!("\x1b[?25l");
    }
    let exit = loop {
        if quit_requested(Duration::from_secs(1)) {
            break Exit::Ok;
        }
        let now = match reader.read(&devices) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("netqos: {e}");
                break Exit::Io;
            }
        };
        let dt = at.elapsed();
        at = Instant::now();
        let title = format!(
            "netqos top: {} (every 1 s{})",
            devices.join(", "),
            if tty { "; q quits" } else { "" }
        );
        let text = view::frame(&title, &all, &before, &now, dt, colour);
        if tty {
            // Home, draw, clear what the previous frame left below.
            out!("\x1b[H{}\x1b[J", text.replace('\n', "\x1b[K\n"));
        } else {
            outln!("{text}");
        }
        let _ = std::io::stdout().flush();
        before = now;
        frames += 1;
        if count.is_some_and(|c| frames >= c) {
            break Exit::Ok;
        }
    };
    if tty {
        out!("\x1b[?25h\n");
    }
    exit
}
