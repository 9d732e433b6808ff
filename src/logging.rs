//! The default log filter: hush's own lines at info, the Matrix SDK's only when they matter.
//!
//! At this level a steady state writes nothing per sync (tests/quiet_logs.rs runs hush
//! against a real homeserver and checks). `RUST_LOG` replaces the whole filter.
//!
//! Each SDK directive, and why it is there rather than a fix at the source:
//! - `matrix_sdk=warn`, `matrix_sdk_base=warn`, `matrix_sdk_crypto=warn`: the SDK narrates
//!   its own work at info (one `Processed a sync response` line per sync, every room join,
//!   every event sent); hush logs what it does itself. (A target is a prefix: `matrix_sdk`
//!   also covers `matrix_sdk_sqlite` and the rest; base and crypto are named to be plain.)
//! - `matrix_sdk_base::response_processors::timeline=error`: the SDK warns on every state
//!   event it cannot type, and a removed policy rule (empty content) is one; hush reads
//!   those itself.
//! - `matrix_sdk_crypto::backups=error`: matrix-sdk 0.18 starts a key-backup upload task
//!   for every client and pokes it after every sync (`Client::process_sync` →
//!   `maybe_trigger_backup`), whatever the `EncryptionSettings` say (`auto_enable_backups`
//!   and `BackupDownloadStrategy` only govern creating a backup and downloading from one).
//!   With no backup key, which hush never configures, the task warns `Trying to backup
//!   room keys but no backup key was found` once per sync. There is no switch to turn the
//!   task off, so this one target is silenced; nothing else in that module concerns a
//!   client without backups.
//! - `matrix_sdk::http_client=off`: the SDK logs every failed request at ERROR before its
//!   caller decides whether the failure was expected. Its own start-up (the encryption
//!   set-up it runs at every login and session restore) asks for account data that does
//!   not exist (`m.secret_storage.default_key`, a 404 it then treats as "no recovery"),
//!   which would be two ERROR lines per start. Every request hush makes returns its error
//!   to hush, which reports it in its own words; and hush itself makes no request it
//!   expects to fail (see `matrix::note_encryption_state`).

/// The filter used when `RUST_LOG` is not set.
pub const DEFAULT_FILTER: &str = "info,matrix_sdk=warn,matrix_sdk_base=warn,\
     matrix_sdk_base::response_processors::timeline=error,matrix_sdk_crypto=warn,\
     matrix_sdk_crypto::backups=error,matrix_sdk::http_client=off";
