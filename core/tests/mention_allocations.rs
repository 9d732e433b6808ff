//! The mention-spam check reads a message without keeping it: a message that mentions
//! nobody costs no allocation at all, and one with `m.mentions` only the transient list
//! of its ids (counted with a global allocator in this test binary of its own).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|a| a.set(a.get() + 1));
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made on this thread while `f` runs.
fn allocations<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let before = ALLOCATIONS.with(Cell::get);
    let out = f();
    (ALLOCATIONS.with(Cell::get) - before, out)
}

#[test]
fn a_message_that_mentions_nobody_is_checked_without_allocating() {
    let plain = r#"{"type":"m.room.message","sender":"@a:x","event_id":"$e","origin_server_ts":1,
        "content":{"msgtype":"m.text","body":"just chatting, nothing to see","m.mentions":{}}}"#;
    let (n, m) = allocations(|| hush_core::mentions::in_event(plain));
    assert_eq!(m, Some(hush_core::mentions::Mentioned::default()));
    assert_eq!(n, 0, "no allocation for an ordinary message");
    let old_client = r#"{"type":"m.room.message","content":{"msgtype":"m.text","body":"hello there"}}"#;
    assert_eq!(allocations(|| hush_core::mentions::in_event(old_client)).0, 0);
    let reaction = r#"{"type":"m.reaction","content":{"m.relates_to":{"key":"x"}}}"#;
    assert_eq!(allocations(|| hush_core::mentions::in_event(reaction)).0, 0);
}

#[test]
fn a_message_with_mentions_allocates_only_the_lists_it_counts() {
    let ids: Vec<String> = (0..12).map(|i| format!("\"@u{i}:x\"")).collect();
    let spam = format!(
        r#"{{"type":"m.room.message","content":{{"body":"hi","m.mentions":{{"user_ids":[{}]}}}}}}"#,
        ids.join(",")
    );
    let (n, m) = allocations(|| hush_core::mentions::in_event(&spam));
    assert_eq!(m.map(|m| m.users), Some(12));
    // The parsed id list (grown while parsing) and the list deduplicated: a handful,
    // nothing per id, all freed before returning.
    eprintln!("12 mentioned users: {n} allocations");
    assert!(n <= 8, "{n} allocations");
}
