//! Tests of the admin calls: checks before suspending, retries, lost answers, URLs and remote users.

use super::*;

#[tokio::test(start_paused = true)]
async fn run_call_checks_admins_and_prior_suspensions_and_retries_faults() {
    let fake = crate::engine::tests::fake_admin::FakeAdmin::new("x", &["@a:x", "@admin:x", "@b:x"]);
    fake.state.lock().unwrap().admins.insert("@admin:x".into());
    let api: Arc<dyn AdminApi> = Arc::new(fake.clone());
    assert_eq!(run_call(api.clone(), "@admin:x".into(), true, true).await.outcome, Outcome::IsAdmin);
    fake.state.lock().unwrap().transient = 2;
    assert_eq!(run_call(api.clone(), "@a:x".into(), true, true).await.outcome, Outcome::Done);
    assert_eq!(run_call(api.clone(), "@a:x".into(), true, true).await.outcome, Outcome::AlreadySuspended);
    assert_eq!(
        run_call(api.clone(), "@nobody:x".into(), true, true).await.outcome,
        Outcome::Failed(AdminError::UnknownUser("@nobody:x".into()))
    );
    assert_eq!(
        run_call(api.clone(), "@a:y".into(), true, true).await.outcome,
        Outcome::Failed(AdminError::RemoteUser("@a:y".into()))
    );
    fake.state.lock().unwrap().not_admin_token = true;
    assert!(matches!(
        run_call(api.clone(), "@b:x".into(), true, true).await.outcome,
        Outcome::Failed(AdminError::NotAdmin(_))
    ));
    assert_eq!(fake.calls(), vec![("@a:x".to_owned(), true)], "one suspension call went through");
    // A retry of hush's own half-done suspension (after a crash) is not "someone else's".
    fake.state.lock().unwrap().not_admin_token = false;
    assert_eq!(run_call(api.clone(), "@a:x".into(), true, false).await.outcome, Outcome::Done);
}

#[tokio::test(start_paused = true)]
async fn a_lost_answer_is_hushs_own_suspension_not_someone_elses() {
    let fake = crate::engine::tests::fake_admin::FakeAdmin::new("x", &["@a:x", "@b:x"]);
    let api: Arc<dyn AdminApi> = Arc::new(fake.clone());
    // The change is made, the answer lost: the retry finds hush's own suspension.
    fake.state.lock().unwrap().lose_answers = 1;
    assert_eq!(run_call(api.clone(), "@a:x".into(), true, true).await.outcome, Outcome::Done);
    assert_eq!(fake.calls(), vec![("@a:x".to_owned(), true)], "not sent twice");
    // The server stays down past the call's own retries: the result is unknown.
    {
        let mut s = fake.state.lock().unwrap();
        s.lose_answers = 1;
        s.then_down = 20;
    }
    assert!(matches!(run_call(api.clone(), "@b:x".into(), true, true).await.outcome, Outcome::Unknown(_)));
    // Down before any request went out: a plain failure (nothing was changed).
    {
        let mut s = fake.state.lock().unwrap();
        s.transient = 20;
        s.suspended.clear();
    }
    assert!(matches!(run_call(api.clone(), "@a:x".into(), true, true).await.outcome, Outcome::Failed(_)));
    // ...but on a retry of hush's own entry, it may be hush's suspension.
    fake.state.lock().unwrap().transient = 20;
    assert!(matches!(run_call(api.clone(), "@a:x".into(), true, false).await.outcome, Outcome::Unknown(_)));
}

#[test]
fn failed_calls_are_retried_after_5_s_doubling_to_5_min() {
    let mut backoff = retry_backoff();
    let secs: Vec<u64> = (1..=9).map(|_| backoff.next().as_secs()).collect();
    assert_eq!(secs, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
    for _ in 0..1000 {
        backoff.next();
    }
    assert_eq!(backoff.next(), Duration::from_secs(300));
}

#[test]
fn urls_encode_the_user_id_and_keep_a_base_path() {
    let api = HttpAdminApi::new("https://hs.example/prefix/", Secret::new("t"), "hs.example").unwrap();
    assert_eq!(
        api.url(Endpoint::Synapse.segments(), "@a/b:hs.example").as_str(),
        "https://hs.example/prefix/_synapse/admin/v1/suspend/@a%2Fb:hs.example"
    );
    assert_eq!(
        api.url(Endpoint::Standard.segments(), "@a:hs.example").as_str(),
        "https://hs.example/prefix/_matrix/client/v1/admin/suspend/@a:hs.example"
    );
}

#[tokio::test]
async fn remote_users_are_refused_before_any_call() {
    // An address nothing listens on: a call would fail as Transient, not RemoteUser.
    let api = HttpAdminApi::new("http://127.0.0.1:9", Secret::new("t"), "x").unwrap();
    assert_eq!(api.suspend("@a:y", true).await, Err(AdminError::RemoteUser("@a:y".into())));
    assert_eq!(api.account("@a:y").await, Err(AdminError::RemoteUser("@a:y".into())));
}
