//! Turning a panic of sled into an error, without the panic report.
//!
//! sled 0.34.7 panics in the calling thread on some corrupt files instead of returning an
//! error: for example `tried to serialize Uninitialized` from
//! `pagecache::snapshot::read_snapshot_or_default` when a segment header was overwritten.
//! [`catch_panic`] runs a closure under `catch_unwind` and returns the panic's message.
//!
//! The panic hook is process-wide, so it is not swapped per call (a panic on another thread
//! meanwhile would lose its report, and two overlapping calls could leave the quiet hook
//! installed for good). Instead the first call installs, once, a hook that stays silent on
//! a thread while that thread runs inside [`catch_panic`], and hands every other panic to
//! the hook that was installed before it (by default, the one printing the message and
//! backtrace).

use std::any::Any;
use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// Set while this thread runs inside [`catch_panic`].
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

static INSTALL: Once = Once::new();

/// Runs `f`; a panic inside it becomes `Err` with the panic's message (on one line) and is
/// not reported on stderr. Panics on other threads are reported as before.
///
/// Unwind safety: the callers only hand in code whose partial results are dropped when it
/// panics (an open that failed is discarded whole), so no broken state is observed after.
pub fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    INSTALL.call_once(|| {
        let report = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                report(info);
            }
        }));
    });
    let outer = QUIET.with(|q| q.replace(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(outer));
    result.map_err(|payload| message(payload.as_ref()))
}

fn message(payload: &(dyn Any + Send)) -> String {
    let text = match (
        payload.downcast_ref::<&str>(),
        payload.downcast_ref::<String>(),
    ) {
        (Some(s), _) => s,
        (None, Some(s)) => s.as_str(),
        (None, None) => "a panic without a message",
    };
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message_on_one_line() {
        assert_eq!(catch_panic(|| 7), Ok(7));
        let e = catch_panic(|| -> u8 { panic!("tried to\nserialize {}", "Uninitialized") });
        assert_eq!(e, Err("tried to serialize Uninitialized".to_string()));
        let e = catch_panic(|| std::panic::panic_any(42u8));
        assert_eq!(e, Err("a panic without a message".to_string()));
    }

    #[test]
    fn quiet_only_inside_and_nested_calls_restore_it() {
        assert!(!QUIET.with(Cell::get));
        let inner = catch_panic(|| {
            let nested = catch_panic(|| QUIET.with(Cell::get));
            (nested, QUIET.with(Cell::get))
        });
        assert_eq!(inner, Ok((Ok(true), true)));
        assert!(!QUIET.with(Cell::get));
        let other_thread = std::thread::spawn(|| QUIET.with(Cell::get)).join();
        assert!(!other_thread.unwrap());
    }
}
