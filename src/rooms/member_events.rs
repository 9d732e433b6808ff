//! The latest member events applied in a room, kept per member, so that an older event sync delivers again is recognised whatever other members did meanwhile.
//!
//! Each entry is an applied event's id and the id it names as replaced
//! (`unsigned.replaces_state`). A member's events are few, so a handful per member covers a
//! replay; a per-room window did not (a restart's load and a storm of rejoins pushed a ban
//! out of it, and the join the ban replaced read as an unban).

use std::collections::HashMap;

/// The applied events remembered per member, newest last.
const PER_MEMBER: usize = 4;

/// An applied event's id and the id it names as replaced.
type Applied = (Box<str>, Option<Box<str>>);

#[derive(Debug, Default, Clone)]
pub struct MemberEvents {
    by_member: HashMap<Box<str>, Vec<Applied>>,
}

impl MemberEvents {
    /// `user`'s member event `id`, replacing `replaces`, was applied.
    pub fn applied(&mut self, user: &str, id: &str, replaces: Option<&str>) {
        let events = self.by_member.entry(user.into()).or_default();
        if events.len() >= PER_MEMBER {
            events.remove(0);
        } else {
            // Most members only ever have the event the room was loaded with.
            events.reserve_exact(1);
        }
        events.push((id.into(), replaces.map(Into::into)));
    }

    /// Whether an applied event of `user`'s replaced `id`: `id` is older than the view.
    pub fn replaced(&self, user: &str, id: &str) -> bool {
        self.events(user).any(|(_, r)| r.as_deref() == Some(id))
    }

    /// Whether `id` was applied, or an applied event replaced it.
    pub fn seen(&self, user: &str, id: &str) -> bool {
        self.events(user).any(|(e, r)| &**e == id || r.as_deref() == Some(id))
    }

    fn events(&self, user: &str) -> impl Iterator<Item = &Applied> {
        self.by_member.get(user).into_iter().flatten()
    }
}
