//! Stop requests for long commands (train, meta-train): the first SIGINT
//! (Ctrl-C) or SIGTERM (what schedulers and `kill` send) lets the run
//! finish its iteration and save; a second exits at once. A run stopped
//! this way exits with 128 + the signal's number (130 for SIGINT, 143 for
//! SIGTERM), so a script can tell it from a finished run.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;

/// The flag a trainer polls, and which signal set it.
pub struct StopRequest {
    flag: Arc<AtomicBool>,
    signal: Arc<AtomicI32>,
}

impl StopRequest {
    /// Installs the handlers; `message` is printed at the first signal
    /// (e.g. "stopping after this iteration").
    pub fn install(message: &'static str) -> StopRequest {
        let flag = Arc::new(AtomicBool::new(false));
        let signal = Arc::new(AtomicI32::new(0));
        install_handlers(message, flag.clone(), signal.clone());
        StopRequest { flag, signal }
    }

    /// The flag to hand to the trainer.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }

    /// The exit code of a run that stopped early: 128 + the signal that
    /// stopped it (130 when none is known).
    pub fn exit_code(&self) -> ExitCode {
        let signal = self.signal.load(Ordering::SeqCst);
        let code = if signal > 0 { 128 + signal } else { 130 };
        ExitCode::from(code.clamp(1, 255) as u8)
    }
}

fn announce(message: &str, again: &str) {
    eprintln!("\n{message} ({again} again to quit at once)...");
}

#[cfg(unix)]
fn install_handlers(message: &'static str, flag: Arc<AtomicBool>, signal: Arc<AtomicI32>) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::iterator::Signals;
    // Without handlers the default action (end the process) still applies,
    // so a failure here only loses the graceful stop.
    let Ok(mut signals) = Signals::new([SIGINT, SIGTERM]) else {
        eprintln!("warning: could not install the SIGINT/SIGTERM handlers");
        return;
    };
    std::thread::spawn(move || {
        for sig in signals.forever() {
            if flag.swap(true, Ordering::SeqCst) {
                std::process::exit(128 + sig);
            }
            signal.store(sig, Ordering::SeqCst);
            announce(message, if sig == SIGTERM { "SIGTERM" } else { "Ctrl-C" });
        }
    });
}

#[cfg(not(unix))]
fn install_handlers(message: &'static str, flag: Arc<AtomicBool>, signal: Arc<AtomicI32>) {
    const SIGINT: i32 = 2;
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(128 + SIGINT);
        }
        signal.store(SIGINT, Ordering::SeqCst);
        announce(message, "Ctrl-C");
    });
}
