//! Nothing of its own: edits planned for a room while its power-levels write waits to be retried join that write (the write task asks through the inbox before each retry; `power_batch` holds the edits).

use std::future::Future;

use hush_core::power_levels::UserLevelEdit;
use hush_core::record::Scope;
use hush_core::schedule::Clock;
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use super::{Engine, Input};
use crate::enforce::RoomWriter;

/// What a room's power-levels write task calls before each retry: asks the engine for the
/// edits planned meanwhile (none if the engine is gone).
pub(super) fn asking(
    inbox: &mpsc::UnboundedSender<Input>,
    room_id: &str,
) -> impl Fn(Vec<String>) -> std::pin::Pin<Box<dyn Future<Output = Vec<UserLevelEdit>> + Send>> + Send + 'static {
    let (inbox, room_id) = (inbox.clone(), room_id.to_owned());
    move |have| {
        let (tx, rx) = oneshot::channel();
        let asked = inbox.send(Input::PowerLevelsJoin { room_id: room_id.clone(), have, reply: tx }).is_ok();
        Box::pin(async move {
            if !asked {
                return Vec::new();
            }
            rx.await.unwrap_or_default()
        })
    }
}

impl<W: RoomWriter, C: Clock> Engine<W, C> {
    /// The room's write in flight is about to be retried: the edits waiting for the room's
    /// next write join it. Their ledger entries were begun (and committed) by the inputs
    /// that planned them; the write's `PowerLevelsDone` names them with its own, so they
    /// are marked as those are.
    pub(super) fn power_levels_join(
        &mut self,
        room_id: &str,
        have: &[String],
        reply: oneshot::Sender<Vec<UserLevelEdit>>,
    ) {
        let edits = self.power.join(room_id, have);
        if edits.is_empty() {
            let _ = reply.send(edits);
            return;
        }
        let users: Vec<String> = edits.iter().map(|e| e.user_id.clone()).collect();
        match reply.send(edits) {
            Ok(()) => {
                debug!(room = room_id, ?users, "edits join the power-levels write waiting to be retried");
                self.writes.started(&Scope::Room(room_id.to_owned()), users);
            }
            // The write is gone: they wait for the room's next write again.
            Err(edits) => {
                let now = self.now();
                self.power.put_back(room_id, edits, now);
            }
        }
    }
}
