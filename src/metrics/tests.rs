//! Tests of the metrics' text, the health reasons and the listener's answers.

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::{Method, StatusCode};

use super::http::answer;
use super::*;

async fn get(m: &Metrics, method: Method, path: &str) -> (StatusCode, String, String) {
    let resp = answer(&method, path, m, None).await;
    let status = resp.status();
    let ty = resp.headers().get(hyper::header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_owned()).unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, ty, String::from_utf8(body.to_vec()).unwrap())
}

#[test]
fn health_needs_a_recent_sync_response_and_a_working_ledger() {
    let m = Metrics::default();
    assert_eq!(m.unhealthy(), ["not syncing: no sync response yet"]);
    m.synced();
    assert!(m.unhealthy().is_empty(), "{:?}", m.unhealthy());
    // Two long polls without a response: not syncing.
    let later = Instant::now() + SYNC_STALE_AFTER + Duration::from_secs(5);
    let why = m.unhealthy_at(later);
    assert_eq!(why.len(), 1, "{why:?}");
    assert!(why[0].starts_with("not syncing: the last sync response was 6"), "{why:?}");
    m.ledger_committed(Err("disk I/O error".into()));
    assert_eq!(m.unhealthy(), ["ledger not writable: the last commit failed: disk I/O error"]);
    m.ledger_committed(Ok(()));
    assert!(m.unhealthy().is_empty());
}

#[tokio::test]
async fn the_listener_answers_health_metrics_and_nothing_else() {
    let m = Metrics::default();
    let (status, ty, body) = get(&m, Method::GET, "/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ty.starts_with("text/plain"));
    assert_eq!(body, "not syncing: no sync response yet\n");
    m.synced();
    let (status, _, body) = get(&m, Method::GET, "/health").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));

    // Without the engine's answer the counters are still served, without the gauges.
    let (status, ty, body) = get(&m, Method::GET, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ty, CONTENT_TYPE);
    assert!(body.contains("hush_sync_responses_total 1"), "{body}");
    assert!(body.contains("# TYPE hush_sync_lag_seconds gauge"), "{body}");
    assert!(!body.contains("hush_restrictions"), "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");

    for (method, path) in
        [(Method::GET, "/"), (Method::GET, "/metrics/x"), (Method::POST, "/health"), (Method::DELETE, "/metrics")]
    {
        let (status, _, _) = get(&m, method.clone(), path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
    }
}

#[test]
fn the_text_has_every_documented_metric() {
    let m = Metrics::default();
    m.action("mute_power_level", Outcome::Done);
    m.refusal("room_moderator");
    m.decision_to_write(Duration::from_millis(30));
    m.synced();
    let snapshot = Snapshot {
        rules: vec![("!list:x".into(), 3)],
        restrictions: vec![(Kind::MutePowerLevel, 2), (Kind::Ban, 1)],
        held_rules: 1,
        timers_pending: 4,
        rooms_loaded: 1,
        rooms_total: 2,
    };
    let text = m.encode(Some(&snapshot));
    for line in [
        r#"hush_actions_total{kind="mute_power_level",outcome="done"} 1"#,
        r#"hush_refusals_total{reason="room_moderator"} 1"#,
        "hush_decision_to_write_seconds_count 1",
        "hush_sync_responses_total 1",
        "# TYPE hush_rate_limited counter",
        "# TYPE hush_write_retries counter",
        "# TYPE hush_sync_lag_seconds gauge",
        r#"hush_rules{list="!list:x"} 3"#,
        r#"hush_restrictions{kind="mute_power_level"} 2"#,
        r#"hush_restrictions{kind="ban"} 1"#,
        r#"hush_restrictions{kind="mute_membership"} 0"#,
        r#"hush_restrictions{kind="suspension"} 0"#,
        r#"hush_restrictions{kind="server_deny"} 0"#,
        "hush_held_rules 1",
        "hush_timers_pending 4",
        "hush_protected_rooms_loaded 1",
        "hush_protected_rooms 2",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[test]
fn every_planned_change_has_a_kind_and_lifts_say_so() {
    assert_eq!(action_kind(Kind::MutePowerLevel, false), "mute_power_level");
    assert_eq!(action_kind(Kind::MutePowerLevel, true), "lift_mute_power_level");
    assert_eq!(action_kind(Kind::Ban, true), "lift_ban");
    assert_eq!(action_kind(Kind::Redaction, true), "redaction");
    let inner = Refusal::InRoom { room_id: "!r:x".into(), refusal: Box::new(Refusal::Creator) };
    assert_eq!(refusal_reason(&inner), "room_creator");
}

#[tokio::test]
async fn a_taken_port_is_an_error_naming_the_key() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let Err(e) = http::start(addr, std::sync::Arc::new(Metrics::default())).await else {
        panic!("listening twice on {addr}")
    };
    assert!(format!("{e:#}").contains(&format!("metrics.listen ({addr})")), "{e:#}");
}
