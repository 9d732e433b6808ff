//! The hush process under test: its config, start-up until every room is reconciled, its
//! memory and CPU time from `/proc`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use matrix_sdk::ruma::api::client::message::get_message_events;
use matrix_sdk::ruma::OwnedRoomId;
use serde_json::Value;

use crate::fill::{Creds, World};
use crate::homeserver::is_muted;
use crate::{now_ms, DEADLINE};

pub struct Hush {
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
            .map_err(|e| anyhow::anyhow!("spawn {}: {e}", bin.display()))?;
        Ok(Hush { child, log, log_pos: 0, log_text: String::new() })
    }

    pub fn pid(&self) -> u32 {
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

    /// CPU time (user + system) used so far, in ms.
    pub fn cpu_ms(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        // Fields after the command name (which may hold spaces): state is the first, then
        // utime and stime are the 12th and 13th.
        let rest = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Some(ticks as f64 * 1000.0 / hz)
    }

    /// (VmRSS, VmHWM) in KiB.
    pub fn memory_kib(&self) -> Option<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        };
        Some((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// SIGTERM, then SIGKILL after 30 s.
    pub async fn stop(mut self) -> Result<()> {
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

/// hush's config protecting `rooms`, with its `data_dir` under `work`.
pub fn write_config(
    w: &World,
    work: &Path,
    rooms: &[OwnedRoomId],
    window: Option<u64>,
    data_dir: &str,
) -> Result<PathBuf> {
    let path = work.join("hush.yaml");
    let list: Vec<String> = rooms.iter().map(|r| format!("  - \"{r}\"")).collect();
    let mut text = format!(
        "homeserver_url: \"{}\"\nuser_id: \"{}\"\npassword: \"{}\"\ndata_dir: \"{}\"\nmanagement_room: \"{}\"\npolicy_lists: [\"{}\"]\ndefault_policy_list: \"{}\"\nprotected_rooms:\n{}\n",
        w.hs.url,
        w.bot().user_id,
        w.bot().password,
        work.join(data_dir).display(),
        w.saved.management,
        w.saved.list,
        w.saved.list,
        list.join("\n")
    );
    if let Some(ms) = window {
        text.push_str(&format!("mute:\n  batch_window_ms: {ms}\n"));
    }
    std::fs::write(&path, text)?;
    Ok(path)
}

#[derive(Debug, Default, Clone)]
pub struct Startup {
    pub running: Option<Duration>,
    pub notice: Option<Duration>,
    pub list_loaded: Option<Duration>,
    pub rooms_loaded: Option<Duration>,
    pub enforced: Duration,
    pub peak_rss_kib: u64,
    pub hwm_kib: u64,
    pub settled_rss_kib: u64,
    /// CPU time from spawn until the pending mute was in force everywhere.
    pub cpu_ms: f64,
}

fn count(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

/// Starts hush and follows its start-up until `pending` (ruled while hush was down) is
/// muted in every room of `rooms`.
pub async fn start_hush(
    w: &World,
    binary: &Path,
    config: &Path,
    log: PathBuf,
    rooms: &[OwnedRoomId],
    pending: &Creds,
) -> Result<(Hush, Startup)> {
    let since = now_ms();
    let t0 = Instant::now();
    let mut hush = Hush::start(binary, config, log)?;
    let mut s = Startup::default();
    let mut remaining: Vec<&OwnedRoomId> = rooms.iter().collect();
    let mut last_notice_check = Instant::now();
    let end = t0 + DEADLINE;
    loop {
        if Instant::now() > end {
            bail!("hush start-up not done within {DEADLINE:?}; log: {}", hush.log.display());
        }
        if hush.exited() {
            bail!("hush exited during start-up; log: {}", hush.log.display());
        }
        if let Some((rss, _)) = hush.memory_kib() {
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
        if s.rooms_loaded.is_none() && count(text, "protected room loaded") >= rooms.len() {
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
                s.cpu_ms = hush.cpu_ms().unwrap_or(f64::NAN);
            }
        }
        if remaining.is_empty() && s.notice.is_some() && s.rooms_loaded.is_some() && s.list_loaded.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    if let Some((rss, hwm)) = hush.memory_kib() {
        s.settled_rss_kib = rss;
        s.hwm_kib = hwm;
        s.peak_rss_kib = s.peak_rss_kib.max(rss);
    }
    Ok((hush, s))
}

/// Whether the bot's start-up notice (sent after `since`) is in the management room.
async fn notice_seen(w: &World, since: u64) -> Result<bool> {
    let mut req = get_message_events::v3::Request::backward(w.saved.management.clone());
    req.limit = 10u32.into();
    let resp = w.moderator.client.send(req).await?;
    Ok(resp.chunk.iter().any(|raw| {
        let ev: Value = serde_json::from_str(raw.json().get()).unwrap_or_default();
        ev["sender"].as_str() == Some(w.bot().user_id.as_str())
            && ev["origin_server_ts"].as_u64().unwrap_or(0) >= since
            && ev["content"]["body"].as_str().is_some_and(|b| b.contains(" started"))
    }))
}
