//! The mass-action guard: whether one batch of new restrictions is small enough to enforce without a moderator's confirmation.
//!
//! Pure arithmetic. The shell gathers, for one input (a rule, a list loaded, a room
//! loaded), the restrictions it would newly make, and asks [`judge`]. A batch over the
//! limits is held whole until a moderator confirms it; rules that match everyone
//! ([`crate::policy::glob::matches_everyone`]) are held whatever the count.

/// The limits, from the config's `safety` section.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// At most this many distinct members newly restricted by one batch.
    pub max_new_restrictions: usize,
    /// At most this share of any protected room's members (once at least
    /// [`MIN_ROOM_HITS`] members are hit).
    pub max_room_share: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_new_restrictions: 10, max_room_share: 0.25 }
    }
}

/// The share rule only holds a batch that hits at least this many members of one room, so
/// a ban in a room of three is not held for being a third of it.
pub const MIN_ROOM_HITS: usize = 3;

/// What one batch would newly do in one protected room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomHits {
    pub room_id: String,
    /// Members present in the room (joined, invited, knocking, muted).
    pub members: usize,
    /// Members this batch would newly restrict there.
    pub hit: usize,
}

/// Why a batch is held, in words for the management room; `None`: it may go ahead.
pub fn judge(limits: &Limits, distinct_members: usize, rooms: &[RoomHits]) -> Option<String> {
    if distinct_members > limits.max_new_restrictions {
        return Some(format!(
            "it would newly restrict {distinct_members} members, more than safety.max_new_restrictions ({})",
            limits.max_new_restrictions
        ));
    }
    for r in rooms {
        if r.hit >= MIN_ROOM_HITS && (r.hit as f64) > limits.max_room_share * r.members as f64 {
            return Some(format!(
                "it would newly restrict {} of the {} members of {}, more than safety.max_room_share ({})",
                r.hit, r.members, r.room_id, limits.max_room_share
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(members: usize, hit: usize) -> RoomHits {
        RoomHits { room_id: "!r".into(), members, hit }
    }

    #[test]
    fn counts_distinct_members_against_the_limit() {
        let l = Limits::default();
        assert_eq!(judge(&l, 10, &[]), None);
        let why = judge(&l, 11, &[]).unwrap();
        assert!(why.contains("11 members") && why.contains("max_new_restrictions (10)"), "{why}");
    }

    #[test]
    fn a_share_of_a_room_holds_from_three_members_on() {
        let l = Limits::default();
        // 2 of 4 is half the room, but only two people.
        assert_eq!(judge(&l, 2, &[room(4, 2)]), None);
        // 3 of 12 is exactly a quarter: not more than it.
        assert_eq!(judge(&l, 3, &[room(12, 3)]), None);
        let why = judge(&l, 3, &[room(100, 0), room(11, 3)]).unwrap();
        assert!(why.contains("3 of the 11 members") && why.contains("max_room_share (0.25)"), "{why}");
        let strict = Limits { max_new_restrictions: 1000, max_room_share: 1.0 };
        assert_eq!(judge(&strict, 50, &[room(50, 50)]), None);
    }
}
