//! Whether this process runs rootless, inside a user namespace of its own. The store needs it
//! to squash unmapped owners of cache directories, and `kiln_layer` (which depends on this
//! crate) for the same rules at extraction, so the one test lives here.

use std::sync::OnceLock;

/// Whether this process runs in a user namespace other than the initial one, whose uid map is
/// the identity `0 0 4294967295`. (`kiln_sandbox::rootless` has the same test; the sandbox
/// does not depend on the store.) Read once: a process never changes namespace after start.
pub fn in_user_namespace() -> bool {
    static IN_USERNS: OnceLock<bool> = OnceLock::new();
    *IN_USERNS.get_or_init(|| {
        std::fs::read_to_string("/proc/self/uid_map")
            .map(|map| !is_identity_map(&map))
            .unwrap_or(false)
    })
}

fn is_identity_map(uid_map: &str) -> bool {
    uid_map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_full_identity_map_is_the_initial_namespace() {
        assert!(is_identity_map("         0          0 4294967295\n"));
        assert!(!is_identity_map("         0       1000          1\n"));
        assert!(!is_identity_map(
            "         0       1000          1\n         1     100000      65536\n"
        ));
    }
}
