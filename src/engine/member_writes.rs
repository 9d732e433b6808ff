//! hush's membership writes (mutes by membership, bans, and their lifts): sending one with its retries, and settling its ledger entry and the room view when its answer comes.

use hush_core::history::Outcome;
use hush_core::reconcile::Membership;
use hush_core::record::{Kind, Scope};
use hush_core::schedule::Clock;
use tracing::debug;

use super::{Engine, Input};
use crate::enforce::{self, RoomWriter, WriteError};

impl<W: RoomWriter, C: Clock> Engine<W, C> {
    pub(super) fn spawn_member_write(
        &mut self,
        room_id: &str,
        user_id: &str,
        kind: Kind,
        lifting: bool,
        op: &'static str,
        reason: &str,
    ) {
        self.writes.started(&Scope::Room(room_id.to_owned()), [user_id.to_owned()]);
        let writer = self.writer.clone();
        let inbox = self.inbox.clone();
        let (room_id, user_id, reason) = (room_id.to_owned(), user_id.to_owned(), reason.to_owned());
        let slots = self.writes.member_slots();
        let (metrics, decided) = (self.metrics.clone(), std::time::Instant::now());
        self.writes.after_commit(async move {
            // Held through the retries: a rate-limited write waits without letting another start.
            let _slot = slots.acquire_owned().await.expect("the semaphore is never closed");
            let what = format!("{op} {user_id} in {room_id}");
            let lost = std::sync::atomic::AtomicBool::new(false);
            let result = enforce::with_retries(&what, || async {
                let r = match op {
                    "ban" => writer.ban(&room_id, &user_id, &reason).await,
                    "ban-redacting" => writer.ban_redacting(&room_id, &user_id, &reason).await,
                    "unban" => writer.unban(&room_id, &user_id, &reason).await,
                    membership => writer.set_membership(&room_id, &user_id, membership, &reason).await,
                };
                if matches!(r, Err(WriteError::Transient(_))) {
                    lost.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                r
            })
            .await;
            metrics.decision_to_write(decided.elapsed());
            let mut uncertain = lost.load(std::sync::atomic::Ordering::Relaxed);
            let mut result = result;
            if result.is_err() && uncertain {
                // An attempt's answer was lost, then the write failed: look at the room
                // rather than guess whether that attempt happened.
                let shows = match op {
                    "ban" | "ban-redacting" => "ban",
                    "unban" => "leave",
                    membership => membership,
                };
                // If the read fails too, it stays unknown: the entry stays in its phase until
                // the room shows it.
                if let Ok(now) = writer.membership(&room_id, &user_id).await {
                    uncertain = false;
                    if now.as_deref() == Some(shows) || (shows == "mute" && now.as_deref() == Some("leave-mute")) {
                        debug!(room = %room_id, user = %user_id, membership = shows, "a write whose answer was lost happened");
                        result = Ok(None);
                    }
                }
            }
            let _ = inbox.send(Input::MemberWriteDone { room_id, user_id, kind, lifting, result, uncertain });
        });
    }

    pub(super) fn member_write_done(
        &mut self,
        room_id: &str,
        user_id: &str,
        kind: Kind,
        lifting: bool,
        result: Result<Option<String>, WriteError>,
        uncertain: bool,
    ) {
        let scope = Scope::Room(room_id.to_owned());
        self.metrics.action(crate::metrics::action_kind(kind, lifting), crate::metrics::Outcome::of(&result));
        // A failure after a lost answer: the first attempt was applied (sync showed it), the
        // retry was refused. The restriction is in force: keep its entry, or it is never lifted.
        let in_force = match (self.view.rooms.get(room_id), kind) {
            (Some(Some(room)), Kind::Ban) => room.membership(user_id) == Membership::Ban,
            (Some(Some(room)), Kind::MuteMembership) => {
                matches!(room.membership(user_id), Membership::Mute | Membership::LeaveMute)
            }
            _ => false,
        };
        // A refusal after an earlier attempt of the same write lost its answer (its event
        // still to come) says nothing new: the first may have happened ("mute -> mute").
        let uncertain = uncertain
            || matches!(self.view.rooms.get(room_id), Some(Some(room)) if room.own_members.failed_as(user_id, kind, lifting));
        // The write may have been applied (a lost answer) with its event still to come:
        // then the entry is taken back (a restriction) or removed (a lift) when it comes.
        if result.is_err() && in_force == lifting && uncertain {
            let entry = self.ledger.get(&scope, user_id, kind).ok().flatten();
            if let (Some(Some(room)), Some(e)) = (self.view.rooms.get_mut(room_id), entry) {
                // Its event, if it happened, is older than any later write of hush's: awaited
                // like theirs, so it does not roll the view back over a later ban.
                let would = match (kind, lifting, room.membership(user_id)) {
                    (Kind::Ban, false, _) => Some(Membership::Ban),
                    (Kind::Ban, true, _) => Some(Membership::Leave),
                    (Kind::MuteMembership, false, _) => Some(Membership::Mute),
                    (Kind::MuteMembership, true, Membership::LeaveMute) => Some(Membership::Leave),
                    (Kind::MuteMembership, true, _) => Some(Membership::Join),
                    _ => None,
                };
                if let Some(m) = would {
                    room.own_members.written(user_id, m, None);
                }
                room.own_members.failed(e, lifting);
            }
        }
        let r = match (&result, lifting) {
            (Ok(_), false) => self.ledger.mark_applied(&scope, user_id, kind),
            (Ok(_), true) => self.ledger.remove(&scope, user_id, kind),
            (Err(_), false) if in_force => self.ledger.mark_applied(&scope, user_id, kind),
            // Sync already showed the lift: it happened.
            (Err(_), true) if !in_force => self.ledger.remove(&scope, user_id, kind),
            // An answer was lost, then a retry refused: not known to have happened, nor not
            // to. The entry stays in its phase (applying, lifting) for the next reconcile, in
            // this run or after a restart, to judge against the room. Taken out until the
            // event came, a kill before it left a mute in force with nothing recorded (the
            // model soak).
            (Err(_), _) if uncertain => Ok(()),
            (Err(_), false) => self.ledger.remove(&scope, user_id, kind),
            (Err(_), true) => self.ledger.mark_applied(&scope, user_id, kind),
        };
        let written = result.as_ref().ok().cloned();
        let outcome = match &result {
            Ok(_) => Outcome::Done,
            Err(e) => Outcome::Failed(e.to_string()),
        };
        self.settle_logged(&scope, user_id, kind, lifting, outcome);
        if let Err(e) = result {
            if !self.own_account_error(&e) {
                self.error(format!(
                    "cannot {} {user_id} in {room_id}: {e}",
                    if lifting { "lift the restriction of" } else { "restrict" }
                ));
            }
        }
        if let Err(e) = r {
            self.error(format!("ledger write failed in {room_id}: {e:#}"));
        }
        if let Some(event_id) = written {
            // The room has it now, before sync brings the event back: a check that waited
            // for this write must not read the older view as someone else's undo, nor may an
            // older member event sync brings before this one.
            if let Some(Some(room)) = self.view.rooms.get_mut(room_id) {
                let now = match (kind, lifting, room.membership(user_id)) {
                    (Kind::Ban, false, _) => Some(Membership::Ban),
                    (Kind::Ban, true, _) => Some(Membership::Leave),
                    (Kind::MuteMembership, false, Membership::Join) => Some(Membership::Mute),
                    (Kind::MuteMembership, true, Membership::Mute) => Some(Membership::Join),
                    (Kind::MuteMembership, true, Membership::LeaveMute) => Some(Membership::Leave),
                    _ => None,
                };
                if let Some(m) = now {
                    debug!(room = room_id, user = user_id, ?event_id, membership = ?m, "member write answered");
                    // Awaited (by event id, and by membership for a later lost answer) only if
                    // sync has not brought it back already.
                    let already = room.members.get(user_id) == Some(&m);
                    // An earlier write of hush's whose answer was lost is older than this one:
                    // whatever it did, this one is what the room shows now.
                    room.own_members.superseded(user_id);
                    if room.own_member_written(user_id, m, event_id.clone()) && !already {
                        room.own_members.written(user_id, m, event_id.as_deref());
                    }
                }
            }
        }
        // The entry may be gone (lifted, or never applied): the user may be departed.
        self.departed.insert(user_id.to_owned());
        self.write_finished(room_id, std::iter::once(user_id));
    }
}
