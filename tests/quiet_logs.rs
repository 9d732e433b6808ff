//! hush's log at its default level against a real Synapse: start-up without warnings or errors, and a steady state that writes nothing per sync; and no request of hush's own that it expects to fail (the SDK logs those as errors).
#![recursion_limit = "256"]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

/// Starts hush with `RUST_LOG` as given, or unset (hush's own default filter).
fn start_with_log(setup: &BotSetup, config: &Path, rust_log: Option<&str>, name: &str) -> BotProcess {
    let log = setup.dir.path().join(format!("hush-{name}.log"));
    let file = std::fs::File::create(&log).expect("create log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hush"));
    cmd.args(["run", "--config"]).arg(config).stdout(Stdio::null()).stderr(file);
    match rust_log {
        Some(filter) => cmd.env("RUST_LOG", filter),
        None => cmd.env_remove("RUST_LOG"),
    };
    let child = cmd.spawn().expect("spawn hush");
    BotProcess { child, dir: setup.dir.path().to_owned(), log }
}

/// The log's lines without terminal colours.
fn lines(hush: &BotProcess) -> Vec<String> {
    hush.log_text().lines().map(strip_ansi).collect()
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ ... final byte in @..~
            for d in chars.by_ref() {
                if ('@'..='~').contains(&d) && d != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A line's level: the word after the timestamp.
fn level(line: &str) -> &str {
    line.split_whitespace().nth(1).unwrap_or("")
}

/// A counter or gauge from hush's `/metrics`.
async fn metric(http: &reqwest::Client, base: &str, name: &str) -> Option<u64> {
    let body = http.get(format!("{base}/metrics")).send().await.ok()?.text().await.ok()?;
    body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Waits for hush's start-up notice in the management room.
async fn wait_started(c: &Community, hush: &BotProcess) {
    let rid = c.management.room_id().to_owned();
    let seen = poll(DEADLINE, || async {
        c.moderator.messages_from(&rid, &c.bot.user_id).iter().any(|m| m.body.contains(" started")).then_some(())
    })
    .await;
    assert!(seen.is_some(), "hush never announced its start; log:\n{}", hush.log_text());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_default_level_start_up_warns_of_nothing_and_a_steady_state_logs_nothing_per_sync() {
    let c = Community::new().await.unwrap();
    let _member = c.member(None).await.unwrap();
    let port = free_port();
    let config = c.config(&format!("metrics:\n  listen: \"127.0.0.1:{port}\"\n"));
    let hush = start_with_log(&c.bot, &config, None, "default");
    wait_started(&c, &hush).await;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    // Start-up is over when every room is loaded and a command is answered.
    let loaded = poll(DEADLINE, || async {
        (metric(&http, &base, "hush_protected_rooms_loaded").await? == 1
            && lines(&hush).iter().any(|l| l.contains("every protected room and policy list is loaded")))
        .then_some(())
    })
    .await;
    assert!(loaded.is_some(), "start-up never finished; log:\n{}", hush.log_text());
    c.command("!hush status", "uptime").await;
    let start_up = lines(&hush).len();
    let syncs_before = metric(&http, &base, "hush_sync_responses_total").await.expect("sync counter");

    // Steady state: the moderators talk, and now and then ask for the status; each
    // answer proves hush has synced everything said before it.
    for round in 0..4 {
        for i in 0..3 {
            c.moderator.say(&c.management, &format!("steady state, round {round}, message {i}")).await.unwrap();
        }
        c.command("!hush status", "uptime").await;
    }
    let syncs = metric(&http, &base, "hush_sync_responses_total").await.expect("sync counter") - syncs_before;
    assert!(syncs >= 4, "only {syncs} syncs in the steady state");

    let all = lines(&hush);
    let loud: Vec<&String> = all.iter().filter(|l| matches!(level(l), "WARN" | "ERROR")).collect();
    assert!(loud.is_empty(), "warnings or errors at the default level:\n{}", hush.log_text());
    let steady = &all[start_up..];
    assert!(
        steady.iter().all(|l| !l.contains(" matrix_sdk")),
        "the SDK logged in the steady state at the default level:\n{}",
        steady.join("\n")
    );
    assert!(
        (steady.len() as u64) < syncs,
        "{} lines over {syncs} syncs in the steady state: something logs per sync:\n{}",
        steady.len(),
        steady.join("\n")
    );
    hush.terminate().await.unwrap();
}

/// The SDK logs every failed request at ERROR (target `matrix_sdk::http_client`, off by
/// default). Shown here, the only failures are the SDK's own start-up probes for account
/// data that does not exist (`m.secret_storage.default_key`): hush asks for nothing it
/// expects to miss, such as a new room's `m.room.encryption` before its first notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hush_itself_sends_no_request_that_expectedly_fails() {
    let c = Community::new().await.unwrap();
    let config = c.config("");
    // At info its request span (method, URI, status) shows on each error line.
    let filter = hush::logging::DEFAULT_FILTER.replace("matrix_sdk::http_client=off", "matrix_sdk::http_client=info");
    assert_ne!(filter, hush::logging::DEFAULT_FILTER);
    let hush = start_with_log(&c.bot, &config, Some(&filter), "http-errors");
    wait_started(&c, &hush).await;
    c.command("!hush status", "uptime").await;
    c.moderator.say(&c.management, "a message after the status").await.unwrap();
    c.command("!hush status", "uptime").await;

    let all = lines(&hush);
    let failed: Vec<&String> =
        all.iter().filter(|l| level(l) == "ERROR" && l.contains("matrix_sdk::http_client")).collect();
    assert!(failed.iter().all(|l| l.contains("uri=")), "no request URI in the log:\n{failed:#?}");
    let ours: Vec<&&String> =
        failed.iter().filter(|l| !l.contains("/account_data/m.secret_storage.default_key")).collect();
    assert!(ours.is_empty(), "requests that failed:\n{ours:#?}\nlog:\n{}", hush.log_text());
    hush.terminate().await.unwrap();
}
