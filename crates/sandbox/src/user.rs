//! Resolving a Docker-style `user[:group]` string to numeric ids using the container's
//! /etc/passwd and /etc/group (given as text, so this is pure and testable).

use crate::error::InitFailure;

/// The ids a process runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, primary gid first, without duplicates.
    pub groups: Vec<u32>,
    /// The user's home directory from /etc/passwd, else `/` (what runc puts in `HOME`).
    pub home: String,
}

/// The two halves of a `user[:group]` string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserSpec<'a> {
    pub user: &'a str,
    pub group: Option<&'a str>,
}

pub(crate) fn parse_user(spec: &str) -> Result<UserSpec<'_>, InitFailure> {
    let invalid = |reason: &str| InitFailure::InvalidUser {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    let (user, group) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    if user.is_empty() {
        return Err(invalid("empty user name"));
    }
    if group == Some("") {
        return Err(invalid("empty group name"));
    }
    if group.is_some_and(|g| g.contains(':')) {
        return Err(invalid("more than one ':'"));
    }
    Ok(UserSpec { user, group })
}

/// One /etc/passwd entry, the fields we use.
struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    passwd.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 4 || line.starts_with('#') {
            return None;
        }
        Some(PasswdEntry {
            name: fields[0],
            uid: fields[2].trim().parse().ok()?,
            gid: fields[3].trim().parse().ok()?,
            home: fields.get(5).copied().unwrap_or(""),
        })
    })
}

/// One /etc/group entry, the fields we use.
struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn group_entries(group: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    group.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 3 || line.starts_with('#') {
            return None;
        }
        let members = fields
            .get(3)
            .map(|m| {
                m.split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Some(GroupEntry {
            name: fields[0],
            gid: fields[2].trim().parse().ok()?,
            members,
        })
    })
}

/// Resolves `spec` (or root when `None`) against the container's passwd and group files
/// (`None` when the file does not exist). Numeric ids need no files; names must be found.
pub(crate) fn resolve_user(
    spec: Option<&str>,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ResolvedUser, InitFailure> {
    let spec = parse_user(spec.unwrap_or("0"))?;
    let passwd = passwd.unwrap_or("");
    let group_file = group.unwrap_or("");

    let (uid, user_name, passwd_gid, home) = match spec.user.parse::<u32>() {
        Ok(uid) => {
            let entry = passwd_entries(passwd).find(|e| e.uid == uid);
            (
                uid,
                entry.as_ref().map(|e| e.name),
                entry.as_ref().map(|e| e.gid),
                entry.map(|e| e.home),
            )
        }
        Err(_) => {
            let entry = passwd_entries(passwd)
                .find(|e| e.name == spec.user)
                .ok_or_else(|| InitFailure::UserNotFound {
                    user: spec.user.to_string(),
                })?;
            (
                entry.uid,
                Some(entry.name),
                Some(entry.gid),
                Some(entry.home),
            )
        }
    };

    let gid = match spec.group {
        None => passwd_gid.unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_entries(group_file)
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| InitFailure::GroupNotFound {
                    group: g.to_string(),
                })?,
        },
    };

    let mut groups = vec![gid];
    if let Some(name) = user_name {
        for entry in group_entries(group_file) {
            if entry.members.contains(&name) && !groups.contains(&entry.gid) {
                groups.push(entry.gid);
            }
        }
    }
    let home = home
        .filter(|h| h.starts_with('/'))
        .unwrap_or("/")
        .to_string();
    Ok(ResolvedUser {
        uid,
        gid,
        groups,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                          # comment:x:9:9\n\
                          alice:x:1000:1000:Alice:/home/alice:/bin/sh\n\
                          broken:x:notanumber:1\n\
                          bob:x:1001:100::/home/bob:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:root,alice\nusers:x:100:\n\
                         alice:x:1000:\ndocker:x:998:bob, alice\n";

    fn resolve(spec: Option<&str>) -> Result<ResolvedUser, InitFailure> {
        resolve_user(spec, Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn parses_user_and_group_halves() {
        assert_eq!(
            parse_user("alice").unwrap(),
            UserSpec {
                user: "alice",
                group: None
            }
        );
        assert_eq!(
            parse_user("1:2").unwrap(),
            UserSpec {
                user: "1",
                group: Some("2")
            }
        );
        assert!(matches!(
            parse_user(""),
            Err(InitFailure::InvalidUser { .. })
        ));
        assert!(matches!(
            parse_user(":1"),
            Err(InitFailure::InvalidUser { .. })
        ));
        assert!(matches!(
            parse_user("a:"),
            Err(InitFailure::InvalidUser { .. })
        ));
        assert!(matches!(
            parse_user("a:b:c"),
            Err(InitFailure::InvalidUser { .. })
        ));
    }

    #[test]
    fn default_is_root_with_its_groups() {
        let root = resolve(None).unwrap();
        assert_eq!(
            root,
            ResolvedUser {
                uid: 0,
                gid: 0,
                groups: vec![0, 10],
                home: "/root".into(),
            }
        );
    }

    #[test]
    fn name_takes_primary_gid_and_memberships_from_files() {
        let alice = resolve(Some("alice")).unwrap();
        assert_eq!(
            alice,
            ResolvedUser {
                uid: 1000,
                gid: 1000,
                groups: vec![1000, 10, 998],
                home: "/home/alice".into(),
            }
        );
        let bob = resolve(Some("bob")).unwrap();
        assert_eq!(
            bob,
            ResolvedUser {
                uid: 1001,
                gid: 100,
                groups: vec![100, 998],
                home: "/home/bob".into(),
            }
        );
    }

    #[test]
    fn numeric_ids_need_no_files() {
        let u = resolve_user(Some("1234:5678"), None, None).unwrap();
        assert_eq!(
            u,
            ResolvedUser {
                uid: 1234,
                gid: 5678,
                groups: vec![5678],
                home: "/".into(),
            }
        );
        let u = resolve_user(Some("1234"), None, None).unwrap();
        assert_eq!(
            u,
            ResolvedUser {
                uid: 1234,
                gid: 0,
                groups: vec![0],
                home: "/".into(),
            }
        );
    }

    #[test]
    fn numeric_uid_found_in_passwd_gets_its_gid_and_groups() {
        let u = resolve(Some("1000")).unwrap();
        assert_eq!(u.gid, 1000);
        assert_eq!(u.groups, vec![1000, 10, 998]);
    }

    #[test]
    fn explicit_group_by_name_or_number_overrides_primary() {
        assert_eq!(resolve(Some("alice:users")).unwrap().gid, 100);
        assert_eq!(resolve(Some("alice:42")).unwrap().gid, 42);
        assert_eq!(resolve(Some("alice:42")).unwrap().groups, vec![42, 10, 998]);
    }

    #[test]
    fn unknown_names_are_clear_errors() {
        assert_eq!(
            resolve(Some("carol")),
            Err(InitFailure::UserNotFound {
                user: "carol".into()
            })
        );
        assert_eq!(
            resolve(Some("alice:nogroup")),
            Err(InitFailure::GroupNotFound {
                group: "nogroup".into()
            })
        );
        assert!(matches!(
            resolve_user(Some("alice"), None, None),
            Err(InitFailure::UserNotFound { .. })
        ));
        let message = resolve(Some("carol")).unwrap_err().to_string();
        assert!(message.contains("carol"), "{message}");
    }

    #[test]
    fn malformed_lines_are_skipped() {
        assert!(matches!(
            resolve(Some("broken")),
            Err(InitFailure::UserNotFound { .. })
        ));
    }
}
