//! Chaos against a real Synapse: rules change at random in two lists while hush is killed (-9) at random moments, the homeserver restarts and its rate limits come and go; at the end, with everything settled, what hush did must be exactly what the rules say.
//!
//! `HUSH_CHAOS_SECS` sets how long the chaos lasts (default 45 s, as in the normal run and
//! CI); `HUSH_CHAOS_SEED` replays the moderators' choices (the seed is printed). By hand:
//! `scripts/test -E 'binary(chaos)' --no-capture`, with `HUSH_CHAOS_SECS=600` for ten
//! minutes.
//!
//! The homeserver is a third test Synapse, in `chaos/` under the one `scripts/test`
//! started (it stops it too), since this test restarts it.
#![recursion_limit = "256"]

#[path = "chaos/api.rs"]
mod api;
mod common;
#[path = "chaos/model.rs"]
mod model;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::{Account, Api};
use common::{now_ms, repo_root, BotProcess};
use model::{Expect, Model, Rng, Rule};
use serde_json::{json, Value};

const ROOMS: usize = 5;
const GROUPS: usize = 6;
const HAND_USERS: usize = 5;
const BYSTANDERS: usize = 4;
/// Keys a rule change may touch in each list.
const LISTS: usize = 2;

/// Who is in the rooms, by role.
struct Cast {
    /// Every name in the run starts with it.
    prefix: String,
    moderator: Account,
    bot: Account,
    bot_password: String,
    /// Named by rules: `GROUPS` groups of three (`<p>g<k>a`, `b`, `c`), so a glob `<p>g<k>?`
    /// names one group.
    targets: Vec<Account>,
    /// Never named by a rule; moderators change their levels by hand.
    hand: Vec<Account>,
    /// Never touched; the first is a `protected_users` entry that some rules name.
    bystanders: Vec<Account>,
}

/// What the run counts, printed at the end.
#[derive(Debug, Default)]
struct Figures {
    rule_changes: u64,
    level_changes: u64,
    membership_changes: u64,
    kills: u64,
    homeserver_restarts: u64,
    rate_limited_periods: u64,
    /// Longest time the rooms disagreed with the rules (ms), and for which (room, user).
    longest_late_ms: u64,
    longest_late_what: String,
    /// The same, counting only episodes when hush and the homeserver were up throughout
    /// and no rate limit was on.
    longest_late_clean_ms: u64,
    /// A restriction that was in force and seen lifted twice in a row (1 s apart) while
    /// the rules still asked for it.
    early_lifts: Vec<String>,
}

/// Whether faults are in progress, for the lateness figures.
#[derive(Debug, Default)]
struct Weather {
    /// Time of the last kill, restart or rate-limit change (ms): an episode that spans it
    /// is not clean.
    last_fault_ms: u64,
    faulty: bool,
}

fn seconds(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The chaos homeserver's folder; `scripts/test` stops it.
fn chaos_dir() -> PathBuf {
    std::env::var_os("HUSH_TEST_HS_DIR")
        .map(|d| PathBuf::from(d).join("chaos"))
        .unwrap_or_else(|| repo_root().join("target/test-homeserver-chaos"))
}

/// `scripts/synapse start DIR [PORT]`, with Synapse's default message rate limit if asked.
fn synapse_start(dir: &Path, port: Option<u16>, rate_limited: bool) -> String {
    let mut cmd = std::process::Command::new(repo_root().join("scripts/synapse"));
    cmd.arg("start").arg(dir);
    if let Some(p) = port {
        cmd.arg(p.to_string());
    }
    let out = cmd
        .env("HUSH_SYNAPSE_RATE_LIMITED", if rate_limited { "1" } else { "" })
        .env("HUSH_SYNAPSE_MSC4293", "")
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run scripts/synapse start");
    assert!(out.status.success(), "scripts/synapse start failed");
    String::from_utf8(out.stdout).expect("utf-8").trim().to_owned()
}

fn synapse_stop(dir: &Path) {
    let status = std::process::Command::new(repo_root().join("scripts/synapse")).arg("stop").arg(dir).status();
    assert!(status.is_ok_and(|s| s.success()), "scripts/synapse stop failed");
}

async fn cast(api: &Api, prefix: &str) -> Cast {
    let moderator = api.register(&format!("{prefix}mod")).await;
    let bot_password = format!("{prefix}-bot-secret");
    let bot = api.register_with(&format!("{prefix}bot"), &bot_password).await;
    let mut targets = Vec::new();
    for g in 0..GROUPS {
        for c in ['a', 'b', 'c'] {
            targets.push(api.register(&format!("{prefix}g{g}{c}")).await);
        }
    }
    let mut hand = Vec::new();
    for i in 0..HAND_USERS {
        hand.push(api.register(&format!("{prefix}h{i}")).await);
    }
    let mut bystanders = Vec::new();
    for i in 0..BYSTANDERS {
        bystanders.push(api.register(&format!("{prefix}b{i}")).await);
    }
    Cast { prefix: prefix.to_owned(), moderator, bot, bot_password, targets, hand, bystanders }
}

impl Cast {
    fn members(&self) -> impl Iterator<Item = &Account> {
        self.targets.iter().chain(&self.hand).chain(&self.bystanders)
    }
}

/// Rooms: management, two lists, `ROOMS` protected rooms everyone joins.
struct Rooms {
    management: String,
    lists: Vec<String>,
    protected: Vec<String>,
}

async fn rooms(api: &Api, cast: &Cast) -> Rooms {
    let m = &cast.moderator;
    let bot = cast.bot.user.as_str();
    let public = |name: &str| json!({"name": name, "preset": "public_chat", "invite": [bot]});
    let management = api.create_room(m, json!({"name": "management", "preset": "private_chat", "invite": [bot]})).await;
    let mut lists = Vec::new();
    for i in 0..LISTS {
        lists.push(api.create_room(m, public(&format!("list {i}"))).await);
    }
    let mut protected = Vec::new();
    for i in 0..ROOMS {
        let room = api.create_room(m, public(&format!("room {i}"))).await;
        let mut pl = api.state(m, &room, "m.room.power_levels", "").await;
        pl["users"][bot] = 100.into();
        api.put_state(m, &room, "m.room.power_levels", "", pl).await;
        for member in cast.members() {
            api.join(member, &room).await;
        }
        protected.push(room);
    }
    Rooms { management, lists, protected }
}

fn write_config(dir: &Path, hs_url: &str, cast: &Cast, rooms: &Rooms) -> PathBuf {
    let quoted = |v: &[String]| v.iter().map(|r| format!("\"{r}\"")).collect::<Vec<_>>().join(", ");
    let text = format!(
        "homeserver_url: \"{hs_url}\"\nuser_id: \"{}\"\npassword: \"{}\"\ndata_dir: \"{}\"\n\
         management_room: \"{}\"\npolicy_lists: [{}]\ndefault_policy_list: \"{}\"\nprotected_rooms: [{}]\n\
         protected_users: [\"{}\"]\nsafety:\n  max_new_restrictions: 1000\n  max_room_share: 1.0\n",
        cast.bot.user,
        cast.bot_password,
        dir.join("data").display(),
        rooms.management,
        quoted(&rooms.lists),
        rooms.lists[0],
        quoted(&rooms.protected),
        cast.bystanders[0].user,
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// Starts hush and waits until it says every room and list is loaded.
async fn start_hush(config: &Path, dir: &Path) -> BotProcess {
    let hush = BotProcess::start(config, dir);
    let end = Instant::now() + Duration::from_secs(120);
    while !hush.log_text().contains("every protected room and policy list is loaded") {
        assert!(Instant::now() < end, "hush never finished loading; log:\n{}", hush.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    hush
}

/// One random step of the moderators and members.
async fn step(api: &Api, cast: &Cast, rooms: &Rooms, model: &Mutex<Model>, rng: &mut Rng, figures: &Mutex<Figures>) {
    let m = &cast.moderator;
    let now = now_ms();
    let roll = rng.below(100);
    if roll < 55 {
        // A rule is added, changed (recommendation or expiry, never its entity) or removed.
        let list = rng.below(LISTS as u64) as usize;
        let live: Vec<Rule> = model.lock().unwrap().changeable(list, now);
        let change = rng.below(100);
        if live.is_empty() || change < 45 {
            let key = model.lock().unwrap().fresh_key();
            let entity = match rng.below(100) {
                0..=4 => cast.bystanders[0].user.clone(),
                5..=7 => m.user.clone(),
                8..=39 => format!("@{}g{}?:localhost", cast.prefix, rng.below(GROUPS as u64)),
                _ => rng.pick(&cast.targets).user.clone(),
            };
            let rule = Rule { list, key, entity, ban: rng.below(100) < 25, expiry: random_expiry(rng, now) };
            let ev = api.put_state(m, &rooms.lists[list], "m.policy.rule.user", &rule.key, rule.content()).await;
            model.lock().unwrap().set(rule, ev);
        } else if change < 75 {
            let mut rule = rng.pick(&live).clone();
            if rng.below(2) == 0 {
                rule.ban = !rule.ban;
            } else {
                rule.expiry = random_expiry(rng, now);
            }
            let ev = api.put_state(m, &rooms.lists[list], "m.policy.rule.user", &rule.key, rule.content()).await;
            model.lock().unwrap().set(rule, ev);
        } else if change < 90 {
            let rule = rng.pick(&live).clone();
            api.put_state(m, &rooms.lists[list], "m.policy.rule.user", &rule.key, json!({})).await;
            model.lock().unwrap().remove(list, &rule.key);
        } else {
            // Redacting the rule's event is removing it.
            let rule = rng.pick(&live).clone();
            let event_id = model.lock().unwrap().event_of(list, &rule.key);
            api.redact(m, &rooms.lists[list], &event_id).await;
            model.lock().unwrap().remove(list, &rule.key);
        }
        figures.lock().unwrap().rule_changes += 1;
    } else if roll < 80 {
        // A moderator sets a level by hand: a hand user's, or a target's that no rule names.
        let room = rng.pick(&rooms.protected).clone();
        let user = if rng.below(2) == 0 {
            Some(rng.pick(&cast.hand).user.clone())
        } else {
            let free: Vec<String> = {
                let model = model.lock().unwrap();
                cast.targets.iter().map(|t| t.user.clone()).filter(|u| model.unnamed(u, now)).collect()
            };
            (!free.is_empty()).then(|| rng.pick(&free).clone())
        };
        if let Some(user) = user {
            let level = [None, Some(1), Some(5), Some(10), Some(20)][rng.below(5) as usize];
            let mut pl = api.state(m, &room, "m.room.power_levels", "").await;
            let read = pl.clone();
            match level {
                Some(l) => pl["users"][&user] = l.into(),
                None => {
                    pl["users"].as_object_mut().map(|u| u.remove(&user));
                }
            }
            model.lock().unwrap().hand_levels.insert((room.clone(), user.clone()), level);
            let event_id = api.put_state(m, &room, "m.room.power_levels", "", pl).await;
            // Did this write replace a change hush made after the read above?
            let (replaced, replaced_id) = api.replaced(m, &room, &event_id).await;
            let mut model = model.lock().unwrap();
            if let Some(id) = replaced_id {
                model.hand_writes.push((room.clone(), user, id));
            }
            match replaced {
                Some(replaced) if replaced != read => {
                    for u in changed_users(&read, &replaced) {
                        model.clobbered.insert((room.clone(), u));
                    }
                }
                Some(_) => {}
                None => eprintln!("chaos: the homeserver gave no prev_content for {event_id}"),
            }
            model.hand_write_ms.insert(room, now_ms());
            figures.lock().unwrap().level_changes += 1;
        }
    } else {
        // A member leaves a room, or comes back to one they left (a ban keeps them out).
        let member = rng.pick(&cast.targets);
        let room = rng.pick(&rooms.protected);
        if rng.below(3) == 0 {
            api.leave(member, room).await;
        } else {
            api.try_join(member, room).await;
        }
        figures.lock().unwrap().membership_changes += 1;
    }
}

/// Users whose `users` entry differs between two power-levels contents.
fn changed_users(a: &Value, b: &Value) -> Vec<String> {
    let mut users: Vec<String> =
        [a, b].iter().filter_map(|v| v["users"].as_object()).flat_map(|u| u.keys().cloned()).collect();
    users.sort();
    users.dedup();
    users.retain(|u| a["users"].get(u) != b["users"].get(u));
    users
}

/// No expiry (half the time), or one from 5 s to a minute ahead.
fn random_expiry(rng: &mut Rng, now: u64) -> Option<u64> {
    (rng.below(2) == 0).then(|| now + 5_000 + rng.below(55_000))
}

/// What the protected rooms hold now: (room, user) -> (membership, level).
async fn observe(api: &Api, cast: &Cast, rooms: &Rooms) -> Option<HashMap<(String, String), (String, Option<i64>)>> {
    let mut out = HashMap::new();
    for room in &rooms.protected {
        let state = api.try_room_state(&cast.moderator, room).await?;
        let pl = state
            .iter()
            .find(|e| e["type"] == "m.room.power_levels")
            .map(|e| e["content"].clone())
            .unwrap_or(Value::Null);
        for member in cast.members() {
            let membership = state
                .iter()
                .find(|e| e["type"] == "m.room.member" && e["state_key"] == member.user.as_str())
                .and_then(|e| e["content"]["membership"].as_str())
                .unwrap_or("leave")
                .to_owned();
            let level = pl["users"].get(&member.user).and_then(Value::as_i64);
            out.insert((room.clone(), member.user.clone()), (membership, level));
        }
    }
    Some(out)
}

/// Whether what a (room, user) holds is what the rules ask, and a short description if not.
fn disagreement(model: &Model, room: &str, user: &str, seen: &(String, Option<i64>), now: u64) -> Option<String> {
    let (membership, level) = seen;
    let key = (room.to_owned(), user.to_owned());
    if model.clobbered.contains(&key) || model.forked.contains(&key) {
        return None;
    }
    let want = model.expect(user, now);
    let hand = model.hand_levels.get(&(room.to_owned(), user.to_owned())).copied().flatten();
    let ok = match want {
        // A member who left is not restricted; they are when they come back.
        Expect::Ban => membership == "ban" || membership == "leave",
        Expect::Mute => membership == "leave" || (membership == "join" && *level == Some(-1)),
        Expect::Free => membership != "ban" && (membership == "leave" || *level == hand),
    };
    (!ok).then(|| format!("{user} in {room}: want {want:?} (hand level {hand:?}), holds {membership} at {level:?}"))
}

/// Samples the rooms every second and keeps the lateness figures.
async fn sample(
    api: Arc<Api>,
    cast: Arc<Cast>,
    rooms: Arc<Rooms>,
    model: Arc<Mutex<Model>>,
    figures: Arc<Mutex<Figures>>,
    weather: Arc<Mutex<Weather>>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    // (room, user) -> since when it disagrees, and whether it was restricted as asked before.
    let mut late: HashMap<(String, String), u64> = HashMap::new();
    let mut restricted_as_asked: HashMap<(String, String), bool> = HashMap::new();
    let mut lifted_once: HashMap<(String, String), bool> = HashMap::new();
    while !*stop.borrow() {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let Some(seen) = observe(&api, &cast, &rooms).await else { continue };
        let now = now_ms();
        let model = model.lock().unwrap();
        let (last_fault, faulty) = {
            let w = weather.lock().unwrap();
            (w.last_fault_ms, w.faulty)
        };
        let mut figures = figures.lock().unwrap();
        for (key, holds) in &seen {
            let (room, user) = key;
            let want = model.expect(user, now);
            let wrong = disagreement(&model, room, user, holds, now);
            match wrong {
                Some(_) => {
                    let since = *late.entry(key.clone()).or_insert(now);
                    let lasted = now - since;
                    if lasted > figures.longest_late_ms {
                        figures.longest_late_ms = lasted;
                        figures.longest_late_what = wrong.clone().unwrap_or_default();
                    }
                    if since > last_fault && !faulty {
                        figures.longest_late_clean_ms = figures.longest_late_clean_ms.max(lasted);
                    }
                }
                None => {
                    late.remove(key);
                }
            }
            // An early lift: restricted as asked before, now free while still asked, twice
            // in a row, and no hand write to the room in the last 3 s (a moderator's
            // read-modify-write may briefly undo a mute; hush mutes again).
            let free_now = holds.0 == "join" && holds.1 != Some(-1);
            let asked = matches!(want, Expect::Mute | Expect::Ban)
                && model.restriction_lasts(user, now + 2_000)
                && holds.0 == "join";
            // A pair a moderator's stale write overwrote is not judged (see `clobbered`).
            let quiet = model.hand_write_ms.get(room).is_none_or(|t| now > t + 3_000)
                && !model.clobbered.contains(key)
                && !model.forked.contains(key);
            if asked && free_now && restricted_as_asked.get(key) == Some(&true) && quiet {
                if lifted_once.insert(key.clone(), true) == Some(true) {
                    figures.early_lifts.push(format!("{user} in {room} at {now}"));
                    restricted_as_asked.insert(key.clone(), false);
                }
            } else {
                lifted_once.remove(key);
                restricted_as_asked.insert(key.clone(), wrong.is_none() && asked);
            }
        }
    }
}

/// The ledger's rows in force: (room, user, kind) -> overridden.
fn ledger_rows(data: &Path) -> BTreeMap<(String, String, String), (String, bool)> {
    let db =
        rusqlite::Connection::open_with_flags(data.join("ledger.sqlite3"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the ledger");
    let mut stmt = db.prepare("SELECT room_id, user_id, kind, phase, overridden FROM changes").expect("query");
    let rows = stmt
        .query_map([], |r| {
            Ok((
                (r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?),
                (r.get(3)?, r.get::<_, i64>(4)? != 0),
            ))
        })
        .expect("rows");
    rows.map(|r| r.expect("row")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_nothing_lost_nothing_stuck() {
    let secs = seconds("HUSH_CHAOS_SECS", 45);
    let seed = seconds("HUSH_CHAOS_SEED", now_ms());
    eprintln!("chaos: {secs} s, seed {seed} (HUSH_CHAOS_SEED={seed} replays the moderators' choices)");
    let dir = chaos_dir();
    let t0 = Instant::now();
    let say = |what: &str| eprintln!("chaos {:>6.1} s: {what}", t0.elapsed().as_secs_f64());
    // A server left over from an interrupted run may still have its rate limits on.
    synapse_stop(&dir);
    let url = synapse_start(&dir, None, false);
    let port: u16 = url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port in the url");
    let api = Arc::new(Api::new(&url));
    let prefix = common::unique("c");
    let cast = Arc::new(cast(&api, &prefix).await);
    say("accounts registered");
    let rooms = Arc::new(rooms(&api, &cast).await);
    say("rooms created and joined");
    let work = tempfile::tempdir().unwrap();
    let config = write_config(work.path(), &url, &cast, &rooms);
    let mut hush = Some(start_hush(&config, work.path()).await);
    say("hush loaded");
    let mut logs = Vec::new();

    let model = Arc::new(Mutex::new(Model::new(&cast.moderator.user, &cast.bot.user, &cast.bystanders[0].user)));
    let figures = Arc::new(Mutex::new(Figures::default()));
    let weather = Arc::new(Mutex::new(Weather::default()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn(sample(
        api.clone(),
        cast.clone(),
        rooms.clone(),
        model.clone(),
        figures.clone(),
        weather.clone(),
        stop_rx.clone(),
    ));
    let driver = {
        let (api, cast, rooms, model, figures) =
            (api.clone(), cast.clone(), rooms.clone(), model.clone(), figures.clone());
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut rng = Rng::new(seed);
            while !*stop.borrow() {
                step(&api, &cast, &rooms, &model, &mut rng, &figures).await;
                tokio::time::sleep(Duration::from_millis(200 + rng.below(600))).await;
            }
        })
    };

    // The chaos: kill -9 every 5 to 40 s (5 to 15 s in a short run), and now and then
    // restart the homeserver, with its default rate limits on until the next restart.
    let mut rng = Rng::new(seed ^ 0x9e37_79b9_7f4a_7c15);
    let end = Instant::now() + Duration::from_secs(secs);
    let (kill_min, kill_span) = if secs <= 120 { (5, 10) } else { (5, 35) };
    let mut next_restart = Instant::now() + Duration::from_secs(secs / 3);
    let mut rate_limited = false;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(kill_min + rng.below(kill_span))).await;
        if Instant::now() >= end {
            break;
        }
        let fault = |faulty: bool| {
            let mut w = weather.lock().unwrap();
            w.last_fault_ms = now_ms();
            w.faulty = faulty;
        };
        if Instant::now() >= next_restart {
            fault(true);
            synapse_stop(&dir);
            tokio::time::sleep(Duration::from_millis(rng.below(3_000))).await;
            rate_limited = !rate_limited;
            synapse_start(&dir, Some(port), rate_limited);
            let mut f = figures.lock().unwrap();
            f.homeserver_restarts += 1;
            f.rate_limited_periods += u64::from(rate_limited);
            drop(f);
            fault(rate_limited);
            say(if rate_limited {
                "homeserver restarted, rate limits on"
            } else {
                "homeserver restarted, rate limits off"
            });
            next_restart = Instant::now() + Duration::from_secs(secs / 3);
        } else if let Some(h) = hush.take() {
            fault(true);
            logs.push(h.log.clone());
            h.kill9();
            figures.lock().unwrap().kills += 1;
            tokio::time::sleep(Duration::from_millis(rng.below(5_000))).await;
            hush = Some(start_hush(&config, work.path()).await);
            say("hush killed (-9) and started again");
            fault(rate_limited);
        }
    }
    stop_tx.send(true).unwrap();
    driver.await.unwrap();
    if rate_limited {
        // Settle with the limits lifted, as an operator's homeserver would be for hush.
        synapse_stop(&dir);
        synapse_start(&dir, Some(port), false);
        figures.lock().unwrap().homeserver_restarts += 1;
    }

    // A moderator's write concurrent with one of hush's (both replacing the same event) is a
    // fork in the room's history, which state resolution settles by keeping one whole
    // power-levels event: the moderator's level may be lost, and neither writer is told
    // (Matrix has no compare-and-swap). Such (room, user) pairs are not judged; counted.
    {
        let writes = model.lock().unwrap().hand_writes.clone();
        for room in &rooms.protected {
            let hush_replaced: std::collections::HashSet<String> = api
                .replaced_by(&cast.moderator, room, "m.room.power_levels", &cast.bot.user)
                .await
                .into_iter()
                .collect();
            let mut model = model.lock().unwrap();
            for (r, user, replaced) in writes.iter().filter(|(r, _, _)| r == room) {
                if hush_replaced.contains(replaced) {
                    model.forked.insert((r.clone(), user.clone()));
                }
            }
        }
    }
    say("chaos over: settling");
    // Everyone comes back to every room (hush restricts a member who left when they
    // come back), then everything settles.
    let now = now_ms();
    let last_expiry = model.lock().unwrap().last_expiry().unwrap_or(now).max(now);
    for room in &rooms.protected {
        for member in cast.members() {
            api.try_join(member, room).await;
        }
    }
    let settle_end = Instant::now() + Duration::from_secs(180);
    let mut wrong: Vec<String>;
    loop {
        let now = now_ms();
        wrong = match observe(&api, &cast, &rooms).await {
            Some(seen) => {
                // Unbanned meanwhile: back in the room.
                for ((room, user), (membership, _)) in &seen {
                    if membership == "leave" {
                        if let Some(member) = cast.members().find(|m| &m.user == user) {
                            api.try_join(member, room).await;
                        }
                    }
                }
                let model = model.lock().unwrap();
                let mut w: Vec<String> =
                    seen.iter().filter_map(|((r, u), h)| disagreement(&model, r, u, h, now)).collect();
                // Back in the room by now: a restriction must show.
                w.extend(
                    seen.iter().filter(|(_, (m, _))| m == "leave").map(|((r, u), _)| format!("{u} is not back in {r}")),
                );
                w
            }
            None => vec!["the homeserver does not answer".to_owned()],
        };
        if (wrong.is_empty() && now > last_expiry + 2_000) || Instant::now() >= settle_end {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    say("settled");
    stop_tx.send(true).ok();
    sampler.await.unwrap();

    // The ledger holds exactly what is in force, nothing else.
    let model = model.lock().unwrap();
    let now = now_ms();
    let mut ledger_wrong = Vec::new();
    let rows = ledger_rows(&work.path().join("data"));
    for ((room, user, kind), (phase, overridden)) in &rows {
        if model.clobbered.contains(&(room.clone(), user.clone())) {
            continue;
        }
        let want = model.expect(user, now);
        let fits = match kind.as_str() {
            "ban" => want == Expect::Ban,
            // A banned user's mute is kept until neither rule applies (README).
            "mute-power-level" => want == Expect::Mute || want == Expect::Ban,
            _ => false,
        };
        if !fits || phase != "applied" || *overridden {
            ledger_wrong.push(format!(
                "ledger: {kind} of {user} in {room} ({phase}, overridden {overridden}) but want {want:?}"
            ));
        }
    }
    for room in &rooms.protected {
        for member in cast.members() {
            if model.clobbered.contains(&(room.clone(), member.user.clone())) {
                continue;
            }
            let kind = match model.expect(&member.user, now) {
                Expect::Ban => "ban",
                Expect::Mute => "mute-power-level",
                Expect::Free => continue,
            };
            if !rows.contains_key(&(room.clone(), member.user.clone(), kind.to_owned())) {
                ledger_wrong.push(format!("ledger: no {kind} of {} in {room}", member.user));
            }
        }
    }
    if let Some(h) = &hush {
        logs.push(h.log.clone());
    }
    let log_text: String = logs.iter().map(|l| std::fs::read_to_string(l).unwrap_or_default()).collect();
    let rate_limited_writes = log_text.matches("rate limited, retrying").count();
    let f = figures.lock().unwrap();
    // Early lifts are reported, not judged: a moderator's write from a stale state can
    // free a member for a moment without hush (RELIABILITY.md).
    let violations = wrong.len() + ledger_wrong.len();
    let clobbered = model.clobbered.len();
    let forked = model.forked.len();
    eprintln!(
        "chaos figures: {secs} s, seed {seed}: {} rule changes, {} level changes by hand, {} membership changes, \
         {} kill -9, {} homeserver restarts ({} with rate limits on), {rate_limited_writes} rate-limited writes retried by hush, \
         {violations} invariant violations, {} early lifts seen (reported, not judged), {clobbered} (room, member) entries a moderator's write overwrote after hush changed them (not judged), {forked} hand-set levels in a fork with a concurrent write of hush's (not judged); longest late: {} ms ({}), {} ms with no fault under way",
        f.rule_changes,
        f.level_changes,
        f.membership_changes,
        f.kills,
        f.homeserver_restarts,
        f.rate_limited_periods,
        f.early_lifts.len(),
        f.longest_late_ms,
        f.longest_late_what,
        f.longest_late_clean_ms,
    );
    for w in wrong.iter().chain(&ledger_wrong) {
        eprintln!("  violation: {w}");
    }
    for w in &f.early_lifts {
        eprintln!("  early lift seen: {w}");
    }
    if violations > 0 {
        if let Some(h) = hush.take() {
            h.kill9();
        }
        let kept = work.keep();
        eprintln!("chaos: hush's logs and data_dir are kept in {}", kept.display());
        panic!("{violations} invariant violations (seed {seed}); the rules now: {:#?}", model.rules_now(now));
    }
    if let Some(h) = hush.take() {
        h.kill9();
    }
    synapse_stop(&dir);
}
