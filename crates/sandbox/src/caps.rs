//! Linux capabilities by name: the set a sandboxed process may hold, Docker's default set, and
//! `--cap-add`/`--cap-drop` applied to it the way Docker does. Pure; the init applies the result
//! (see `init/security.rs`).

use serde::{Deserialize, Serialize};

/// Capability names (without the `CAP_` prefix) by number, as in `linux/capability.h`.
const NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Docker's default set (moby `oci/caps/defaults.go`), the one BuildKit gives RUN steps too.
const DOCKER_DEFAULT: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// A set of capabilities, as a bit mask by capability number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Capabilities(u64);

/// A capability name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown capability {0:?} (expected a name such as NET_ADMIN or CAP_NET_ADMIN, or ALL)")]
pub struct UnknownCapability(pub String);

impl UnknownCapability {
    /// Always [`kiln_error::ErrorKind::InvalidArgument`]: the name came from the caller.
    pub fn kind(&self) -> kiln_error::ErrorKind {
        kiln_error::ErrorKind::InvalidArgument
    }
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities::docker_default()
    }
}

impl Capabilities {
    /// No capability at all.
    pub const fn empty() -> Self {
        Capabilities(0)
    }

    /// Every capability this crate knows by name.
    pub const fn all() -> Self {
        Capabilities((1 << NAMES.len()) - 1)
    }

    /// Docker's default set: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID,
    /// SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP.
    pub fn docker_default() -> Self {
        let mut set = Capabilities::empty();
        for name in DOCKER_DEFAULT {
            set.0 |= 1 << number(name).expect("default capability names are known");
        }
        set
    }

    /// The raw mask (bit N = capability N).
    pub const fn bits(self) -> u64 {
        self.0
    }

    pub fn from_bits(bits: u64) -> Self {
        Capabilities(bits & Capabilities::all().0)
    }

    /// Whether the set holds the capability named `name` (`CAP_` prefix optional).
    pub fn contains(self, name: &str) -> bool {
        parse_name(name).is_ok_and(|n| self.0 & (1 << n) != 0)
    }

    /// Docker's `--cap-add`/`--cap-drop` on top of `self`: `ALL` in `add` means every
    /// capability, `ALL` in `drop` starts from none; then the named drops are removed and the
    /// named adds added (an add wins over a drop of the same name only with `--cap-drop ALL`,
    /// as in moby's `TweakCapabilities`).
    pub fn adjusted(self, add: &[String], drop: &[String]) -> Result<Self, UnknownCapability> {
        let is_all = |s: &String| s.eq_ignore_ascii_case("ALL");
        let parse_list = |list: &[String]| -> Result<u64, UnknownCapability> {
            let mut mask = 0;
            for name in list.iter().filter(|s| !is_all(s)) {
                mask |= 1 << parse_name(name)?;
            }
            Ok(mask)
        };
        let (add_mask, drop_mask) = (parse_list(add)?, parse_list(drop)?);
        if add.iter().any(is_all) {
            return Ok(Capabilities(Capabilities::all().0 & !drop_mask));
        }
        if drop.iter().any(is_all) {
            return Ok(Capabilities(add_mask));
        }
        Ok(Capabilities((self.0 & !drop_mask) | add_mask))
    }

    /// The names in the set, `CAP_` prefixed, by number.
    pub fn names(self) -> Vec<String> {
        (0..NAMES.len())
            .filter(|&n| self.0 & (1 << n) != 0)
            .map(|n| format!("CAP_{}", NAMES[n]))
            .collect()
    }
}

impl std::fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

fn number(name: &str) -> Option<u32> {
    NAMES.iter().position(|n| *n == name).map(|n| n as u32)
}

fn parse_name(name: &str) -> Result<u32, UnknownCapability> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    number(bare).ok_or_else(|| UnknownCapability(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_unknown_name_is_an_invalid_argument() {
        let err = Capabilities::docker_default()
            .adjusted(&strings(&["NOT_A_CAP"]), &[])
            .unwrap_err();
        assert_eq!(err.kind(), kiln_error::ErrorKind::InvalidArgument);
    }

    #[test]
    fn docker_default_is_the_fourteen_capabilities() {
        let set = Capabilities::docker_default();
        assert_eq!(set.names().len(), 14);
        assert!(set.contains("CAP_CHOWN") && set.contains("mknod") && set.contains("SETFCAP"));
        assert!(!set.contains("SYS_ADMIN") && !set.contains("NET_ADMIN"));
        assert!(!set.contains("DAC_READ_SEARCH") && !set.contains("SYS_PTRACE"));
        // The mask runc would show in CapBnd for a default container.
        assert_eq!(set.bits(), 0x00000000a80425fb);
    }

    #[test]
    fn add_and_drop_by_name_with_or_without_prefix() {
        let set = Capabilities::docker_default()
            .adjusted(
                &strings(&["cap_sys_admin"]),
                &strings(&["NET_RAW", "CAP_MKNOD"]),
            )
            .unwrap();
        assert!(set.contains("SYS_ADMIN"));
        assert!(!set.contains("NET_RAW") && !set.contains("MKNOD"));
        assert_eq!(set.names().len(), 13);
    }

    #[test]
    fn all_keywords() {
        let none = Capabilities::docker_default()
            .adjusted(&strings(&["CHOWN"]), &strings(&["all"]))
            .unwrap();
        assert_eq!(none.names(), ["CAP_CHOWN"]);
        let most = Capabilities::docker_default()
            .adjusted(&strings(&["ALL"]), &strings(&["SYS_ADMIN"]))
            .unwrap();
        assert_eq!(most.bits(), Capabilities::all().bits() & !(1 << 21));
    }

    #[test]
    fn unknown_names_are_errors() {
        let err = Capabilities::docker_default()
            .adjusted(&strings(&["FLY"]), &[])
            .unwrap_err();
        assert_eq!(err, UnknownCapability("FLY".into()));
        assert!(err.to_string().contains("unknown capability \"FLY\""));
    }
}
