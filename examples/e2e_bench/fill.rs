//! The filled homeserver: accounts, rooms and the policy list, made once and reused from
//! `--hs-dir` (its `world.json`), and put back to a clean state before each measurement.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Mutex;

use crate::homeserver::{login, register_account, run_concurrently, Account, Synapse};
use crate::Opts;

/// An account's credentials, as `world.json` keeps them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Creds {
    pub user_id: OwnedUserId,
    pub password: String,
}

impl From<&Account> for Creds {
    fn from(a: &Account) -> Creds {
        Creds { user_id: a.user_id.clone(), password: a.password.clone() }
    }
}

/// What a fill made (`DIR/world.json`, written once the fill is complete).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    pub rules: usize,
    pub moderator: Creds,
    pub bot: Creds,
    /// Every one of them is a member of every protected room.
    pub members: Vec<Creds>,
    pub management: OwnedRoomId,
    pub list: OwnedRoomId,
    pub protected: Vec<OwnedRoomId>,
    pub fill_secs: f64,
}

pub struct World {
    pub hs: Synapse,
    pub saved: Saved,
    pub moderator: Account,
    /// Members logged in so far (for joins after a ban), by user id.
    logins: Mutex<HashMap<OwnedUserId, Account>>,
    /// Whether this run filled the homeserver (else it was reused).
    pub filled_now: bool,
}

impl World {
    pub fn bot(&self) -> &Creds {
        &self.saved.bot
    }

    /// The floor's victims: one to mute, one to ban.
    pub fn floor_users(&self) -> (&Creds, &Creds) {
        (&self.saved.members[0], &self.saved.members[1])
    }

    /// Members for hush's rules (the floor's two excluded).
    pub fn targets(&self) -> &[Creds] {
        &self.saved.members[2..]
    }

    pub async fn member(&self, c: &Creds) -> Result<Account> {
        let mut logins = self.logins.lock().await;
        if let Some(a) = logins.get(&c.user_id) {
            return Ok(a.clone());
        }
        let a = login(&self.hs.url, c.user_id.as_str(), &c.password).await?;
        logins.insert(c.user_id.clone(), a.clone());
        Ok(a)
    }
}

fn world_file(dir: &Path) -> PathBuf {
    dir.join("world.json")
}

/// Starts the homeserver in `dir/synapse`; reuses what an earlier fill left there (and
/// cleans it), or fills it.
pub async fn prepare(opts: &Opts, dir: &Path) -> Result<World> {
    let rooms = opts.max_rooms();
    let file = world_file(dir);
    let synapse_dir = dir.join("synapse");
    if !file.exists() && synapse_dir.join("homeserver.db").exists() {
        bail!("{} has a homeserver but no world.json (an earlier fill did not finish): remove it", dir.display());
    }
    let hs = Synapse::start(&synapse_dir)?;
    eprintln!("synapse at {}", hs.url);
    if file.exists() {
        let saved: Saved = serde_json::from_str(&std::fs::read_to_string(&file)?)
            .with_context(|| format!("read {}", file.display()))?;
        if saved.rules != opts.rules || saved.protected.len() < rooms || saved.members.len() < opts.members {
            bail!(
                "{} was filled with {} rooms, {} members, {} rules; this run asks for {rooms}, {}, {}: use another --hs-dir",
                dir.display(),
                saved.protected.len(),
                saved.members.len(),
                saved.rules,
                opts.members,
                opts.rules
            );
        }
        let moderator = login(&hs.url, saved.moderator.user_id.as_str(), &saved.moderator.password).await?;
        let w = World { hs, saved, moderator, logins: Mutex::new(HashMap::new()), filled_now: false };
        eprintln!("reusing {} (filled in {:.0} s)", file.display(), w.saved.fill_secs);
        return Ok(w);
    }
    let t = Instant::now();
    let saved = fill(opts, &hs).await?;
    let saved = Saved { fill_secs: t.elapsed().as_secs_f64(), ..saved };
    std::fs::write(&file, serde_json::to_string_pretty(&saved)?)?;
    eprintln!("filled in {:.0} s, saved {}", saved.fill_secs, file.display());
    let moderator = login(&hs.url, saved.moderator.user_id.as_str(), &saved.moderator.password).await?;
    Ok(World { hs, saved, moderator, logins: Mutex::new(HashMap::new()), filled_now: true })
}

async fn fill(opts: &Opts, hs: &Synapse) -> Result<Saved> {
    let url = hs.url.clone();
    let t = Instant::now();
    let moderator = register_account(&url, "moderator").await?;
    let bot = register_account(&url, "hush").await?;
    bot.client.matrix_auth().logout().await.context("log the bot's registration device out")?;
    let mut members = Vec::new();
    for i in 0..opts.members.max(4) {
        members.push(register_account(&url, &format!("member{i}")).await?);
    }
    eprintln!("registered {} accounts in {:.1} s", members.len() + 2, t.elapsed().as_secs_f64());

    let t = Instant::now();
    let management = moderator.create_room("management", json!({})).await?;
    let list = moderator.create_room("policies", json!({})).await?;
    let mut protected = Vec::new();
    for i in 0..opts.max_rooms() {
        protected.push(moderator.create_room(&format!("protected {i}"), json!({ bot.user_id.as_str(): 100 })).await?);
    }
    eprintln!("created {} rooms in {:.1} s", protected.len() + 2, t.elapsed().as_secs_f64());

    let t = Instant::now();
    let joins: Vec<(Account, OwnedRoomId)> =
        members.iter().flat_map(|u| protected.iter().map(move |r| (u.clone(), r.clone()))).collect();
    let n = joins.len();
    let done = Arc::new(AtomicUsize::new(0));
    run_concurrently(opts.concurrency, joins, move |(u, room)| {
        let done = done.clone();
        async move {
            u.join(&room).await?;
            let d = done.fetch_add(1, Ordering::Relaxed) + 1;
            if d.is_multiple_of(1000) {
                eprintln!("  {d}/{n} joins in {:.0} s", t.elapsed().as_secs_f64());
            }
            Ok(())
        }
    })
    .await?;
    eprintln!("{n} joins in {:.1} s", t.elapsed().as_secs_f64());

    eprintln!("filling the policy list with {} rules", opts.rules);
    let took = fill_list(&moderator, &list, opts.rules).await?;
    eprintln!("list filled in {:.1} s", took.as_secs_f64());
    Ok(Saved {
        rules: opts.rules,
        moderator: (&moderator).into(),
        bot: Creds { user_id: bot.user_id.clone(), password: bot.password.clone() },
        members: members.iter().map(Creds::from).collect(),
        management,
        list,
        protected,
        fill_secs: 0.0,
    })
}

/// Fills the list with `n` filler rules (users of another server, 1 in 100 a glob), none
/// of which matches anyone in the protected rooms.
///
/// One at a time: concurrent state events in one room fork its DAG, and Synapse then
/// resolves state over the whole list at every merge, which made a 20,000-rule fill take
/// hours (about 4 rules/s at 2,000). In sequence Synapse stays near 50 rules/s.
async fn fill_list(m: &Account, list: &OwnedRoomId, total: usize) -> Result<Duration> {
    let t = Instant::now();
    for i in 0..total {
        let entity =
            if i.is_multiple_of(100) { format!("@spam{i}*:example.org") } else { format!("@spammer{i}:example.org") };
        let recommendation = if i.is_multiple_of(4) { "m.mute" } else { "m.ban" };
        let content = json!({"entity": entity, "recommendation": recommendation, "reason": "bench filler"});
        m.put_state(list, "m.policy.rule.user", &format!("filler-{i}"), &content).await?;
        if (i + 1).is_multiple_of(2000) {
            eprintln!("  {}/{total} rules in {:.0} s", i + 1, t.elapsed().as_secs_f64());
        }
    }
    Ok(t.elapsed())
}

/// Puts the homeserver back as the fill left it, with hush stopped: the benchmark's own
/// rules emptied, every mute lifted, every member unbanned and joined again.
pub async fn reset(w: &World) -> Result<()> {
    let t = Instant::now();
    let mut rules = 0;
    for ev in w.moderator.all_state(&w.saved.list).await? {
        let key = ev["state_key"].as_str().unwrap_or_default();
        let ty = ev["type"].as_str().unwrap_or_default();
        let empty = ev["content"].as_object().is_none_or(|c| c.is_empty());
        if key.starts_with("bench-") && ty.starts_with("m.policy.rule.") && !empty {
            w.moderator.put_state(&w.saved.list, ty, key, &json!({})).await?;
            rules += 1;
        }
    }
    let members: BTreeSet<&str> = w.saved.members.iter().map(|c| c.user_id.as_str()).collect();
    let mut lifted = 0;
    let mut rejoin: Vec<(OwnedRoomId, Creds)> = Vec::new();
    for room in &w.saved.protected {
        let pl = w.moderator.power_levels(room, false).await?;
        let muted: Vec<String> = pl["users"]
            .as_object()
            .map(|u| u.iter().filter(|(_, l)| l.as_i64().is_some_and(|l| l < 0)).map(|(k, _)| k.clone()).collect())
            .unwrap_or_default();
        if !muted.is_empty() {
            let levels: Vec<(&str, Option<i64>)> = muted.iter().map(|u| (u.as_str(), None)).collect();
            w.moderator.set_levels(room, &levels).await?;
            lifted += muted.len();
        }
        let mut joined = BTreeSet::new();
        for ev in w.moderator.members(room).await? {
            let user = ev["state_key"].as_str().unwrap_or_default();
            match ev["content"]["membership"].as_str() {
                Some("join") => {
                    joined.insert(user.to_owned());
                }
                Some("ban") if members.contains(user) => {
                    w.moderator.unban(room, &user.try_into()?).await?;
                }
                _ => {}
            }
        }
        for c in &w.saved.members {
            if !joined.contains(c.user_id.as_str()) {
                rejoin.push((room.clone(), c.clone()));
            }
        }
    }
    let n = rejoin.len();
    for (room, c) in rejoin {
        w.member(&c).await?.join(&room).await?;
    }
    eprintln!(
        "reset: {rules} rules emptied, {lifted} mutes lifted, {n} joins again, in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The list's rule for `user` (`m.mute` or `m.ban`); returns the rule's event id.
pub async fn send_rule(w: &World, user: &OwnedUserId, recommendation: &str) -> Result<String> {
    let content = json!({"entity": user.as_str(), "recommendation": recommendation, "reason": "bench"});
    // A state key of its own per run: a key an earlier run used and emptied would give
    // hush the rule, its removal and the rule again (see BENCHMARKS.md, issue 15).
    let key = format!("bench-{}-{user}-{}", recommendation.trim_start_matches("m."), crate::run_id());
    w.moderator.put_state(&w.saved.list, "m.policy.rule.user", &key, &content).await
}

/// The rooms of one measured size: the first `n` protected rooms.
pub fn rooms(w: &World, n: usize) -> &[OwnedRoomId] {
    &w.saved.protected[..n]
}
