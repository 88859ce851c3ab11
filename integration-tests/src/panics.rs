//! Counting panics on chorus's own threads. A panicking session task does not
//! take chorus down (tokio catches it), so a test cannot see it from outside;
//! this hook can. [`start_chorus_with`](crate::start_chorus_with) installs it.

use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Install (once per test binary) a panic hook that counts panics on threads
/// named `chorus*` (the in-process chorus's runtime), then runs the previous hook.
pub fn watch_chorus_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name().is_some_and(|n| n.starts_with("chorus")) {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info)
        }));
    });
}

/// Panics on chorus's threads so far, in this test binary.
pub fn chorus_panics() -> usize {
    PANICS.load(Ordering::SeqCst)
}

/// Fail the test if chorus panicked anywhere in this test binary so far.
pub fn assert_no_chorus_panics() {
    let n = chorus_panics();
    assert_eq!(n, 0, "chorus panicked {n} time(s) (see the panic messages above)");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_panics_on_chorus_threads_only() {
        watch_chorus_panics();
        let before = chorus_panics();
        let other = std::thread::Builder::new().name("not-chorus".into()).spawn(|| panic!("expected"));
        assert!(other.unwrap().join().is_err());
        assert_eq!(chorus_panics(), before);
        let ours = std::thread::Builder::new().name("chorus-worker".into()).spawn(|| panic!("expected"));
        assert!(ours.unwrap().join().is_err());
        assert_eq!(chorus_panics(), before + 1);
    }
}
