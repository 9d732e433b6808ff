//! The metrics and health listener against a real Synapse: an operator's scraper sees hush healthy once it syncs, and a list's mute counted as done with the restriction in force, then lifted.
#![recursion_limit = "256"]

mod common;

use common::*;

/// A loopback port nothing listens on now (the OS's pick; released for hush to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A GET on hush's listener: status and body, or None while it does not answer.
async fn get(http: &reqwest::Client, base: &str, path: &str) -> Option<(u16, String)> {
    let resp = http.get(format!("{base}{path}")).send().await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}

/// Polls `/metrics` until every line is in it.
async fn wait_metrics(http: &reqwest::Client, base: &str, lines: &[&str], hush: &BotProcess) -> String {
    let found = poll(DEADLINE, || async {
        let (status, body) = get(http, base, "/metrics").await?;
        (status == 200 && lines.iter().all(|l| body.lines().any(|b| b == *l))).then_some(body)
    })
    .await;
    match found {
        Some(text) => text,
        None => {
            let last = get(http, base, "/metrics").await;
            panic!("/metrics never had {lines:?}; now:\n{last:?}\nlog:\n{}", hush.log_text())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scraper_sees_hush_healthy_and_a_list_mute_counted_then_lifted() {
    let c = Community::new().await.unwrap();
    let member = c.member(None).await.unwrap();
    let port = free_port();
    let config = c.config(&format!("metrics:\n  listen: \"127.0.0.1:{port}\"\n"));
    let hush = c.start(&config, 1).await;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    let healthy = poll(DEADLINE, || async { get(&http, &base, "/health").await.filter(|(s, _)| *s == 200) }).await;
    let (_, body) = healthy.unwrap_or_else(|| panic!("/health never 200; log:\n{}", hush.log_text()));
    assert_eq!(body, "ok\n");
    assert_eq!(get(&http, &base, "/").await.map(|(s, _)| s), Some(404));

    let list = c.list.room_id().as_str();
    let text = wait_metrics(
        &http,
        &base,
        &[r#"hush_restrictions{kind="mute_power_level"} 0"#, "hush_protected_rooms_loaded 1", "hush_protected_rooms 1"],
        &hush,
    )
    .await;
    assert!(text.contains("hush_sync_responses_total "), "{text}");
    assert!(!text.contains(&c.bot.password), "the metrics never show a secret");

    c.rule("spam", member.user_id.as_str(), "m.mute", None).await.unwrap();
    c.wait_level(&member.user_id, Some(-1)).await;
    let rules = format!("hush_rules{{list=\"{list}\"}} 1");
    wait_metrics(
        &http,
        &base,
        &[
            r#"hush_actions_total{kind="mute_power_level",outcome="done"} 1"#,
            r#"hush_restrictions{kind="mute_power_level"} 1"#,
            rules.as_str(),
            "hush_decision_to_write_seconds_count 1",
        ],
        &hush,
    )
    .await;

    c.remove_rule("spam").await.unwrap();
    c.wait_level(&member.user_id, None).await;
    wait_metrics(
        &http,
        &base,
        &[
            r#"hush_actions_total{kind="lift_mute_power_level",outcome="done"} 1"#,
            r#"hush_restrictions{kind="mute_power_level"} 0"#,
        ],
        &hush,
    )
    .await;
}

/// Rules a moderator's client sends all at once fork the list's history, and a gappy
/// legacy sync (no MSC4222 `state_after`) leaves most of them out: hush heard of 10 of 50
/// (found by tests/rate_limits.rs). hush reads the list again after such a gap: every
/// rule counts, and the members they name are muted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_sent_all_at_once_all_reach_hush() {
    let c = Community::new().await.unwrap();
    // Two members: three in one change would be held by the safety guard (3 of 5 members).
    let members = [c.member(None).await.unwrap(), c.member(None).await.unwrap()];
    let port = free_port();
    let config = c.config(&format!("metrics:\n  listen: \"127.0.0.1:{port}\"\n"));
    let hush = c.start(&config, 1).await;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    wait_metrics(&http, &base, &["hush_protected_rooms_loaded 1"], &hush).await;

    // 48 rules about accounts nowhere near the room, and the 2 members last.
    let mut entities: Vec<String> = (0..48).map(|_| format!("@{}:elsewhere.example", unique("fork"))).collect();
    entities.extend(members.iter().map(|m| m.user_id.to_string()));
    let mut sends = tokio::task::JoinSet::new();
    for (i, entity) in entities.iter().enumerate() {
        use matrix_sdk::ruma::api::client::state::send_state_event;
        let content = serde_json::json!({"entity": entity, "recommendation": "m.mute", "reason": "fork"});
        let req = send_state_event::v3::Request::new_raw(
            c.list.room_id().to_owned(),
            "m.policy.rule.user".into(),
            format!("fork-{i}"),
            matrix_sdk::ruma::serde::Raw::new(&content).unwrap().cast_unchecked(),
        );
        let client = c.moderator.client.clone();
        sends.spawn(async move { client.send(req).await.map(|_| ()) });
    }
    for sent in sends.join_all().await {
        sent.unwrap();
    }

    let rules = format!("hush_rules{{list=\"{}\"}} 50", c.list.room_id());
    wait_metrics(&http, &base, &[rules.as_str()], &hush).await;
    for m in &members {
        c.wait_level(&m.user_id, Some(-1)).await;
    }
}
