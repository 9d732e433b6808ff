//! What carrying out a planned action means, chosen once when the engine is built: `Enforce` (the ledger's write-ahead entry, then the room write or admin call) or `Simulate` (dry run: a "[dry run] would ..." report, nothing written) (owns no state of its own).
//!
//! The reconcile, the guard and the holds run identically either way; only this last
//! step differs, so there is no dry-run check anywhere in the execution path.

use std::sync::Arc;

use hush_core::reconcile::Action;
use hush_core::schedule::Clock;

use super::protections::LocalMute;
use super::Engine;
use crate::enforce::RoomWriter;

/// Carries out one planned action, in a room or on an account.
pub(super) trait Consequences<W: RoomWriter, C: Clock>: Send + Sync {
    fn room(&self, engine: &mut Engine<W, C>, room_id: &str, action: Action);
    fn account(&self, engine: &mut Engine<W, C>, user: &str, action: Action, now: u64);
    /// A protection's mute (or an undo's exception): a local rule written to disk and let into the index.
    fn local_mute(&self, engine: &mut Engine<W, C>, mute: LocalMute);
    /// A protection's mute published: its rule written to the policy list `list_id`.
    fn publish_mute(&self, engine: &mut Engine<W, C>, list_id: &str, mute: LocalMute);
}

/// Changes rooms and accounts, recording each change in the ledger first.
pub(super) struct Enforce;

/// Dry run: reports what would be done through the input's gathered reports; writes no
/// room, calls no admin API, leaves the ledger untouched.
pub(super) struct Simulate;

impl<W: RoomWriter, C: Clock> Consequences<W, C> for Enforce {
    fn room(&self, engine: &mut Engine<W, C>, room_id: &str, action: Action) {
        engine.metrics.planned(&action, false);
        engine.enforce(room_id, action);
    }
    fn account(&self, engine: &mut Engine<W, C>, user: &str, action: Action, now: u64) {
        engine.metrics.planned(&action, false);
        engine.enforce_account(user, action, now);
    }
    fn local_mute(&self, engine: &mut Engine<W, C>, mute: LocalMute) {
        engine.write_local_mute(mute);
    }
    fn publish_mute(&self, engine: &mut Engine<W, C>, list_id: &str, mute: LocalMute) {
        engine.write_published_mute(list_id, mute);
    }
}

impl<W: RoomWriter, C: Clock> Consequences<W, C> for Simulate {
    fn room(&self, engine: &mut Engine<W, C>, room_id: &str, action: Action) {
        engine.metrics.planned(&action, true);
        engine.simulate(room_id, action);
    }
    fn account(&self, engine: &mut Engine<W, C>, user: &str, action: Action, _now: u64) {
        engine.metrics.planned(&action, true);
        engine.simulate_account(user, action);
    }
    /// Neither the local rule nor the mute: the report says what would have been done.
    fn local_mute(&self, engine: &mut Engine<W, C>, mute: LocalMute) {
        let now = engine.clock.now_ms();
        engine
            .report_once(&format!("protection|{}|{now}", mute.user), &format!("[dry run] would have: {}", mute.notice));
    }
    /// Nothing is written to the list: the report says what would have been.
    fn publish_mute(&self, engine: &mut Engine<W, C>, _list_id: &str, mute: LocalMute) {
        self.local_mute(engine, mute);
    }
}

/// The consequences the configuration asks for (`dry_run`).
pub(super) fn chosen<W: RoomWriter, C: Clock>(dry_run: bool) -> Arc<dyn Consequences<W, C>> {
    if dry_run {
        Arc::new(Simulate)
    } else {
        Arc::new(Enforce)
    }
}
