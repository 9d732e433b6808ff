//! The room view: what hush knows of the followed policy lists (loaded or not, their trust), the protected rooms and the management room, and the read-only questions on it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use hush_core::policy::ListTrust;
use hush_core::reconcile::RoomFacts;
use hush_core::schedule::Clock;
use serde_json::Value;

use super::Engine;
use crate::enforce::RoomWriter;
use crate::rooms::RoomState;

#[derive(Debug, Default)]
pub(super) struct View {
    /// Protected rooms: their state once loaded.
    pub(super) rooms: BTreeMap<String, Option<RoomState>>,
    /// The management room's state (its moderators are never restricted).
    pub(super) management: Option<RoomState>,
    /// Followed lists: loaded or not yet.
    pub(super) lists: BTreeMap<String, bool>,
    /// Every configured list has been tried once ([`super::Input::ListsKnown`]).
    pub(super) lists_known: bool,
    /// Live events of lists and rooms that are not loaded yet, replayed after the load.
    pub(super) buffered: HashMap<String, Vec<Value>>,
    /// What each followed list may make hush do.
    pub(super) trust: HashMap<String, ListTrust>,
}

impl View {
    /// Whether what `list` caused is held: the list is followed but not loaded yet, or
    /// (before every configured list is known) not known at all.
    pub(super) fn list_held(&self, list: &str) -> bool {
        match self.lists.get(list) {
            Some(loaded) => !loaded,
            None => !self.lists_known,
        }
    }

    pub(super) fn trust_of(&self, list: &str) -> ListTrust {
        self.trust.get(list).copied().unwrap_or(ListTrust::OTHER_LIST)
    }

    /// Members present in a protected room (joined, invited, knocking, muted).
    pub(super) fn present_members(&self, room_id: &str) -> usize {
        match self.rooms.get(room_id) {
            Some(Some(room)) => room.members.values().filter(|m| m.is_present()).count(),
            _ => 0,
        }
    }
}

impl<W: RoomWriter, C: Clock> Engine<W, C> {
    /// What the reconciler knows of a protected room.
    pub(super) fn facts<'a>(&'a self, room: &'a RoomState) -> RoomFacts<'a> {
        RoomFacts {
            room_id: &room.room_id,
            strategy: room.strategy(&self.cfg.membership_room_versions),
            power_levels: &room.power_levels,
            creators: &room.creators,
            creators_privileged: room.creators_privileged,
            own_user: &self.cfg.own_user,
            own_level: room.own_level(&self.cfg.own_user),
        }
    }

    /// The management room's moderators: those who may command hush there.
    pub(super) fn management_moderators(&self) -> BTreeSet<String> {
        let Some(room) = &self.view.management else { return BTreeSet::new() };
        room.members
            .iter()
            .filter(|(_, m)| m.is_present())
            .map(|(u, _)| u)
            .chain(&room.creators)
            .filter(|u| self.is_management_moderator(u))
            .cloned()
            .collect()
    }

    pub(super) fn is_management_moderator(&self, user: &str) -> bool {
        let Some(room) = &self.view.management else { return false };
        if room.creators_privileged && room.creators.iter().any(|c| c == user) {
            return true;
        }
        let needed = self
            .cfg
            .moderator_power_level
            .unwrap_or_else(|| hush_core::power_levels::power_levels_send_level(&room.power_levels));
        hush_core::power_levels::user_level(&room.power_levels, user) >= needed
    }

    pub(super) fn all_known_users(&self) -> BTreeSet<String> {
        let mut users: BTreeSet<String> =
            self.view.rooms.values().flatten().flat_map(|r| r.members.keys().cloned()).collect();
        users.extend(
            self.ledger.all().unwrap_or_default().into_iter().filter(|e| e.kind.is_about_a_user()).map(|e| e.user_id),
        );
        users
    }
}
