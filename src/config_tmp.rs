//! MERGE-H3: stand-ins until the config's per-list trust lands.
use hush_core::policy::ListTrust;
impl crate::config::Config {
    pub fn list_trust(&self, room: &str) -> ListTrust {
        if self.default_policy_list.as_deref() == Some(room) {
            ListTrust::DEFAULT_LIST
        } else {
            ListTrust::OTHER_LIST
        }
    }
    pub fn writable_lists(&self) -> Vec<String> {
        self.default_policy_list.iter().cloned().collect()
    }
}
