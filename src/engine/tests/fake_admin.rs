//! An in-memory admin API: accounts, who is admin, what is suspended, every call.

use crate::suspension::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct State {
    pub users: BTreeSet<String>,
    pub admins: BTreeSet<String>,
    pub suspended: BTreeSet<String>,
    /// (user, suspended) per call to `suspend`.
    pub calls: Vec<(String, bool)>,
    pub not_admin_token: bool,
    pub transient: u32,
    /// The next this many `suspend` calls take effect, then lose their answer (a
    /// timeout, a 5xx after the commit, a connection reset): they return `Transient`.
    pub lose_answers: u32,
    /// After a lost answer, the next this many requests fail as `Transient` (the
    /// server went down with the change made).
    pub then_down: u32,
    pub accounts_read: BTreeMap<String, u32>,
}

#[derive(Clone, Default)]
pub struct FakeAdmin {
    pub server: String,
    pub state: Arc<Mutex<State>>,
}

impl FakeAdmin {
    pub fn new(server: &str, users: &[&str]) -> FakeAdmin {
        let f = FakeAdmin { server: server.to_owned(), state: Default::default() };
        f.state.lock().unwrap().users = users.iter().map(|u| (*u).to_owned()).collect();
        f
    }
    pub fn suspended(&self) -> BTreeSet<String> {
        self.state.lock().unwrap().suspended.clone()
    }
    pub fn calls(&self) -> Vec<(String, bool)> {
        self.state.lock().unwrap().calls.clone()
    }
    fn check(&self, s: &mut State, user: &str) -> Result<(), AdminError> {
        if server_of(user) != Some(self.server.as_str()) {
            return Err(AdminError::RemoteUser(user.to_owned()));
        }
        if s.transient > 0 {
            s.transient -= 1;
            return Err(AdminError::Transient("502".into()));
        }
        if s.not_admin_token {
            return Err(AdminError::NotAdmin("M_FORBIDDEN: You are not a server admin".into()));
        }
        if !s.users.contains(user) {
            return Err(AdminError::UnknownUser(user.to_owned()));
        }
        Ok(())
    }
}

impl AdminApi for FakeAdmin {
    fn suspend<'a>(&'a self, user_id: &'a str, suspended: bool) -> BoxFuture<'a, Result<(), AdminError>> {
        Box::pin(async move {
            let mut s = self.state.lock().unwrap();
            self.check(&mut s, user_id)?;
            s.calls.push((user_id.to_owned(), suspended));
            if suspended {
                s.suspended.insert(user_id.to_owned());
            } else {
                s.suspended.remove(user_id);
            }
            if s.lose_answers > 0 {
                s.lose_answers -= 1;
                s.transient += std::mem::take(&mut s.then_down);
                return Err(AdminError::Transient("connection reset after the change was made".into()));
            }
            Ok(())
        })
    }
    fn account<'a>(&'a self, user_id: &'a str) -> BoxFuture<'a, Result<AccountInfo, AdminError>> {
        Box::pin(async move {
            let mut s = self.state.lock().unwrap();
            self.check(&mut s, user_id)?;
            *s.accounts_read.entry(user_id.to_owned()).or_default() += 1;
            Ok(AccountInfo { admin: Some(s.admins.contains(user_id)), suspended: Some(s.suspended.contains(user_id)) })
        })
    }
}
