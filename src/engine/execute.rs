//! Carrying out planned actions: the ledger's write-ahead entry, then the room write (spawned after the commit), and what each write's result means for the ledger and the view (owns no state of its own).

use hush_core::history::Outcome;
use hush_core::power_levels::UserLevelEdit;
use hush_core::reconcile::{Action, Membership, Restriction, Wanted};
use hush_core::record::{Entry, Kind, Phase, Scope};
use hush_core::schedule::Clock;
use tracing::{debug, info, warn};

use super::{describe_rule, Engine, Input};
use crate::enforce::{self, PowerLevelsSent, RoomWriter, WriteError};

/// A ledger entry for a change about to be made (write-ahead).
fn applying_entry(
    room_id: &str,
    user_id: &str,
    kind: Kind,
    previous_level: Option<i64>,
    applied_level: Option<i64>,
    wanted: &Wanted,
    now: u64,
) -> Entry {
    Entry {
        scope: Scope::Room(room_id.to_owned()),
        user_id: user_id.to_owned(),
        kind,
        phase: Phase::Applying,
        previous_level,
        applied_level,
        rule: wanted.rule.clone(),
        reason: wanted.reason.clone(),
        applied_at_ms: now,
        expires_at_ms: wanted.expires_at_ms,
        overridden: false,
        event_ids: Vec::new(),
    }
}

/// A rule as dry-run reports name it, "list|kind|state key" (report wording only: the
/// ledger stores the rule typed).
pub(super) fn dry_run_rule(rule: &hush_core::policy::RuleId) -> String {
    format!("{}|{}|{}", rule.room_id, rule.kind.as_str(), rule.state_key)
}

impl<W: RoomWriter, C: Clock> Engine<W, C> {
    /// Carries out one planned action in a room, as the engine's consequences say.
    pub(super) fn execute(&mut self, room_id: &str, action: Action) {
        self.log_action(Scope::Room(room_id.to_owned()), &action);
        let consequences = self.consequences.clone();
        consequences.room(self, room_id, action);
    }

    /// The ledger's write-ahead entry, then the room write (spawned after the commit).
    pub(super) fn enforce(&mut self, room_id: &str, action: Action) {
        let now = self.now();
        let scope = Scope::Room(room_id.to_owned());
        let result = match action {
            // The server ACL's actions, and the ledger-only ones about its entries.
            Action::DenyServer { .. }
            | Action::UndenyServer { .. }
            | Action::RefuseServerDeny { .. }
            | Action::MarkApplied { kind: Kind::ServerDeny, .. }
            | Action::Forget { kind: Kind::ServerDeny, .. } => {
                self.enforce_acl(room_id, action);
                return;
            }
            Action::MutePowerLevel { user_id, level, previous, wanted } => {
                let entry =
                    applying_entry(room_id, &user_id, Kind::MutePowerLevel, previous, Some(level), &wanted, now);
                info!(room = room_id, user = %user_id, level, ?previous, rule = %wanted.rule, "muting by power level");
                self.ledger.begin_apply(&entry).map(|()| {
                    // hush expects the entry it saw, the one it will restore.
                    self.queue_level(room_id, &user_id, Some(level), previous);
                })
            }
            Action::UnmutePowerLevel { user_id, restore } => {
                info!(room = room_id, user = %user_id, ?restore, "lifting a power-level mute");
                // hush expects the level it set.
                let applied = self.ledger.get(&scope, &user_id, Kind::MutePowerLevel).ok().flatten();
                let expected = applied.and_then(|e| e.applied_level);
                self.ledger.begin_lift(&scope, &user_id, Kind::MutePowerLevel).map(|()| {
                    self.queue_level(room_id, &user_id, restore, expected);
                })
            }
            Action::MuteMembership { user_id, wanted } => {
                let entry = applying_entry(room_id, &user_id, Kind::MuteMembership, None, None, &wanted, now);
                self.ledger.begin_apply(&entry).map(|()| {
                    self.spawn_member_write(room_id, &user_id, Kind::MuteMembership, false, "mute", &wanted.reason);
                })
            }
            Action::UnmuteMembership { user_id, to } => {
                let to = if to == Membership::Leave { "leave" } else { "join" };
                self.ledger.begin_lift(&scope, &user_id, Kind::MuteMembership).map(|()| {
                    self.spawn_member_write(room_id, &user_id, Kind::MuteMembership, true, to, "mute lifted");
                })
            }
            Action::Ban { user_id, wanted } => {
                let entry = applying_entry(room_id, &user_id, Kind::Ban, None, None, &wanted, now);
                info!(room = room_id, user = %user_id, rule = %wanted.rule, "banning");
                // A ban that redacts asks the homeserver to do it too (MSC4293).
                let op =
                    if self.cfg.redaction.on_ban && self.cfg.redact_with_msc4293 { "ban-redacting" } else { "ban" };
                self.ledger.begin_apply(&entry).map(|()| {
                    self.spawn_member_write(room_id, &user_id, Kind::Ban, false, op, &wanted.reason);
                })
            }
            Action::Unban { user_id } => {
                info!(room = room_id, user = %user_id, "lifting a ban");
                self.ledger.begin_lift(&scope, &user_id, Kind::Ban).map(|()| {
                    self.spawn_member_write(room_id, &user_id, Kind::Ban, true, "unban", "ban lifted");
                })
            }
            Action::MarkApplied { user_id, kind } => {
                self.power.drop_user(room_id, &user_id);
                self.ledger.mark_applied(&scope, &user_id, kind)
            }
            Action::MarkOverridden { user_id, kind, note } => {
                let seen = self.view.rooms.get(room_id).and_then(|r| r.as_ref()).map(|r| r.membership(&user_id));
                debug!(room = room_id, user = %user_id, ?kind, ?seen, "someone else changed hush's restriction: left so");
                self.report_in_room(
                    &format!("override|{room_id}|{user_id}|{kind:?}"),
                    &format!("{note} (in {{rooms}})."),
                    room_id,
                );
                self.ledger.mark_overridden(&scope, &user_id, kind)
            }
            Action::Forget { user_id, kind } => {
                let seen = self.view.rooms.get(room_id).and_then(|r| r.as_ref()).map(|r| r.membership(&user_id));
                debug!(room = room_id, user = %user_id, ?kind, ?seen, "forgetting hush's record (nothing to undo in the room)");
                self.power.drop_user(room_id, &user_id);
                self.departed.insert(user_id.clone());
                self.ledger.remove(&scope, &user_id, kind)
            }
            Action::UpdateCause { user_id, kind, wanted } => {
                self.ledger.update_cause(&scope, &user_id, kind, &wanted.rule, &wanted.reason, wanted.expires_at_ms)
            }
            Action::Refuse { user_id, restriction, refusal, rule } => {
                let what = if restriction == Restriction::Ban { "ban" } else { "mute" };
                warn!(room = room_id, user = %user_id, %refusal, %rule, "refusing to {what}");
                self.report_in_room(
                    &format!("refuse|{room_id}|{user_id}|{what}|{refusal}|{rule}"),
                    &format!("Not going to {what} {user_id} in {{rooms}}: {refusal} (rule {}).", describe_rule(&rule)),
                    room_id,
                );
                Ok(())
            }
            Action::Redact { user_id, since_ms, limit, rule, reason, event_ids } => {
                let entry = Entry {
                    scope: scope.clone(),
                    user_id: user_id.clone(),
                    kind: Kind::Redaction,
                    phase: Phase::Applying,
                    previous_level: Some(since_ms as i64),
                    applied_level: Some(i64::from(limit)),
                    rule,
                    reason,
                    applied_at_ms: now,
                    expires_at_ms: None,
                    overridden: false,
                    event_ids,
                };
                match self.ledger.get(&scope, &user_id, Kind::Redaction) {
                    // One under way (a ban sent again after a crash): it goes on as recorded.
                    Ok(Some(existing)) => {
                        self.start_redaction(&existing);
                        Ok(())
                    }
                    _ => {
                        info!(room = room_id, user = %user_id, since_ms, limit, "redacting recent events");
                        self.ledger.begin_apply(&entry).map(|()| self.start_redaction(&entry))
                    }
                }
            }
            // Account actions come from `reconcile_account`, never from a room's reconcile.
            Action::Suspend { user_id, .. } | Action::Resuspend { user_id } | Action::Unsuspend { user_id } => {
                warn!(room = room_id, user = %user_id, "ignored an account action planned for a room");
                Ok(())
            }
        };
        if let Err(e) = result {
            self.error(format!("ledger write failed in {room_id}: {e:#}"));
        }
    }

    /// Dry run: what the action would do, reported; nothing written.
    pub(super) fn simulate(&mut self, room_id: &str, action: Action) {
        // `{rooms}` is filled in when the input's reports are gathered: one line for all
        // the rooms where the same would be done.
        let template = match &action {
            a @ (Action::DenyServer { .. } | Action::UndenyServer { .. } | Action::RefuseServerDeny { .. }) => {
                Self::simulate_acl_template(a).unwrap_or_default()
            }
            Action::MutePowerLevel { user_id, level, wanted, .. } => {
                format!(
                    "[dry run] would mute {user_id} in {{rooms}} (power level {level}); rule {}",
                    dry_run_rule(&wanted.rule)
                )
            }
            Action::UnmutePowerLevel { user_id, restore } => format!(
                "[dry run] would lift the mute of {user_id} in {{rooms}} (back to {})",
                restore.map_or("no entry".to_owned(), |l| l.to_string())
            ),
            Action::MuteMembership { user_id, .. } => {
                format!("[dry run] would mute {user_id} in {{rooms}} (membership)")
            }
            Action::UnmuteMembership { user_id, .. } => {
                format!("[dry run] would unmute {user_id} in {{rooms}} (membership)")
            }
            Action::Ban { user_id, wanted } => {
                format!("[dry run] would ban {user_id} from {{rooms}}: {}", wanted.reason)
            }
            Action::Unban { user_id } => format!("[dry run] would unban {user_id} in {{rooms}}"),
            Action::Refuse { user_id, refusal, .. } => {
                format!("[dry run] would refuse to act on {user_id} in {{rooms}}: {refusal}")
            }
            Action::Redact { user_id, event_ids, .. } if !event_ids.is_empty() => {
                format!("[dry run] would redact {} of {user_id} in {{rooms}}", event_ids.join(", "))
            }
            Action::Redact { user_id, since_ms, limit, .. } => format!(
                "[dry run] would redact the events {user_id} sent in {{rooms}} since {} (at most {limit} per room)",
                super::redactions::fmt_since(*since_ms)
            ),
            // Ledger bookkeeping: nothing was applied in a dry run, so nothing to keep.
            _ => return,
        };
        info!(room = room_id, "{template}");
        let key = template.replace("{rooms}", room_id);
        self.report_in_room(&key, &template, room_id);
    }

    /// Queues one user's level change. The first change after a quiet batch window goes
    /// out at once (after the inputs already queued, so one rule over many members is
    /// still one event); later ones wait until a window has passed since the last write,
    /// or until the write in flight is done, and go out together. `expected` is the entry
    /// hush expects to find; a user queued again keeps the first expectation (the room has
    /// not been written for them in between).
    pub(super) fn queue_level(&mut self, room_id: &str, user_id: &str, level: Option<i64>, expected: Option<i64>) {
        let now = self.now();
        let Some(wait) = self.power.queue(room_id, user_id, level, expected, now, self.cfg.batch_window) else {
            return;
        };
        let inbox = self.inbox.clone();
        let room_id = room_id.to_owned();
        if wait.is_zero() {
            let _ = inbox.send(Input::Flush { room_id });
            return;
        }
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = inbox.send(Input::Flush { room_id });
        });
    }

    pub(super) fn flush(&mut self, room_id: &str) {
        let now = self.now();
        let Some(edits) = self.power.take(room_id, now) else { return };
        self.writes.started(&Scope::Room(room_id.to_owned()), edits.iter().map(|e| e.user_id.clone()));
        let writer = self.writer.clone();
        let inbox = self.inbox.clone();
        let room_id = room_id.to_owned();
        debug!(room = %room_id, edits = edits.len(), "sending power levels");
        let more = super::power_join::asking(&inbox, &room_id);
        self.writes.after_commit(async move {
            let (edits, result) = enforce::send_power_levels(&writer, &room_id, edits, more).await;
            let _ = inbox.send(Input::PowerLevelsDone { room_id, edits, result });
        });
    }

    pub(super) fn power_levels_done(
        &mut self,
        room_id: &str,
        edits: Vec<UserLevelEdit>,
        result: Result<PowerLevelsSent, WriteError>,
    ) {
        self.power_write_answered(room_id);
        let scope = Scope::Room(room_id.to_owned());
        match result {
            Ok(sent) => {
                if let Some(Some(room)) = self.view.rooms.get_mut(room_id) {
                    room.own_power_levels_written(sent.content.clone(), sent.event_id);
                }
                for edit in &edits {
                    let entry = self.ledger.get(&scope, &edit.user_id, Kind::MutePowerLevel).ok().flatten();
                    let lifting = entry.as_ref().is_some_and(|e| e.phase == Phase::Lifting);
                    self.count_level_write(entry.as_ref(), Ok(sent.skipped.contains(&edit.user_id)));
                    if sent.skipped.contains(&edit.user_id) {
                        let now = hush_core::power_levels::user_entry(&sent.content, &edit.user_id);
                        if let Err(e) = self.changed_before_written(room_id, &edit.user_id, entry, now) {
                            self.error(format!("ledger write failed in {room_id}: {e:#}"));
                        }
                        let left = Outcome::Failed("their level was changed meanwhile; left as it is".to_owned());
                        self.settle_logged(&scope, &edit.user_id, Kind::MutePowerLevel, lifting, left);
                        // Judged again now that the ledger says what happened (an ended
                        // rule's overridden entry is forgotten).
                        self.writes.defer(&scope, &edit.user_id);
                        continue;
                    }
                    self.settle_logged(&scope, &edit.user_id, Kind::MutePowerLevel, lifting, Outcome::Done);
                    let r = match entry {
                        Some(e)
                            if e.phase == Phase::Applying && edit.level.is_some() && edit.level == e.applied_level =>
                        {
                            self.ledger.mark_applied(&scope, &edit.user_id, Kind::MutePowerLevel)
                        }
                        Some(e) if e.phase == Phase::Lifting => {
                            self.ledger.remove(&scope, &edit.user_id, Kind::MutePowerLevel)
                        }
                        _ => Ok(()),
                    };
                    if let Err(e) = r {
                        self.error(format!("ledger write failed in {room_id}: {e:#}"));
                    }
                }
                info!(room = room_id, edits = edits.len(), "power levels updated");
            }
            Err(e) => {
                if !self.own_account_error(&e) {
                    self.error(format!("cannot change power levels in {room_id}: {e}"));
                }
                for edit in &edits {
                    let entry = self.ledger.get(&scope, &edit.user_id, Kind::MutePowerLevel).ok().flatten();
                    let lifting = entry.as_ref().is_some_and(|e| e.phase == Phase::Lifting);
                    self.settle_logged(
                        &scope,
                        &edit.user_id,
                        Kind::MutePowerLevel,
                        lifting,
                        Outcome::Failed(e.to_string()),
                    );
                    self.count_level_write(entry.as_ref(), Err(()));
                    let _ = match entry {
                        Some(e) if e.phase == Phase::Applying => {
                            self.ledger.remove(&scope, &edit.user_id, Kind::MutePowerLevel)
                        }
                        Some(e) if e.phase == Phase::Lifting => {
                            self.ledger.mark_applied(&scope, &edit.user_id, Kind::MutePowerLevel)
                        }
                        _ => Ok(()),
                    };
                }
            }
        }
        self.departed.extend(edits.iter().map(|e| e.user_id.clone()));
        self.write_finished(room_id, edits.iter().map(|e| e.user_id.as_str()));
        if self.power.has_pending(room_id) {
            self.flush(room_id);
        }
    }

    /// Someone else (a moderator) changed a user's entry while hush's write for them waited,
    /// so the write left it alone: that level is the moderator's decision. A mute not yet
    /// applied is not applied, a lift leaves the moderator's level; either way hush's entry
    /// is kept as overridden (so the rule does not mute them again, and nothing is restored
    /// when it ends), and the management room is told once.
    pub(super) fn changed_before_written(
        &mut self,
        room_id: &str,
        user_id: &str,
        entry: Option<Entry>,
        now: Option<i64>,
    ) -> anyhow::Result<()> {
        let scope = Scope::Room(room_id.to_owned());
        let now = now.map_or("the default".to_owned(), |l| l.to_string());
        let Some(e) = entry else { return Ok(()) };
        let note = match e.phase {
            Phase::Applying => format!(
                "Did not mute {user_id} in {{rooms}}: their power level was changed to {now} while hush's mute waited to be written; hush leaves it so."
            ),
            Phase::Lifting => format!(
                "The mute of {user_id} ended, but their power level in {{rooms}} was changed to {now} while hush's lift waited to be written; hush leaves it so."
            ),
            Phase::Applied => return Ok(()),
        };
        info!(room = room_id, user = user_id, phase = ?e.phase, "a level changed by someone else is left as it is");
        self.report_in_room(&format!("changed-before-written|{room_id}|{user_id}|{:?}", e.phase), &note, room_id);
        self.ledger.mark_overridden(&scope, user_id, Kind::MutePowerLevel)
    }

    /// The writes for these users are done and the ledger says what they did: reconcile
    /// the ones whose reconciliation waited (their rule may have changed meanwhile).
    pub(super) fn write_finished<'a>(&mut self, room_id: &str, users: impl Iterator<Item = &'a str>) {
        let users: Vec<&str> = users.collect();
        let again = self.writes.finished(&Scope::Room(room_id.to_owned()), users.iter().copied());
        self.start_waiting_redactions(room_id, &users);
        self.reconcile_room_users(room_id, &again);
    }
}
