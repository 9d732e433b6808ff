//! The run's report, as markdown tables: medians, percentiles and ratios over the floor.

use std::time::Duration;

use crate::fill::World;
use crate::hush::Startup;
use crate::measure::Sample;
use crate::{HushRun, Opts, SizeRun};

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

/// None when a sample lacks the figure.
fn stats(v: impl Iterator<Item = Option<f64>>) -> Option<Stats> {
    let mut v: Vec<f64> = v.collect::<Option<Vec<f64>>>()?;
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(Stats {
        median: if v.len().is_multiple_of(2) {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        } else {
            percentile(&v, 0.5)
        },
        p90: percentile(&v, 0.9),
        min: v[0],
        max: v[v.len() - 1],
    })
}

fn cell(s: Option<Stats>) -> String {
    s.map_or("-".to_owned(), |s| format!("{:.0} / {:.0} ({:.0}-{:.0})", s.median, s.p90, s.min, s.max))
}

fn server(samples: &[Sample]) -> Option<Stats> {
    stats(samples.iter().map(|s| s.server_ms))
}

fn observed(samples: &[Sample]) -> Option<Stats> {
    stats(samples.iter().map(|s| Some(s.observed_ms)))
}

fn ratio(a: Option<Stats>, b: Option<Stats>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b.median > 0.0 => format!("{:.2}x", a.median / b.median),
        _ => "-".to_owned(),
    }
}

/// A table row; `floor` = the floor the ratios refer to (None for the floor's own rows).
fn row(name: &str, samples: &[Sample], floor: Option<&[Sample]>) -> String {
    if samples.is_empty() {
        return String::new();
    }
    let (server_ratio, observed_ratio) = match floor {
        Some(f) => (ratio(server(samples), server(f)), ratio(observed(samples), observed(f))),
        None => ("-".to_owned(), "-".to_owned()),
    };
    format!(
        "| {name} | {} | {} | {server_ratio} | {} | {observed_ratio} | {} | {} | {} |\n",
        cell(server(samples)),
        cell(stats(samples.iter().map(|s| s.first_ms))),
        cell(observed(samples)),
        cell(stats(samples.iter().map(|s| s.writer_ms))),
        cell(stats(samples.iter().map(|s| s.rule_put_ms))),
        cell(stats(samples.iter().map(|s| s.cpu_ms))),
    )
}

pub fn window_name(w: Option<u64>) -> String {
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

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn hush_rows(r: &HushRun, size: &SizeRun) -> String {
    let name = format!("{}, batch_window_ms {}", r.name, window_name(r.window));
    row(&format!("**{name}: mute**"), &r.mutes, Some(&size.floor_mute))
        + row(&format!("**{name}: ban**"), &r.bans, Some(&size.floor_ban)).as_str()
}

pub fn report(opts: &Opts, w: &World, sizes: &[SizeRun], load_before: &str) -> String {
    let mut r = String::new();
    r.push_str(&format!("Machine: {} CPUs; load average {load_before} before, {} after.\n", num_cpus(), loadavg()));
    r.push_str(&format!(
        "Protected rooms {:?} (the first N of {}), {} members each, {} repetitions, policy list of {} rules (+ the benchmark's own), Synapse 1.163.2 on 127.0.0.1; homeserver {} ({:.0} s).\n\n",
        opts.rooms,
        w.saved.protected.len(),
        w.saved.members.len(),
        opts.reps,
        w.saved.rules,
        if w.filled_now { "filled in this run" } else { "reused from an earlier fill" },
        w.saved.fill_secs,
    ));
    r.push_str("Rule sent to the list until the restriction is in force in every protected room, ms, median / p90 (min-max). `server` = the homeserver's clock: the rule's `origin_server_ts` (the floor: its first request) to the `received_ts` of the last restricting event; `first event` = to the first one's `origin_server_ts`; `poller` = the moderator's poller (one request in flight) saw it in every room; `writer` = the plain client's own clock (last request returned). Ratios: hush's median over the floor's (all rooms at once, measured before hush ran). `CPU` = hush's user+system time from just before the rule to 0.7 s after it was seen done.\n\n");
    for s in sizes {
        r.push_str(&format!("#### {} rooms\n\n", s.rooms));
        r.push_str("| what | server | first event | ratio (server) | poller | ratio (poller) | writer | the rule's PUT | CPU |\n|---|---|---|---|---|---|---|---|---|\n");
        r.push_str(&row("floor: plain client, mute, rooms one after the other", &s.floor_mute_seq, None));
        r.push_str(&row("floor: plain client, mute, all rooms at once", &s.floor_mute, None));
        r.push_str(&row("floor: plain client, ban, all rooms at once", &s.floor_ban, None));
        for run in &s.runs {
            r.push_str(&hush_rows(run, s));
        }
        r.push_str(&row("floor again after hush: mute, all at once", &s.floor_mute_after, None));
        r.push_str(&row("floor again after hush: ban, all at once", &s.floor_ban_after, None));
        r.push('\n');
        for f in &s.failures {
            r.push_str(&format!("**Failed** (left out of the figures): {f}.\n"));
        }
        for run in &s.runs {
            r.push_str(&format!(
                "{} after the rules ({}): VmRSS {}, VmHWM {}.\n",
                run.name,
                window_name(run.window),
                mib(run.after_rules_kib.0),
                mib(run.after_rules_kib.1)
            ));
        }
        r.push('\n');
    }
    r.push_str("Start-up (time since the process started; \"all reconciled\" = a mute ruled while hush was down is in force in every protected room):\n\n");
    r.push_str("| rooms | start | window | logged in | notice | list loaded | rooms loaded | all reconciled | CPU until then | peak RSS (sampled) | VmHWM | VmRSS 5 s later |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for s in sizes {
        for (label, window, st) in &s.startups {
            r.push_str(&startup_row(s.rooms, label, *window, st));
        }
    }
    r
}

fn startup_row(rooms: usize, label: &str, window: Option<u64>, s: &Startup) -> String {
    format!(
        "| {rooms} | {label} | {} | {} | {} | {} | {} | {:.2} s | {:.2} s | {} | {} | {} |\n",
        window_name(window),
        secs(s.running),
        secs(s.notice),
        secs(s.list_loaded),
        secs(s.rooms_loaded),
        s.enforced.as_secs_f64(),
        s.cpu_ms / 1000.0,
        mib(s.peak_rss_kib),
        mib(s.hwm_kib),
        mib(s.settled_rss_kib)
    )
}
