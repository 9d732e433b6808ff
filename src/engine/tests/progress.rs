//! Start-up progress: `status` says how many protected rooms and lists have loaded while start-up lasts, and nothing once all have.

use super::*;

#[tokio::test(start_paused = true)]
async fn status_shows_loading_progress_until_every_room_and_list_has_loaded() {
    let hs = FakeHomeserver::new(HUSH);
    for room in [ROOM, ROOM2] {
        hs.create_room(room, "10", MOD, levels(&[]), &[HUSH, MOD, "@a:x"]);
    }
    let clock = TokioClock::starting_at(1_700_000_000_000);
    let (timers, expired, _task) = driver::spawn(clock, DriverOptions::default());
    let (tx, inbox) = mpsc::unbounded_channel();
    let engine = Engine::new(config(), hs.clone(), clock, Ledger::in_memory().unwrap(), timers, tx);
    let mut h = Harness { engine, inbox, expired, hs: hs.clone() };
    h.input(Input::Configure {
        management_room: Some(MGMT.into()),
        lists: vec![(LIST.into(), hush_core::policy::ListTrust::DEFAULT_LIST)],
        protected: vec![ROOM.into(), ROOM2.into()],
    })
    .await;
    let ban = json!({"type": "m.policy.rule.user", "state_key": "b", "sender": MOD, "event_id": "$b",
                     "content": {"entity": "@z:x", "recommendation": "m.ban"}});
    h.input(Input::ListLoaded { room_id: LIST.into(), events: vec![ban] }).await;
    h.input(Input::RoomLoaded { room_id: ROOM.into(), events: hs.state(ROOM) }).await;
    h.input(Input::ListsKnown { pinned: vec![] }).await;
    let loading = h.status().await.loading.expect("one room is still loading");
    assert_eq!((loading.rooms_loaded, loading.rooms), (1, 2));
    assert_eq!((loading.lists_loaded, loading.lists, loading.rules), (1, 1, 1));
    h.input(Input::RoomLoaded { room_id: ROOM2.into(), events: hs.state(ROOM2) }).await;
    assert_eq!(h.status().await.loading, None, "start-up is over");
    // A room added later by command is not start-up again.
    h.input(Input::Configure { management_room: None, lists: vec![], protected: vec!["!later:x".into()] }).await;
    assert_eq!(h.status().await.loading, None);
}
