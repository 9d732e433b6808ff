//! End-to-end benchmark of hush against a local Synapse (issue 6), in one run.
//!
//! ```sh
//! cargo build --release --bin hush
//! cargo run --release --example e2e_bench -- [--rooms 20] [--reps 10] [--rules 20000] [--windows default,0]
//! # two hush binaries (say before and after a change) against one filled list, one run:
//! target/release/examples/e2e_bench --hush before=/tmp/hush-old,after=target/release/hush
//! ```
//!
//! The program starts its own Synapse (`scripts/synapse start` in a temporary folder, stopped
//! at the end), registers a moderator, a bot account and target users, creates a management
//! room, a policy list and `--rooms` protected rooms (the bot at power level 100, every
//! target a member of every protected room), fills the list with `--rules` rules, and then:
//!
//! 1. **floor**: the moderator's plain client mutes a user in every protected room by
//!    read-modify-write of `m.room.power_levels` (GET then PUT), one room after the other
//!    and all rooms at once; timed by the writer (first request to last PUT returned) and
//!    by the same poller as hush (below), running alongside;
//! 2. **start-up**: starts `target/release/hush` with a fresh `data_dir` (cold) and, for
//!    every further window, restarts it on the same `data_dir` (warm); a rule added while
//!    hush was down must be enforced right after start. Times: process start to login done
//!    (log `hush is running`), start-up notice seen, list loaded (log), all protected rooms
//!    loaded (log), the pending mute in force in every room (polled). Resident memory from
//!    `/proc/PID/status` (peak of samples, `VmHWM`, `VmRSS` 5 s after the mute);
//! 3. **rule to mute**: for each `mute.batch_window_ms` in `--windows`, `--reps` times: the
//!    moderator sends an `m.mute` rule for a fresh member, then polls the protected rooms
//!    (one request in flight) until every room's power levels show the mute.
//!
//! With several `--hush` binaries, steps 2 and 3 run for each in turn (each with its own
//! fresh `data_dir`) on the same homeserver and list, and the floor is measured again
//! between them, so one fill of the list serves a before/after comparison.
//!
//! The poller (`GET .../state/m.room.power_levels/`, one request in flight, rooms in turn)
//! measures hush and the floor alike, so the `observed` ratio compares like with like; its
//! resolution is one polling round over the rooms not yet muted. The floor's `writer`
//! figure is exact and has no polling error; the ratio over it is the stricter one.
#![recursion_limit = "256"]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use matrix_sdk::config::RequestConfig;
use matrix_sdk::ruma::api::client::account::register;
use matrix_sdk::ruma::api::client::membership::join_room_by_id;
use matrix_sdk::ruma::api::client::message::get_message_events;
use matrix_sdk::ruma::api::client::room::create_room;
use matrix_sdk::ruma::api::client::state::{get_state_event_for_key, send_state_event};
use matrix_sdk::ruma::api::client::uiaa;
use matrix_sdk::ruma::serde::Raw;
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId};
use matrix_sdk::Client;
use serde_json::{json, Value};

/// No single wait (a poll, a start-up, a stop) may take longer than this.
const DEADLINE: Duration = Duration::from_secs(300);
/// The whole run may not take longer than this.
const RUN_DEADLINE: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
struct Opts {
    rooms: usize,
    reps: usize,
    rules: usize,
    /// `None` = the key left out of the config (hush's default, 250 ms).
    windows: Vec<Option<u64>>,
    /// The hush binaries to compare, with their labels (one run each, in this order).
    hush: Vec<(String, PathBuf)>,
    /// Requests in flight while filling the list and joining rooms (1 is the fastest for
    /// Synapse on SQLite, which slows down with concurrent writes).
    concurrency: usize,
    keep: bool,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn parse_opts() -> Result<Opts> {
    let mut o = Opts {
        rooms: 20,
        reps: 10,
        rules: 20_000,
        windows: vec![None, Some(0)],
        hush: vec![("hush".to_owned(), repo_root().join("target/release/hush"))],
        concurrency: 1,
        keep: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--rooms" => o.rooms = val()?.parse()?,
            "--reps" => o.reps = val()?.parse()?,
            "--rules" => o.rules = val()?.parse()?,
            "--concurrency" => o.concurrency = val()?.parse::<usize>()?.max(1),
            "--hush" => {
                o.hush = val()?
                    .split(',')
                    .enumerate()
                    .map(|(i, b)| match b.split_once('=') {
                        Some((label, path)) => (label.to_owned(), PathBuf::from(path)),
                        None => (if i == 0 { "hush".to_owned() } else { format!("hush{}", i + 1) }, PathBuf::from(b)),
                    })
                    .collect()
            }
            "--windows" => {
                o.windows = val()?
                    .split(',')
                    .map(|w| if w == "default" { Ok(None) } else { w.parse().map(Some) })
                    .collect::<Result<_, _>>()?
            }
            "--keep" => o.keep = true,
            "-h" | "--help" => {
                println!(
                    "e2e_bench [--rooms N] [--reps N] [--rules N] [--windows default,0,10] [--concurrency N] [--hush [LABEL=]PATH[,[LABEL=]PATH...]] [--keep]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other} (try --help)"),
        }
    }
    if o.windows.is_empty() || o.hush.is_empty() || o.rooms == 0 || o.reps == 0 {
        bail!("--windows, --hush, --rooms and --reps must not be empty or zero");
    }
    Ok(o)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------- homeserver

/// The Synapse this run started; stopped when dropped.
struct Synapse {
    dir: PathBuf,
    url: String,
}

impl Synapse {
    fn start(dir: &Path) -> Result<Synapse> {
        let out = Command::new(repo_root().join("scripts/synapse"))
            .arg("start")
            .arg(dir)
            .stderr(Stdio::inherit())
            .output()
            .context("run scripts/synapse start")?;
        if !out.status.success() {
            bail!("scripts/synapse start failed");
        }
        let url = String::from_utf8(out.stdout)?.trim().to_owned();
        if !url.starts_with("http://127.0.0.1:") {
            bail!("unexpected homeserver url {url}");
        }
        Ok(Synapse { dir: dir.to_owned(), url })
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts/synapse")).arg("stop").arg(&self.dir).status();
    }
}

/// A logged-in account with a plain matrix-sdk client (no sync, no store).
#[derive(Clone)]
struct Account {
    client: Client,
    user_id: OwnedUserId,
    password: String,
}

async fn new_client(url: &str) -> Result<Client> {
    Ok(Client::builder()
        .homeserver_url(url)
        .request_config(RequestConfig::new().retry_limit(3).timeout(Duration::from_secs(60)))
        .build()
        .await?)
}

async fn register_account(url: &str, name: &str) -> Result<Account> {
    let password = format!("pw-{name}-{}", now_ms());
    let client = new_client(url).await?;
    let mut req = register::v3::Request::new();
    req.username = Some(name.to_owned());
    req.password = Some(password.clone());
    req.initial_device_display_name = Some("e2e_bench".into());
    req.auth = Some(uiaa::AuthData::Dummy(uiaa::Dummy::new()));
    client.matrix_auth().register(req).await.with_context(|| format!("register {name}"))?;
    let user_id = client.user_id().context("no user id")?.to_owned();
    Ok(Account { client, user_id, password })
}

impl Account {
    async fn create_room(&self, name: &str, power_users: Value) -> Result<OwnedRoomId> {
        let mut req = create_room::v3::Request::new();
        req.name = Some(name.to_owned());
        req.preset = Some(create_room::v3::RoomPreset::PublicChat);
        req.power_level_content_override = Some(Raw::new(&json!({ "users": power_users }))?.cast_unchecked());
        Ok(self.client.send(req).await.with_context(|| format!("create room {name}"))?.room_id)
    }

    async fn join(&self, room: &OwnedRoomId) -> Result<()> {
        self.client
            .send(join_room_by_id::v3::Request::new(room.clone()))
            .await
            .with_context(|| format!("{} joins {room}", self.user_id))?;
        Ok(())
    }

    async fn put_state(&self, room: &OwnedRoomId, ty: &str, key: &str, content: &Value) -> Result<String> {
        let req = send_state_event::v3::Request::new_raw(
            room.clone(),
            ty.into(),
            key.to_owned(),
            Raw::new(content)?.cast_unchecked(),
        );
        Ok(self.client.send(req).await.with_context(|| format!("put {ty} in {room}"))?.event_id.to_string())
    }

    /// The power-levels content, or with `event` the whole event (origin_server_ts, sender).
    async fn power_levels(&self, room: &OwnedRoomId, event: bool) -> Result<Value> {
        let mut req =
            get_state_event_for_key::v3::Request::new(room.clone(), "m.room.power_levels".into(), String::new());
        if event {
            req.format = get_state_event_for_key::v3::StateEventFormat::Event;
        }
        let resp = self.client.send(req).await.with_context(|| format!("get power levels of {room}"))?;
        Ok(serde_json::from_str(resp.event_or_content.get())?)
    }

    /// Read-modify-write of one user's level (None = remove the entry); returns nothing.
    async fn set_level(&self, room: &OwnedRoomId, user: &str, level: Option<i64>) -> Result<()> {
        let mut pl = self.power_levels(room, false).await?;
        let users = pl
            .as_object_mut()
            .context("power levels are not an object")?
            .entry("users")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .context("users is not an object")?;
        match level {
            Some(l) => users.insert(user.to_owned(), l.into()),
            None => users.remove(user),
        };
        self.put_state(room, "m.room.power_levels", "", &pl).await?;
        Ok(())
    }
}

fn level_of(content: &Value, user: &str) -> Option<i64> {
    content.get("users")?.get(user)?.as_i64()
}

fn is_muted(content: &Value, user: &str) -> bool {
    let send = content.get("events_default").and_then(Value::as_i64).unwrap_or(0);
    level_of(content, user).is_some_and(|l| l < send)
}

// ---------------------------------------------------------------- hush process

struct Hush {
    child: Child,
    log: PathBuf,
    log_pos: u64,
    log_text: String,
}

impl Hush {
    fn start(bin: &Path, config: &Path, log: PathBuf) -> Result<Hush> {
        let file = std::fs::File::create(&log)?;
        let child = Command::new(bin)
            .args(["run", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        Ok(Hush { child, log, log_pos: 0, log_text: String::new() })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads what the log gained since the last call.
    fn read_log(&mut self) -> &str {
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            use std::io::Seek;
            if f.seek(std::io::SeekFrom::Start(self.log_pos)).is_ok() {
                let mut buf = String::new();
                if let Ok(n) = f.read_to_string(&mut buf) {
                    self.log_pos += n as u64;
                    self.log_text.push_str(&buf);
                }
            }
        }
        &self.log_text
    }

    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then SIGKILL after 30 s.
    async fn stop(mut self) -> Result<()> {
        let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            if self.exited() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        bail!("hush did not stop within 30 s of SIGTERM")
    }
}

impl Drop for Hush {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// (VmRSS, VmHWM) in KiB.
fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

// ---------------------------------------------------------------- setup

struct World {
    opts: Opts,
    hs: Synapse,
    work: PathBuf,
    moderator: Account,
    bot: Account,
    management: OwnedRoomId,
    list: OwnedRoomId,
    protected: Vec<OwnedRoomId>,
    /// The floor's victim.
    floor_user: Account,
    /// Per binary and window: one user muted while hush is down (start-up), then `reps` users.
    targets: Vec<(Account, Vec<Account>)>,
}

async fn setup(opts: Opts, hs: Synapse, work: PathBuf) -> Result<World> {
    let t = Instant::now();
    let url = hs.url.clone();
    let moderator = register_account(&url, "moderator").await?;
    let bot = register_account(&url, "hush").await?;
    bot.client.matrix_auth().logout().await.context("log the bot's registration device out")?;
    let floor_user = register_account(&url, "floor").await?;
    let mut targets = Vec::new();
    for w in 0..opts.windows.len() * opts.hush.len() {
        let start = register_account(&url, &format!("startup{w}")).await?;
        let mut reps = Vec::new();
        for r in 0..opts.reps {
            reps.push(register_account(&url, &format!("target{w}x{r}")).await?);
        }
        targets.push((start, reps));
    }
    eprintln!("registered {} accounts in {:.1} s", 3 + targets.len() * (1 + opts.reps), t.elapsed().as_secs_f64());

    let t = Instant::now();
    let management = moderator.create_room("management", json!({})).await?;
    let list = moderator.create_room("policies", json!({})).await?;
    let mut protected = Vec::new();
    for i in 0..opts.rooms {
        protected.push(moderator.create_room(&format!("protected {i}"), json!({ bot.user_id.as_str(): 100 })).await?);
    }
    eprintln!("created {} rooms in {:.1} s", opts.rooms + 2, t.elapsed().as_secs_f64());

    // Every target (and the floor user) joins every protected room.
    let t = Instant::now();
    let mut joiners: Vec<(Account, OwnedRoomId)> = Vec::new();
    let members = std::iter::once(&floor_user).chain(targets.iter().flat_map(|(s, r)| std::iter::once(s).chain(r)));
    for u in members {
        for room in &protected {
            joiners.push((u.clone(), room.clone()));
        }
    }
    let n = joiners.len();
    run_concurrently(opts.concurrency, joiners, |(u, room)| async move { u.join(&room).await }).await?;
    eprintln!("{n} joins in {:.1} s", t.elapsed().as_secs_f64());
    Ok(World { opts, hs, work, moderator, bot, management, list, protected, floor_user, targets })
}

/// Runs `f` over `items` with at most `n` in flight; the first error wins.
async fn run_concurrently<T, F, Fut>(n: usize, items: Vec<T>, f: F) -> Result<()>
where
    T: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let queue = Arc::new(std::sync::Mutex::new(items.into_iter().collect::<std::collections::VecDeque<T>>()));
    let f = Arc::new(f);
    let mut set: tokio::task::JoinSet<Result<()>> = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (queue, f) = (queue.clone(), f.clone());
        set.spawn(async move {
            loop {
                let Some(item) = queue.lock().unwrap().pop_front() else { return Ok(()) };
                f(item).await?;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(())
}

/// Fills the list with `n` filler rules (users of another server, 1 in 100 a glob), none
/// of which matches anyone in the protected rooms.
///
/// One at a time: concurrent state events in one room fork its DAG, and Synapse then
/// resolves state over the whole list at every merge, which made a 20,000-rule fill take
/// hours (about 4 rules/s at 2,000). In sequence Synapse stays near 50 rules/s.
async fn fill_list(w: &World) -> Result<Duration> {
    let t = Instant::now();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (m, list, total) = (w.moderator.clone(), w.list.clone(), w.opts.rules);
    run_concurrently(1, (0..total).collect(), move |i| {
        let (m, list, done) = (m.clone(), list.clone(), done.clone());
        async move {
            let entity = if i.is_multiple_of(100) {
                format!("@spam{i}*:example.org")
            } else {
                format!("@spammer{i}:example.org")
            };
            let recommendation = if i.is_multiple_of(4) { "m.mute" } else { "m.ban" };
            let content = json!({"entity": entity, "recommendation": recommendation, "reason": "bench filler"});
            m.put_state(&list, "m.policy.rule.user", &format!("filler-{i}"), &content).await?;
            let d = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if d.is_multiple_of(2000) {
                eprintln!("  {d}/{total} rules in {:.0} s", t.elapsed().as_secs_f64());
            }
            Ok(())
        }
    })
    .await?;
    Ok(t.elapsed())
}

async fn send_mute_rule(w: &World, user: &Account) -> Result<()> {
    let content = json!({"entity": user.user_id.as_str(), "recommendation": "m.mute", "reason": "bench"});
    w.moderator.put_state(&w.list, "m.policy.rule.user", &format!("bench-{}", user.user_id), &content).await?;
    Ok(())
}

fn write_config(w: &World, window: Option<u64>, data_dir: &str) -> Result<PathBuf> {
    let path = w.work.join("hush.yaml");
    let rooms: Vec<String> = w.protected.iter().map(|r| format!("  - \"{r}\"")).collect();
    let mut text = format!(
        "homeserver_url: \"{}\"\nuser_id: \"{}\"\npassword: \"{}\"\ndata_dir: \"{}\"\nmanagement_room: \"{}\"\npolicy_lists: [\"{}\"]\ndefault_policy_list: \"{}\"\nprotected_rooms:\n{}\n",
        w.hs.url,
        w.bot.user_id,
        w.bot.password,
        w.work.join(data_dir).display(),
        w.management,
        w.list,
        w.list,
        rooms.join("\n")
    );
    if let Some(ms) = window {
        text.push_str(&format!("mute:\n  batch_window_ms: {ms}\n"));
    }
    std::fs::write(&path, text)?;
    Ok(path)
}

// ---------------------------------------------------------------- measurements

/// One repetition: the writer's own clock (floor only: the last PUT returned) and what the
/// poller observed (the last room seen muted).
#[derive(Debug, Clone, Copy)]
struct Sample {
    writer_ms: Option<f64>,
    observed_ms: f64,
    /// hush only: until the moderator's rule PUT returned (part of hush's time, not the floor's).
    rule_put_ms: Option<f64>,
}

/// Mutes `user` by hand in every protected room (one room after the other or all at once),
/// with the same poller as for hush running alongside; then restores the rooms (not timed).
async fn floor(w: &World, concurrent: bool) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    let user = w.floor_user.user_id.to_string();
    for _ in 0..w.opts.reps {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let t0 = Instant::now();
        let (m, rooms, u) = (w.moderator.clone(), w.protected.clone(), user.clone());
        let writer = tokio::spawn(async move {
            if concurrent {
                let mut set = tokio::task::JoinSet::new();
                for room in rooms {
                    let (m, u) = (m.clone(), u.clone());
                    set.spawn(async move { m.set_level(&room, &u, Some(-1)).await });
                }
                while let Some(r) = set.join_next().await {
                    r??;
                }
            } else {
                for room in &rooms {
                    m.set_level(room, &u, Some(-1)).await?;
                }
            }
            anyhow::Ok(t0.elapsed())
        });
        let seen = wait_muted(w, &user, t0, &w.moderator.user_id).await?;
        let writer_ms = ms(writer.await??);
        out.push(Sample { writer_ms: Some(writer_ms), observed_ms: ms(seen), rule_put_ms: None });
        for room in &w.protected {
            w.moderator.set_level(room, &user, None).await?;
        }
    }
    Ok(out)
}

/// Polls (one request in flight, rooms in turn) until `user` is muted in every protected
/// room by `sender`; returns the time from `t0` until the last room was seen muted.
async fn wait_muted(w: &World, user: &str, t0: Instant, sender: &OwnedUserId) -> Result<Duration> {
    let mut remaining: Vec<&OwnedRoomId> = w.protected.iter().collect();
    let mut all = Duration::ZERO;
    let end = Instant::now() + DEADLINE;
    while !remaining.is_empty() {
        if Instant::now() > end {
            bail!("{user} still not muted in {} rooms after {DEADLINE:?}", remaining.len());
        }
        let mut still = Vec::new();
        for room in remaining {
            let ev = w.moderator.power_levels(room, true).await?;
            if is_muted(&ev["content"], user) {
                all = t0.elapsed();
                if ev["sender"].as_str() != Some(sender.as_str()) {
                    bail!("the mute of {user} in {room} was not sent by {sender}: {ev}");
                }
            } else {
                still.push(room);
            }
        }
        remaining = still;
    }
    Ok(all)
}

async fn rule_to_mute(w: &World, users: &[Account]) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    for u in users {
        // Let the previous batch and its echoes settle.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let t0 = Instant::now();
        send_mute_rule(w, u).await?;
        let rule_put_ms = Some(ms(t0.elapsed()));
        let seen = wait_muted(w, u.user_id.as_str(), t0, &w.bot.user_id).await?;
        let s = Sample { writer_ms: None, observed_ms: ms(seen), rule_put_ms };
        eprintln!("  {}: {:.0} ms", u.user_id, s.observed_ms);
        out.push(s);
    }
    Ok(out)
}

#[derive(Debug, Default)]
struct Startup {
    running: Option<Duration>,
    notice: Option<Duration>,
    list_loaded: Option<Duration>,
    rooms_loaded: Option<Duration>,
    enforced: Duration,
    peak_rss_kib: u64,
    hwm_kib: u64,
    settled_rss_kib: u64,
}

fn count(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

/// Starts hush and follows its start-up until `pending` (ruled while hush was down) is
/// muted in every protected room.
async fn start_hush(
    w: &World,
    binary: &Path,
    config: &Path,
    label: &str,
    pending: &Account,
) -> Result<(Hush, Startup)> {
    let log = w.work.join(format!("hush-{label}.log"));
    let since = now_ms();
    let t0 = Instant::now();
    let mut hush = Hush::start(binary, config, log)?;
    let mut s = Startup::default();
    let mut remaining: Vec<&OwnedRoomId> = w.protected.iter().collect();
    let mut last_notice_check = Instant::now();
    let end = t0 + DEADLINE;
    loop {
        if Instant::now() > end {
            bail!("hush start-up ({label}) not done within {DEADLINE:?}; log: {}", hush.log.display());
        }
        if hush.exited() {
            bail!("hush exited during start-up ({label}); log: {}", hush.log.display());
        }
        if let Some((rss, _)) = memory_kib(hush.pid()) {
            s.peak_rss_kib = s.peak_rss_kib.max(rss);
        }
        let elapsed = t0.elapsed();
        let text = hush.read_log();
        if s.running.is_none() && text.contains("hush is running") {
            s.running = Some(elapsed);
        }
        if s.list_loaded.is_none() && text.contains("policy list loaded") {
            s.list_loaded = Some(elapsed);
        }
        if s.rooms_loaded.is_none() && count(text, "protected room loaded") >= w.protected.len() {
            s.rooms_loaded = Some(elapsed);
        }
        if s.notice.is_none() && last_notice_check.elapsed() > Duration::from_millis(100) {
            last_notice_check = Instant::now();
            if notice_seen(w, since).await? {
                s.notice = Some(t0.elapsed());
            }
        }
        // Rooms in order, stopping at the first not muted yet: light while hush starts,
        // and one sweep once the mutes are out.
        while let Some(room) = remaining.first().copied() {
            let pl = w.moderator.power_levels(room, false).await?;
            if !is_muted(&pl, pending.user_id.as_str()) {
                break;
            }
            remaining.remove(0);
            if remaining.is_empty() {
                s.enforced = t0.elapsed();
            }
        }
        if remaining.is_empty() && s.notice.is_some() && s.rooms_loaded.is_some() && s.list_loaded.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    if let Some((rss, hwm)) = memory_kib(hush.pid()) {
        s.settled_rss_kib = rss;
        s.hwm_kib = hwm;
        s.peak_rss_kib = s.peak_rss_kib.max(rss);
    }
    Ok((hush, s))
}

/// Whether the bot's start-up notice (sent after `since`) is in the management room.
async fn notice_seen(w: &World, since: u64) -> Result<bool> {
    let mut req = get_message_events::v3::Request::backward(w.management.clone());
    req.limit = 10u32.into();
    let resp = w.moderator.client.send(req).await?;
    Ok(resp.chunk.iter().any(|raw| {
        let ev: Value = serde_json::from_str(raw.json().get()).unwrap_or_default();
        ev["sender"].as_str() == Some(w.bot.user_id.as_str())
            && ev["origin_server_ts"].as_u64().unwrap_or(0) >= since
            && ev["content"]["body"].as_str().is_some_and(|b| b.contains(" started"))
    }))
}

// ---------------------------------------------------------------- report

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[derive(Debug, Clone, Copy)]
struct Stats {
    median: f64,
    p90: f64,
    min: f64,
    max: f64,
}

fn stats(v: impl Iterator<Item = f64>) -> Stats {
    let mut v: Vec<f64> = v.collect();
    v.sort_by(f64::total_cmp);
    Stats {
        median: if v.len().is_multiple_of(2) && !v.is_empty() {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        } else {
            percentile(&v, 0.5)
        },
        p90: percentile(&v, 0.9),
        min: v.first().copied().unwrap_or(f64::NAN),
        max: v.last().copied().unwrap_or(f64::NAN),
    }
}

fn cell(s: Stats) -> String {
    format!("{:.0} / {:.0} ({:.0}-{:.0})", s.median, s.p90, s.min, s.max)
}

/// A table row; `floor` = (observed, writer) medians of the floor the ratios refer to.
fn row(name: &str, samples: &[Sample], floor: Option<(f64, f64)>) -> String {
    let observed = stats(samples.iter().map(|s| s.observed_ms));
    let writer = samples.iter().map(|s| s.writer_ms).collect::<Option<Vec<f64>>>().map(|v| stats(v.into_iter()));
    let ratio = match floor {
        Some((fo, fw)) => format!("{:.2}x | {:.2}x", observed.median / fo, observed.median / fw),
        None => "- | -".to_owned(),
    };
    let put = samples.iter().map(|s| s.rule_put_ms).collect::<Option<Vec<f64>>>().map(|v| stats(v.into_iter()));
    format!(
        "| {name} | {} | {} | {ratio} | {} |",
        writer.map_or("-".to_owned(), cell),
        cell(observed),
        put.map_or("-".to_owned(), cell)
    )
}

fn window_name(w: Option<u64>) -> String {
    match w {
        None => "default (250 ms)".to_owned(),
        Some(ms) => format!("{ms} ms"),
    }
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("-".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

// ---------------------------------------------------------------- main

async fn run(opts: Opts) -> Result<String> {
    for (_, path) in &opts.hush {
        if !path.exists() {
            bail!("{} not found: run `cargo build --release --bin hush` first", path.display());
        }
    }
    let tmp = tempfile::Builder::new().prefix("hush-e2e-bench-").tempdir()?;
    let (work, _tmp) = if opts.keep { (tmp.keep(), None) } else { (tmp.path().to_owned(), Some(tmp)) };
    eprintln!("work dir {}", work.display());
    let hs = Synapse::start(&work.join("synapse"))?;
    eprintln!("synapse at {}", hs.url);
    let load_before = loadavg();
    let w = setup(opts.clone(), hs, work.clone()).await?;

    eprintln!("filling the policy list with {} rules", w.opts.rules);
    let fill = fill_list(&w).await?;
    eprintln!("filled in {:.1} s", fill.as_secs_f64());

    eprintln!("floor: one room after the other");
    let floor_seq = floor(&w, false).await?;
    eprintln!("floor: all rooms at once");
    let floor_conc = floor(&w, true).await?;

    let mut startups = Vec::new();
    let mut latencies = Vec::new();
    // Floors measured between binaries (after the first one ran), for the report.
    let mut floors_between = Vec::new();
    let windows = w.opts.windows.clone();
    for (b, (name, binary)) in w.opts.hush.clone().into_iter().enumerate() {
        if b > 0 {
            eprintln!("floor between binaries (hush stopped)");
            floors_between.push((name.clone(), floor(&w, false).await?, floor(&w, true).await?));
        }
        for (i, window) in windows.iter().copied().enumerate() {
            let (pending, reps) = &w.targets[b * windows.len() + i];
            // A rule that arrives while hush is down: enforced right after start.
            send_mute_rule(&w, pending).await?;
            let config = write_config(&w, window, &format!("hush-data-{b}"))?;
            let label = if i == 0 { format!("{name} cold") } else { format!("{name} warm{i}") };
            eprintln!("starting {label}, window {}", window_name(window));
            let log_label = label.replace(' ', "-");
            let (hush, startup) = start_hush(&w, &binary, &config, &log_label, pending).await?;
            eprintln!("  {startup:?}");
            eprintln!("rule to mute, {name}, window {}", window_name(window));
            let samples = rule_to_mute(&w, reps).await?;
            hush.stop().await?;
            startups.push((label, window, startup));
            latencies.push((name.clone(), window, samples));
        }
    }

    eprintln!("floor again (hush stopped)");
    let floor_seq2 = floor(&w, false).await?;
    let floor_conc2 = floor(&w, true).await?;

    // The report, as markdown.
    let fo = stats(floor_conc.iter().map(|s| s.observed_ms)).median;
    let fw = stats(floor_conc.iter().filter_map(|s| s.writer_ms)).median;
    let mut r = String::new();
    r.push_str(&format!("Machine: {} CPUs; load average {load_before} before, {} after.\n", num_cpus(), loadavg()));
    r.push_str(&format!(
        "{} protected rooms, {} repetitions, policy list of {} rules (+ the benchmark's own), Synapse 1.163.2 on 127.0.0.1.\n\n",
        w.opts.rooms, w.opts.reps, w.opts.rules
    ));
    r.push_str("Rule sent to the policy list until the mute is in force in every protected room, in ms: median / p90 (min-max). `writer` = the plain client's own clock (last PUT returned); `observed` = the moderator's poller (one request in flight) saw the mute in every room. Ratios: hush's observed median over the observed, then over the writer, median of the floor with all rooms at once (before hush ran).\n\n");
    r.push_str("| what | writer | observed | ratio (observed) | ratio (writer) | of which the rule's PUT |\n|---|---|---|---|---|---|\n");
    r.push_str(&row("floor: plain client, rooms one after the other", &floor_seq, None));
    r.push('\n');
    r.push_str(&row("floor: plain client, all rooms at once", &floor_conc, None));
    r.push('\n');
    for (name, window, samples) in &latencies {
        r.push_str(&row(&format!("{name}, batch_window_ms {}", window_name(*window)), samples, Some((fo, fw))));
        r.push('\n');
    }
    for (name, seq, conc) in &floors_between {
        r.push_str(&row(&format!("floor before {name}: one after the other"), seq, None));
        r.push('\n');
        r.push_str(&row(&format!("floor before {name}: all at once"), conc, None));
        r.push('\n');
    }
    r.push_str(&row("floor again after hush: one after the other", &floor_seq2, None));
    r.push('\n');
    r.push_str(&row("floor again after hush: all at once", &floor_conc2, None));
    r.push('\n');
    r.push_str("\nStart-up with the list and the protected rooms (time since the process started):\n\n");
    r.push_str("| start | window | logged in | notice | list loaded | rooms loaded | pending mute in force | peak RSS (sampled) | VmHWM | VmRSS 5 s later |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for (label, window, s) in &startups {
        r.push_str(&format!(
            "| {label} | {} | {} | {} | {} | {} | {:.2} s | {} | {} | {} |\n",
            window_name(*window),
            secs(s.running),
            secs(s.notice),
            secs(s.list_loaded),
            secs(s.rooms_loaded),
            s.enforced.as_secs_f64(),
            mib(s.peak_rss_kib),
            mib(s.hwm_kib),
            mib(s.settled_rss_kib)
        ));
    }
    r.push_str(&format!(
        "\nFilling the list: {} rules in {:.1} s ({:.0}/s).\n",
        w.opts.rules,
        fill.as_secs_f64(),
        w.opts.rules as f64 / fill.as_secs_f64().max(1e-9)
    ));
    // Stop the homeserver before its folder goes.
    drop(w);
    if opts.keep {
        eprintln!("kept {}", work.display());
    }
    Ok(r)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let opts = parse_opts()?;
    let report = tokio::time::timeout(RUN_DEADLINE, run(opts)).await.context("the benchmark ran out of time")??;
    println!("{report}");
    Ok(())
}
