//! Tests of parsing and validating the configuration.

use super::*;

const MINIMAL: &str = r#"
homeserver_url: "http://127.0.0.1:8008"
user_id: "@hush:localhost"
password: "pw"
data_dir: "./data"
management_room: "!abc"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/nonexistent"), &BTreeMap::new())
}

fn parse_env(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env: BTreeMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Config::parse(text, Path::new("/nonexistent"), &env)
}

#[test]
fn minimal_config_has_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.command_prefix, "!hush");
    assert_eq!(c.mute.batch_window_ms, 250);
    assert!(c.mute.membership_room_versions.is_empty());
    assert!(!c.dry_run);
    assert!(!c.suspension.enabled);
    assert_eq!(c.credentials, Credentials::Password(Secret::new("pw")));
}

#[test]
fn example_config_passes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml.example");
    let env: BTreeMap<String, String> = BTreeMap::new();
    let c = Config::load(&path, &env).unwrap();
    assert_eq!(c.user_id, "@hush:localhost");
}

#[test]
fn unknown_key_suggests_the_closest() {
    let e = parse(&format!("{MINIMAL}protected_room: []\n")).unwrap_err();
    assert_eq!(e.key, "protected_room");
    assert!(e.reason.contains("did you mean `protected_rooms`"), "{e}");
    let e = parse(&format!("{MINIMAL}mute:\n  membership_room_version: []\n")).unwrap_err();
    assert_eq!(e.key, "mute.membership_room_version");
    assert!(e.reason.contains("did you mean `membership_room_versions`"), "{e}");
}

#[test]
fn unknown_key_far_from_everything_lists_known_keys() {
    let e = parse(&format!("{MINIMAL}zzzzzzzzzz: 1\n")).unwrap_err();
    assert!(e.reason.contains("known keys here"), "{e}");
}

#[test]
fn wrong_type_names_the_key() {
    let e = parse(&format!("{MINIMAL}dry_run: maybe\n")).unwrap_err();
    assert_eq!(e.key, "dry_run");
    let e = parse(&format!("{MINIMAL}mute:\n  batch_window_ms: soon\n")).unwrap_err();
    assert_eq!(e.key, "mute.batch_window_ms");
    let e = parse(&format!("{MINIMAL}policy_lists: \"#one:localhost\"\n")).unwrap_err();
    assert_eq!(e.key, "policy_lists");
}

#[test]
fn missing_required_key_is_named() {
    let text = MINIMAL.replace("user_id: \"@hush:localhost\"\n", "");
    let e = parse(&text).unwrap_err();
    assert_eq!(e.key, "user_id");
    assert!(e.reason.contains("required"));
}

#[test]
fn bad_values_are_named() {
    let e = parse(&MINIMAL.replace("@hush:localhost", "hush")).unwrap_err();
    assert_eq!(e.key, "user_id");
    let e = parse(&MINIMAL.replace("http://127.0.0.1:8008", "127.0.0.1:8008")).unwrap_err();
    assert_eq!(e.key, "homeserver_url");
    let e = parse(&format!("{MINIMAL}protected_rooms: [\"lobby\"]\n")).unwrap_err();
    assert_eq!(e.key, "protected_rooms[0]");
    let e = parse(&format!("{MINIMAL}protected_users: [\"alice\"]\n")).unwrap_err();
    assert_eq!(e.key, "protected_users[0]");
    let e = parse(&format!("{MINIMAL}command_prefix: \"\"\n")).unwrap_err();
    assert_eq!(e.key, "command_prefix");
}

#[test]
fn v12_room_ids_without_server_are_accepted() {
    let c = parse(&format!(
        "{MINIMAL}protected_rooms: [\"!3iYp7tDmoFGHFoRLoUhlGsRJ2l9NDbzWqTUvwbNcm94\", \"#lobby:localhost\"]\n"
    ))
    .unwrap();
    assert_eq!(c.protected_rooms.len(), 2);
}

#[test]
fn secrets_from_file_and_env() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "from-file\n").unwrap();
    let text = MINIMAL.replace("password: \"pw\"", "password_file: \"pw\"");
    let c = Config::parse(&text, dir.path(), &BTreeMap::new()).unwrap();
    assert_eq!(c.credentials, Credentials::Password(Secret::new("from-file")));

    let text = MINIMAL.replace("password: \"pw\"\n", "");
    let c = parse_env(&text, &[(ENV_ACCESS_TOKEN, "tok")]).unwrap();
    assert_eq!(c.credentials, Credentials::AccessToken(Secret::new("tok")));
    let e = parse(&text).unwrap_err();
    assert_eq!(e.key, "password");

    let e =
        Config::parse(&MINIMAL.replace("password: \"pw\"", "password_file: \"missing\""), dir.path(), &BTreeMap::new())
            .unwrap_err();
    assert_eq!(e.key, "password_file");
    let e = parse(&format!("{MINIMAL}password_file: \"x\"\n")).unwrap_err();
    assert_eq!(e.key, "password_file");
    let e = parse(&format!("{MINIMAL}access_token: \"t\"\n")).unwrap_err();
    assert_eq!(e.key, "access_token");
}

#[test]
fn suspension_needs_an_admin_token() {
    let e = parse(&format!("{MINIMAL}suspension:\n  enabled: true\n")).unwrap_err();
    assert_eq!(e.key, "suspension.admin_access_token_file");
    let c = parse_env(&format!("{MINIMAL}suspension:\n  enabled: true\n"), &[(ENV_ADMIN_ACCESS_TOKEN, "adm")]).unwrap();
    assert!(c.suspension.enabled);
}

#[test]
fn secrets_never_show_in_debug_output() {
    let c = parse(&MINIMAL.replace("\"pw\"", "\"hunter2-very-secret\"")).unwrap();
    let shown = format!("{c:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn policy_lists_take_both_shapes() {
    let c = parse(&format!(
        "{MINIMAL}policy_lists:\n  - \"#own:localhost\"\n  - room: \"#cme:example.org\"\n    actions: [ban, mute]\n    write: true\n  - room: \"!plain\"\ndefault_policy_list: \"#own:localhost\"\n"
    ))
    .unwrap();
    assert_eq!(
        c.policy_lists,
        vec![
            PolicyListConfig { room: "#own:localhost".into(), actions: None, write: false },
            PolicyListConfig {
                room: "#cme:example.org".into(),
                actions: Some(ListTrust { ban: true, mute: true, suspend: false, server_acl: false }),
                write: true,
            },
            PolicyListConfig { room: "!plain".into(), actions: None, write: false },
        ]
    );
    assert_eq!(c.policy_list_rooms(), vec!["#own:localhost", "#cme:example.org", "!plain"]);
    assert_eq!(c.list_trust("#own:localhost"), ListTrust::DEFAULT_LIST);
    assert_eq!(
        c.list_trust("#cme:example.org"),
        ListTrust { ban: true, mute: true, suspend: false, server_acl: false }
    );
    assert_eq!(c.list_trust("!plain"), ListTrust::OTHER_LIST);
    assert_eq!(c.list_trust("#not-configured:x"), ListTrust::OTHER_LIST);
    assert_eq!(c.writable_lists(), vec!["#own:localhost", "#cme:example.org"]);
    assert_eq!(c.configured_rooms(), vec!["!abc", "#own:localhost", "#cme:example.org", "!plain"]);
}

#[test]
fn configured_actions_win_over_the_default_list_trust() {
    let c = parse(&format!(
        "{MINIMAL}policy_lists:\n  - room: \"#own:localhost\"\n    actions: [mute]\ndefault_policy_list: \"#own:localhost\"\n"
    ))
    .unwrap();
    assert_eq!(c.list_trust("#own:localhost"), ListTrust { ban: false, mute: true, suspend: false, server_acl: false });
    assert_eq!(c.writable_lists(), vec!["#own:localhost"]);
    let c = parse(&format!("{MINIMAL}policy_lists:\n  - room: \"#x:y\"\n    actions: []\n")).unwrap();
    assert_eq!(c.list_trust("#x:y").to_string(), "nothing");
    assert!(c.writable_lists().is_empty());
}

#[test]
fn policy_list_errors_name_the_entry() {
    let list = |entry: &str| parse(&format!("{MINIMAL}policy_lists:\n  - \"#a:x\"\n  - {entry}\n")).unwrap_err();
    let e = list("{room: \"#b:x\", actions: [ban, kick]}");
    assert_eq!(e.key, "policy_lists[1].actions");
    assert_eq!(
        e.to_string(),
        "config key `policy_lists[1].actions`: unknown action `kick` (the actions are: ban, mute, suspend, server_acl)"
    );
    let e = list("{room: \"#b:x\", actions: [ban, ban]}");
    assert_eq!(e.key, "policy_lists[1].actions");
    assert!(e.reason.contains("twice"), "{e}");
    let e = list("{room: \"#b:x\", actions: ban}");
    assert_eq!(e.key, "policy_lists[1].actions");
    assert!(e.reason.contains("list of action names"), "{e}");
    let e = list("{room: \"#b:x\", actions: [1]}");
    assert_eq!(e.key, "policy_lists[1].actions");
    let e = list("{room: \"#b:x\", action: [ban]}");
    assert_eq!(e.key, "policy_lists[1].action");
    assert!(e.reason.contains("did you mean `actions`"), "{e}");
    let e = list("{rooom: \"#b:x\"}");
    assert_eq!(e.key, "policy_lists[1].rooom");
    assert!(e.reason.contains("did you mean `room`"), "{e}");
    let e = list("{actions: [ban]}");
    assert_eq!(e.key, "policy_lists[1].room");
    assert!(e.reason.contains("required but missing"), "{e}");
    let e = list("{room: [\"#b:x\"]}");
    assert_eq!(e.key, "policy_lists[1].room");
    let e = list("{room: \"lobby\"}");
    assert_eq!(e.key, "policy_lists[1].room");
    assert!(e.reason.contains("is not a room id"), "{e}");
    let e = list("{room: \"#b:x\", write: yes please}");
    assert_eq!(e.key, "policy_lists[1].write");
    let e = list("\"lobby\"");
    assert_eq!(e.key, "policy_lists[1]");
    let e = list("42");
    assert_eq!(e.key, "policy_lists[1]");
    assert!(e.reason.contains("mapping with `room`"), "{e}");
    let e = list("{room: \"#a:x\", write: true}");
    assert_eq!(e.key, "policy_lists[1].room");
    assert!(e.reason.contains("already listed as policy_lists[0]"), "{e}");
}

#[test]
fn safety_has_defaults_and_limits() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.safety, SafetyConfig { max_new_restrictions: 10, max_room_share: 0.25 });
    let c = parse(&format!("{MINIMAL}safety:\n  max_new_restrictions: 50\n  max_room_share: 1\n")).unwrap();
    assert_eq!(c.safety, SafetyConfig { max_new_restrictions: 50, max_room_share: 1.0 });
    let c = parse(&format!("{MINIMAL}safety:\n  max_room_share: 0.1\n")).unwrap();
    assert_eq!(c.safety, SafetyConfig { max_new_restrictions: 10, max_room_share: 0.1 });
    for bad in ["0", "1.5", "-0.2", ".nan"] {
        let e = parse(&format!("{MINIMAL}safety:\n  max_room_share: {bad}\n")).unwrap_err();
        assert_eq!(e.key, "safety.max_room_share", "{bad}");
        assert!(e.reason.contains("more than 0 and at most 1"), "{e}");
    }
    let e = parse(&format!("{MINIMAL}safety:\n  max_new_restriction: 5\n")).unwrap_err();
    assert_eq!(e.key, "safety.max_new_restriction");
    assert!(e.reason.contains("did you mean `max_new_restrictions`"), "{e}");
    let e = parse(&format!("{MINIMAL}safety:\n  max_new_restrictions: -1\n")).unwrap_err();
    assert_eq!(e.key, "safety.max_new_restrictions");
    let e = parse(&format!("{MINIMAL}safety: 3\n")).unwrap_err();
    assert_eq!(e.key, "safety");
}

#[test]
fn clear_text_http_only_to_this_machine() {
    for ok in [
        "http://127.0.0.1:8008",
        "http://127.8.9.10",
        "http://localhost:8008/",
        "http://LOCALHOST",
        "http://[::1]:8008",
        "http://user@127.0.0.1:8008/path",
        "https://matrix.example.org",
        "https://203.0.113.7:8448",
    ] {
        let c = parse(&MINIMAL.replace("http://127.0.0.1:8008", ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
        assert!(!c.allow_insecure_http);
    }
    for bad in [
        "http://matrix.example.org",
        "http://192.168.1.2:8008",
        "http://[2001:db8::1]:8008",
        "http://localhost.example.org",
        "http://127.0.0.1.example.org",
        "http://127.0.0.1@evil.example.org",
    ] {
        let e = parse(&MINIMAL.replace("http://127.0.0.1:8008", bad)).unwrap_err();
        assert_eq!(e.key, "homeserver_url", "{bad}");
        assert_eq!(
            e.to_string(),
            "config key `homeserver_url`: http:// sends the password and tokens in clear text to a host \
             that is not this machine; use https:// or set allow_insecure_http: true"
        );
        let c =
            parse(&format!("{}allow_insecure_http: true\n", MINIMAL.replace("http://127.0.0.1:8008", bad))).unwrap();
        assert!(c.allow_insecure_http);
    }
}

#[test]
fn secret_files_sit_next_to_the_config_as_under_systemd_credentials() {
    // systemd's LoadCredential= puts config.yaml, password and admin-token side by side
    // in $CREDENTIALS_DIRECTORY; hush is started with --config there.
    let creds = tempfile::tempdir().unwrap();
    let text = MINIMAL.replace("password: \"pw\"", "password_file: password")
        + "suspension:\n  enabled: true\n  admin_access_token_file: admin-token\n";
    std::fs::write(creds.path().join("config.yaml"), text).unwrap();
    std::fs::write(creds.path().join("password"), "secret-pw\n").unwrap();
    std::fs::write(creds.path().join("admin-token"), "adm-tok").unwrap();
    let c = Config::load(&creds.path().join("config.yaml"), &BTreeMap::new()).unwrap();
    assert_eq!(c.credentials, Credentials::Password(Secret::new("secret-pw")));
    assert_eq!(c.suspension.admin_access_token, Some(Secret::new("adm-tok")));
}

#[test]
fn not_yaml_or_not_a_mapping() {
    assert!(parse("a: [").unwrap_err().reason.contains("not valid YAML"));
    assert!(parse("- 1\n- 2\n").unwrap_err().reason.contains("mapping"));
}

#[test]
fn redaction_defaults_to_bans_over_a_day() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(
        c.redaction,
        RedactionConfig {
            on_ban: true,
            on_mute: false,
            window: std::time::Duration::from_secs(86_400),
            max_per_room: 100,
            msc4293: true,
        }
    );
    let c = parse(&format!(
        "{MINIMAL}redaction:\n  redact_on: [ban, mute]\n  window: 2h\n  max_per_room: 500\n  msc4293: false\n"
    ))
    .unwrap();
    assert!(c.redaction.on_ban && c.redaction.on_mute && !c.redaction.msc4293);
    assert_eq!(c.redaction.window, std::time::Duration::from_secs(7200));
    assert_eq!(c.redaction.policy().window_ms, 7_200_000);
    assert_eq!(c.redaction.max_per_room, 500);
    let never = parse(&format!("{MINIMAL}redaction:\n  redact_on: []\n")).unwrap();
    assert!(!never.redaction.on_ban && !never.redaction.on_mute);
}

#[test]
fn redaction_errors_name_the_key() {
    for (yaml, key, says) in [
        ("redaction:\n  redact_on: [kick]\n", "redaction.redact_on[0]", "`kick` is not a restriction that redacts"),
        ("redaction:\n  redact_on: [ban, ban]\n", "redaction.redact_on[1]", "listed twice"),
        ("redaction:\n  window: forever\n", "redaction.window", "`forever` is not a duration"),
        ("redaction:\n  window: 0s\n", "redaction.window", "more than 0"),
        ("redaction:\n  window: 31d\n", "redaction.window", "at most 30d"),
        ("redaction:\n  max_per_room: 0\n", "redaction.max_per_room", "from 1 to 10000"),
        ("redaction:\n  max_per_room: 10001\n", "redaction.max_per_room", "from 1 to 10000"),
        ("redaction:\n  max_per_room: -1\n", "redaction.max_per_room", ""),
        ("redaction:\n  windw: 2h\n", "redaction.windw", "did you mean `window`"),
        ("redaction: yes\n", "redaction", "expected a mapping"),
    ] {
        let e = parse(&format!("{MINIMAL}{yaml}")).unwrap_err();
        assert_eq!(e.key, key, "{yaml}: {e}");
        assert!(e.reason.contains(says), "{yaml}: {e}");
    }
}

#[test]
fn protections_are_off_by_default_with_the_issue_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.protections.flood, None);
    let c = parse(&format!("{MINIMAL}protections:\n  flood:\n    enabled: true\n")).unwrap();
    assert_eq!(
        c.protections.flood,
        Some(FloodConfig {
            max_events: 10,
            per: std::time::Duration::from_secs(10),
            mute_for: std::time::Duration::from_secs(600),
            reach: Reach::default(),
        })
    );
    assert_eq!(c.protections.escalation, EscalationConfig::default());
    assert_eq!(c.protections.mention_spam, None);
    let c = parse(&format!("{MINIMAL}protections:\n  mention_spam:\n    enabled: true\n")).unwrap();
    assert_eq!(
        c.protections.mention_spam,
        Some(MentionSpamConfig {
            max_mentions: 10,
            mute_for: std::time::Duration::from_secs(600),
            redact: true,
            reach: Reach::default(),
        })
    );
}

#[test]
fn each_protection_takes_rooms_and_publish() {
    let text = format!(
        "{MINIMAL}default_policy_list: \"#list:x\"\nprotections:\n  mention_spam:\n    enabled: true\n    max_mentions: 3\n    mute_for: 1h\n    redact: false\n    rooms: [\"!a:x\", \"#b:x\"]\n    publish: true\n  flood:\n    enabled: true\n    rooms: [\"#c:x\"]\n"
    );
    let c = parse(&text).unwrap();
    let m = c.protections.mention_spam.unwrap();
    assert_eq!((m.max_mentions, m.mute_for.as_secs(), m.redact), (3, 3600, false));
    assert_eq!(m.reach, Reach { rooms: Some(vec!["!a:x".into(), "#b:x".into()]), publish: true });
    assert_eq!(c.protections.flood.unwrap().reach, Reach { rooms: Some(vec!["#c:x".into()]), publish: false });
}

#[test]
fn bad_rooms_and_publish_name_the_key_and_the_reason() {
    let bad = |yaml: &str| parse(&format!("{MINIMAL}{yaml}")).unwrap_err();
    let e = bad("protections:\n  mention_spam:\n    rooms: [\"!a:x\", \"general\"]\n");
    assert_eq!(e.key, "protections.mention_spam.rooms[1]");
    assert!(e.reason.contains("not a room id"), "{e}");
    let e = bad("protections:\n  flood:\n    rooms: [\"!a:x\", \"!a:x\"]\n");
    assert_eq!(e.key, "protections.flood.rooms[1]");
    assert!(e.reason.contains("twice"), "{e}");
    let e = bad("protections:\n  flood:\n    rooms: []\n");
    assert_eq!(e.key, "protections.flood.rooms");
    let e = bad("protections:\n  mention_spam:\n    enabled: true\n    publish: true\n");
    assert_eq!(e.key, "protections.mention_spam.publish");
    assert!(e.reason.contains("default_policy_list"), "{e}");
    let e = bad("protections:\n  flood:\n    publish: true\n");
    assert_eq!(e.key, "protections.flood.publish");
    let e = bad("protections:\n  mention_spam:\n    max_mentions: 0\n");
    assert_eq!(e.key, "protections.mention_spam.max_mentions");
    let e = bad("protections:\n  mention_spam:\n    mute_for: never\n");
    assert_eq!(e.key, "protections.mention_spam.mute_for");
    let e = bad("protections:\n  mention_spam:\n    redact: sometimes\n");
    assert!(e.to_string().contains("redact"), "{e}");
    let e = bad("protections:\n  mention_spam:\n    max_mention: 3\n");
    assert_eq!(e.key, "protections.mention_spam.max_mention");
}

#[test]
fn protections_read_durations_like_commands() {
    let text = format!(
        "{MINIMAL}protections:\n  flood:\n    enabled: true\n    max_events: 3\n    per: 5s\n    mute_for: 1h30m\n  escalation:\n    within: 2d\n    max_mute: 1w\n"
    );
    let c = parse(&text).unwrap();
    let f = c.protections.flood.unwrap();
    assert_eq!((f.max_events, f.per.as_secs(), f.mute_for.as_secs()), (3, 5, 5400));
    assert_eq!(c.protections.escalation.within.as_secs(), 2 * 86_400);
    assert_eq!(c.protections.escalation.max_mute.as_secs(), 7 * 86_400);
}

#[test]
fn protections_errors_name_the_key() {
    let bad = |yaml: &str| parse(&format!("{MINIMAL}{yaml}")).unwrap_err().to_string();
    let e = bad("protections:\n  flood:\n    per: soon\n");
    assert!(e.contains("protections.flood.per"), "{e}");
    let e = bad("protections:\n  flood:\n    max_events: 0\n");
    assert!(e.contains("protections.flood.max_events"), "{e}");
    let e = bad("protections:\n  flood:\n    mute_four: 1m\n");
    assert!(e.contains("protections.flood.mute_four") && e.contains("mute_for"), "{e}");
    let e = bad("protections:\n  spam: {}\n");
    assert!(e.contains("protections.spam"), "{e}");
    let e = bad("protections:\n  escalation:\n    within: 0s\n");
    assert!(e.contains("protections.escalation.within"), "{e}");
}

#[test]
fn metrics_listener_is_off_unless_configured() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.metrics.listen, None);
    let c = parse(&format!("{MINIMAL}metrics:\n  listen: \"127.0.0.1:9100\"\n")).unwrap();
    assert_eq!(c.metrics.listen, Some("127.0.0.1:9100".parse().unwrap()));
    let c = parse(&format!("{MINIMAL}metrics:\n  listen: \"[::1]:9100\"\n")).unwrap();
    assert_eq!(c.metrics.listen, Some("[::1]:9100".parse().unwrap()));
}

#[test]
fn a_bad_metrics_address_names_the_key() {
    for bad in ["localhost", "127.0.0.1", "127.0.0.1:port", "999.0.0.1:9100"] {
        let e = parse(&format!("{MINIMAL}metrics:\n  listen: \"{bad}\"\n")).unwrap_err();
        assert_eq!(e.key, "metrics.listen", "{bad}: {e}");
        assert!(e.reason.contains(bad), "{e}");
    }
    let e = parse(&format!("{MINIMAL}metrics:\n  listn: \"127.0.0.1:9100\"\n")).unwrap_err();
    assert_eq!(e.key, "metrics.listn");
}
