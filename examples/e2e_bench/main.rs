//! End-to-end benchmark of hush against a local Synapse (issues 6 and 15), in one run.
//!
//! ```sh
//! cargo build --release --bin hush --example e2e_bench
//! # fill once (200 rooms x 50 members, 20,000 rules: about 15 minutes), measure 20 and 200 rooms:
//! target/release/examples/e2e_bench --rooms 20,200 --members 50 --rules 20000 --hs-dir /work/bench/hs-200
//! # the same folder again: starts in seconds
//! target/release/examples/e2e_bench --rooms 20,200 --members 50 --rules 20000 --hs-dir /work/bench/hs-200
//! # two hush binaries (say before and after a change) against one filled homeserver:
//! target/release/examples/e2e_bench --hush before=/tmp/hush-old,after=target/release/hush
//! ```
//!
//! The homeserver (`scripts/synapse start DIR/synapse`) is filled once: a moderator, a bot
//! account, `--members` members, a management room, a policy list of `--rules` filler rules
//! (none matches a member) and as many protected rooms as the largest `--rooms` size (the
//! bot at power level 100, every member in every room). `DIR/world.json` records it, and a
//! later run with the same `--hs-dir` reuses it after putting it back as filled (the
//! benchmark's rules emptied, mutes lifted, bans lifted and members joined again). Without
//! `--hs-dir` it lives in the temporary work folder and goes at the end.
//!
//! Then, for each size N of `--rooms` (hush protects the first N rooms):
//!
//! 1. **floor**: the moderator's plain client mutes a member in all N rooms at once by
//!    read-modify-write of `m.room.power_levels` (GET then PUT), and bans one in all N at
//!    once; with N <= 20 also one room after the other. Timed by the writer (first request
//!    to last returned), by the poller (below) and by the server clock (below);
//! 2. **start-up**: starts hush with a fresh `data_dir` (cold), a mute rule sent while it was
//!    down; times until login, start-up notice, list loaded, rooms loaded (logs), the
//!    pending mute in force in all N rooms (polled) = all rooms reconciled; RSS and CPU;
//! 3. **rule to mute / ban**: `--reps` times each, the moderator sends an `m.mute` (then an
//!    `m.ban`) rule for a fresh member and the poller waits until it is in force in every
//!    room; hush's CPU time per rule from `/proc/PID/stat`;
//! 4. **warm start-up**: hush again on the same `data_dir`, with another pending mute.
//!
//! The poller (`GET` of the power levels or the member's `m.room.member`, one request in
//! flight, rooms in turn) measures hush and the floor alike; its resolution is one round
//! over the rooms not yet done, so it lags a burst that lands at once. The **server clock**
//! (server_clock.rs) does not: Synapse's database gives the rule's `origin_server_ts` (the
//! floor: the client's clock at its first request, same machine) and the `received_ts` of
//! the last restricting event; the targets are set on that ratio.
#![recursion_limit = "256"]

mod fill;
mod homeserver;
mod hush;
mod measure;
mod report;
mod server_clock;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::fill::{prepare, reset, rooms, send_rule};
use crate::hush::{start_hush, write_config, Startup};
use crate::measure::{floor, rule_to_restriction, Kind, Sample};

/// No single wait (a poll, a start-up, a stop) may take longer than this.
pub const DEADLINE: Duration = Duration::from_secs(300);
/// The whole run may not take longer than this.
const RUN_DEADLINE: Duration = Duration::from_secs(3 * 3600);

#[derive(Debug, Clone)]
pub struct Opts {
    /// Sizes measured, in this order: hush protects the first N rooms.
    pub rooms: Vec<usize>,
    /// Members of every protected room (besides the moderator and the bot).
    pub members: usize,
    pub reps: usize,
    pub rules: usize,
    /// `None` = the key left out of the config (hush's default, 250 ms).
    pub windows: Vec<Option<u64>>,
    /// The hush binaries to compare, with their labels (one run each, in this order).
    pub hush: Vec<(String, PathBuf)>,
    /// Requests in flight while joining rooms (1 is the fastest for Synapse on SQLite,
    /// which slows down with concurrent writes).
    pub concurrency: usize,
    pub keep: bool,
    /// The filled homeserver's folder, kept and reused.
    pub hs_dir: Option<PathBuf>,
    /// Fill (or check) the homeserver and stop.
    pub fill_only: bool,
}

impl Opts {
    pub fn max_rooms(&self) -> usize {
        self.rooms.iter().copied().max().unwrap_or(0)
    }
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn default_hush() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo_root().join("target"), PathBuf::from);
    target.join("release/hush")
}

fn list<T: std::str::FromStr>(v: &str) -> Result<Vec<T>>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    Ok(v.split(',').map(str::parse).collect::<Result<_, _>>()?)
}

fn parse_opts() -> Result<Opts> {
    let mut o = Opts {
        rooms: vec![20],
        members: 0,
        reps: 10,
        rules: 20_000,
        windows: vec![None],
        hush: vec![("hush".to_owned(), default_hush())],
        concurrency: 1,
        keep: false,
        hs_dir: None,
        fill_only: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--rooms" => o.rooms = list(&val()?)?,
            "--members" => o.members = val()?.parse()?,
            "--reps" => o.reps = val()?.parse()?,
            "--rules" => o.rules = val()?.parse()?,
            "--concurrency" => o.concurrency = val()?.parse::<usize>()?.max(1),
            "--hs-dir" => o.hs_dir = Some(PathBuf::from(val()?)),
            "--fill-only" => o.fill_only = true,
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
                    "e2e_bench [--rooms N[,N...]] [--members N] [--reps N] [--rules N] [--windows default,0,10] [--concurrency N] [--hush [LABEL=]PATH[,[LABEL=]PATH...]] [--hs-dir DIR] [--fill-only] [--keep]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other} (try --help)"),
        }
    }
    if o.windows.is_empty() || o.hush.is_empty() || o.rooms.contains(&0) || o.rooms.is_empty() || o.reps == 0 {
        bail!("--windows, --hush, --rooms and --reps must not be empty or zero");
    }
    // The floor's two victims, and per window 1 pending + reps mutes + reps bans, + 1 warm.
    let needed = 2 + o.windows.len() * (1 + 2 * o.reps) + 1;
    if o.members == 0 {
        o.members = needed;
    }
    if o.members < needed {
        bail!(
            "--members {} is too few for --reps {} and {} windows: at least {needed}",
            o.members,
            o.reps,
            o.windows.len()
        );
    }
    Ok(o)
}

/// This run's start (ms since the epoch), in the benchmark's state keys.
pub fn run_id() -> u64 {
    static ID: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *ID.get_or_init(now_ms)
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// What one hush binary did at one size.
pub struct HushRun {
    pub name: String,
    pub window: Option<u64>,
    pub mutes: Vec<Sample>,
    pub bans: Vec<Sample>,
    /// VmRSS and VmHWM (KiB) after the rules.
    pub after_rules_kib: (u64, u64),
}

/// Everything measured at one size.
pub struct SizeRun {
    pub rooms: usize,
    pub floor_mute_seq: Vec<Sample>,
    pub floor_mute: Vec<Sample>,
    pub floor_ban: Vec<Sample>,
    pub runs: Vec<HushRun>,
    /// (label, window, start-up).
    pub startups: Vec<(String, Option<u64>, Startup)>,
    pub floor_mute_after: Vec<Sample>,
    pub floor_ban_after: Vec<Sample>,
    /// hush's repetitions that were not in force everywhere in time.
    pub failures: Vec<String>,
}

async fn measure_size(opts: &Opts, w: &fill::World, work: &std::path::Path, n: usize) -> Result<SizeRun> {
    let rooms = rooms(w, n).to_vec();
    let reps = opts.reps;
    reset(w).await?;
    eprintln!("{n} rooms: floor, all rooms at once");
    let floor_mute = floor(w, &rooms, Kind::Mute, true, reps).await?;
    let floor_ban = floor(w, &rooms, Kind::Ban, true, reps).await?;
    let floor_mute_seq = if n <= 20 { floor(w, &rooms, Kind::Mute, false, reps).await? } else { Vec::new() };
    let mut out = SizeRun {
        rooms: n,
        floor_mute_seq,
        floor_mute,
        floor_ban,
        runs: Vec::new(),
        startups: Vec::new(),
        floor_mute_after: Vec::new(),
        floor_ban_after: Vec::new(),
        failures: Vec::new(),
    };
    for (b, (name, binary)) in opts.hush.iter().enumerate() {
        if b > 0 {
            reset(w).await?;
        }
        let mut targets = w.targets().iter();
        let mut next = || targets.next().context("not enough members for the targets");
        let data_dir = format!("hush-data-{b}-{n}");
        for (i, window) in opts.windows.iter().copied().enumerate() {
            let pending = next()?.clone();
            send_rule(w, &pending.user_id, "m.mute").await?;
            let config = write_config(w, work, &rooms, window, &data_dir)?;
            let label = if i == 0 { format!("{name} cold") } else { format!("{name} warm{i}") };
            eprintln!("{n} rooms: starting {label}, window {}", report::window_name(window));
            let log = work.join(format!("hush-{b}-{n}-{i}.log"));
            let (hush, startup) = start_hush(w, binary, &config, log, &rooms, &pending).await?;
            eprintln!("  {startup:?}");
            let mute_users: Vec<_> = (0..reps).map(|_| next().cloned()).collect::<Result<_>>()?;
            let ban_users: Vec<_> = (0..reps).map(|_| next().cloned()).collect::<Result<_>>()?;
            let mutes = rule_to_restriction(w, &hush, &rooms, Kind::Mute, &mute_users, &mut out.failures).await?;
            let bans = rule_to_restriction(w, &hush, &rooms, Kind::Ban, &ban_users, &mut out.failures).await?;
            let after_rules_kib = hush.memory_kib().unwrap_or_default();
            hush.stop().await?;
            out.startups.push((label, window, startup));
            out.runs.push(HushRun { name: name.clone(), window, mutes, bans, after_rules_kib });
        }
        // Warm start-up, with the last window.
        let window = opts.windows.last().copied().flatten();
        let pending = next()?.clone();
        send_rule(w, &pending.user_id, "m.mute").await?;
        let config = write_config(w, work, &rooms, window, &data_dir)?;
        eprintln!("{n} rooms: starting {name} warm");
        let log = work.join(format!("hush-{b}-{n}-warm.log"));
        let (hush, startup) = start_hush(w, binary, &config, log, &rooms, &pending).await?;
        eprintln!("  {startup:?}");
        hush.stop().await?;
        out.startups.push((format!("{name} warm"), window, startup));
    }
    eprintln!("{n} rooms: floor again (hush stopped)");
    out.floor_mute_after = floor(w, &rooms, Kind::Mute, true, reps).await?;
    out.floor_ban_after = floor(w, &rooms, Kind::Ban, true, reps).await?;
    Ok(out)
}

async fn run(opts: Opts) -> Result<String> {
    for (_, path) in &opts.hush {
        if !opts.fill_only && !path.exists() {
            bail!("{} not found: run `cargo build --release --bin hush` first", path.display());
        }
    }
    let tmp = tempfile::Builder::new().prefix("hush-e2e-bench-").tempdir()?;
    let (work, _tmp) = if opts.keep { (tmp.keep(), None) } else { (tmp.path().to_owned(), Some(tmp)) };
    eprintln!("work dir {}", work.display());
    let hs_dir = opts.hs_dir.clone().unwrap_or_else(|| work.join("hs"));
    std::fs::create_dir_all(&hs_dir)?;
    let load_before = report::loadavg();
    let since = now_ms();
    let w = prepare(&opts, &hs_dir).await?;
    if opts.fill_only {
        return Ok(format!("filled {} in {:.0} s\n", hs_dir.display(), w.saved.fill_secs));
    }
    let mut sizes = Vec::new();
    for n in opts.rooms.iter().copied() {
        sizes.push(measure_size(&opts, &w, &work, n).await?);
    }
    reset(&w).await?;

    let mut samples: Vec<&mut Sample> = Vec::new();
    for s in &mut sizes {
        samples.extend(s.floor_mute_seq.iter_mut());
        samples.extend(s.floor_mute.iter_mut());
        samples.extend(s.floor_ban.iter_mut());
        samples.extend(s.floor_mute_after.iter_mut());
        samples.extend(s.floor_ban_after.iter_mut());
        for r in &mut s.runs {
            samples.extend(r.mutes.iter_mut());
            samples.extend(r.bans.iter_mut());
        }
    }
    server_clock::time_samples(&w.hs.database(), since.saturating_sub(60_000), &mut samples)?;
    let r = report::report(&opts, &w, &sizes, &load_before);
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
    let t = Instant::now();
    let report = tokio::time::timeout(RUN_DEADLINE, run(opts)).await.context("the benchmark ran out of time")??;
    println!("{report}");
    eprintln!("run took {:.0} s", t.elapsed().as_secs_f64());
    Ok(())
}
