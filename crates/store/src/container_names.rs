//! Container names: generated ones, `adjective_surname` as Docker makes them, from kiln's own
//! word lists (people who shaped ceramics, glass and metallurgy, for a tool named after a
//! kiln), and renaming (docker-compose renames a container aside before recreating it).
//!
//! A rename takes the containers lock, as creation does, so two containers never end up with
//! one name; the record itself is rewritten under its own lock, beside a running supervisor.

use kiln_image::Digest;

use crate::Store;
use crate::container_record::ContainerRecord;
use crate::containers::{ContainerError, ContainerResult, validate_name};

impl Store {
    /// Gives the container `id` the name `new_name` (a leading `/` is dropped). A name another
    /// container has is [`ContainerError::NameInUse`]; its own name is no change.
    pub fn rename_container(&self, id: &str, new_name: &str) -> ContainerResult<ContainerRecord> {
        let new_name = new_name.trim_start_matches('/');
        validate_name(new_name, "container")?;
        let _lock = self.lock_containers()?;
        let all = self.list_containers()?;
        if !all.iter().any(|c| c.id == id) {
            return Err(ContainerError::NoSuchContainer(id.to_owned()));
        }
        if let Some(other) = all.into_iter().find(|c| c.name == new_name && c.id != id) {
            return Err(ContainerError::NameInUse {
                name: new_name.to_owned(),
                id: other.id,
            });
        }
        self.update_container(id, |record| record.name = new_name.to_owned())
    }
}

const ADJECTIVES: &[&str] = &[
    "amber", "bold", "brisk", "calm", "clever", "cosy", "crisp", "daring", "deft", "eager",
    "earnest", "fervent", "fiery", "gentle", "glowing", "golden", "hardy", "honest", "humble",
    "jolly", "keen", "kind", "lively", "lucid", "merry", "mellow", "nimble", "patient", "plucky",
    "polished", "quiet", "radiant", "rapid", "ruddy", "serene", "shiny", "smooth", "spry",
    "steady", "sturdy", "sunny", "swift", "tempered", "tidy", "vivid", "warm", "wise", "zesty",
];

const SURNAMES: &[&str] = &[
    "agricola",
    "bottger",
    "cardew",
    "chihuly",
    "cooper",
    "darby",
    "deck",
    "faraday",
    "gates",
    "hamada",
    "kaendler",
    "kenzan",
    "kiss",
    "leach",
    "lucie",
    "martinez",
    "nampeyo",
    "natzler",
    "ohr",
    "palissy",
    "perkin",
    "ravenscroft",
    "rie",
    "sadler",
    "seger",
    "shoji",
    "soldner",
    "spode",
    "tiffany",
    "toft",
    "voulkos",
    "wedgwood",
    "whieldon",
    "wood",
    "yanagi",
    "zsolnay",
];

/// The `attempt`-th candidate name for the container `id`; callers try attempts in order until
/// one is free. After every pair was tried, a number is appended, as Docker does on retries.
pub(crate) fn generate_name(id: &str, attempt: u32) -> String {
    let digest = Digest::of(format!("{id}\0{attempt}").as_bytes());
    let bytes = digest.hex().as_bytes();
    let pick = |offset: usize, len: usize| {
        let n = u32::from_str_radix(
            std::str::from_utf8(&bytes[offset..offset + 8]).unwrap_or("0"),
            16,
        )
        .unwrap_or(0);
        n as usize % len
    };
    let name = format!(
        "{}_{}",
        ADJECTIVES[pick(0, ADJECTIVES.len())],
        SURNAMES[pick(8, SURNAMES.len())]
    );
    let combinations = (ADJECTIVES.len() * SURNAMES.len()) as u32;
    if attempt < combinations {
        name
    } else {
        format!("{name}{}", attempt / combinations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containers::tests::record;
    use crate::test_support::store;

    #[test]
    fn renames_keep_names_unique_and_valid() {
        let (_dir, store) = store();
        let mut web = record(&store, "web", "2024-01-01T00:00:00Z");
        let mut api = record(&store, "api", "2024-01-02T00:00:00Z");
        store.create_container(&mut web).unwrap();
        store.create_container(&mut api).unwrap();

        let renamed = store.rename_container(&web.id, "/old_web").unwrap();
        assert_eq!(renamed.name, "old_web");
        assert_eq!(store.find_container("old_web").unwrap().id, web.id);
        assert!(matches!(
            store.find_container("web"),
            Err(ContainerError::NoSuchContainer(_))
        ));
        // The freed name can be taken again; its own name is no conflict.
        store.rename_container(&api.id, "web").unwrap();
        store.rename_container(&api.id, "web").unwrap();

        let err = store.rename_container(&web.id, "web").unwrap_err();
        assert!(matches!(err, ContainerError::NameInUse { ref id, .. } if *id == api.id));
        assert_eq!(err.kind(), kiln_error::ErrorKind::Conflict);
        let err = store.rename_container(&web.id, "a/b").unwrap_err();
        assert_eq!(err.kind(), kiln_error::ErrorKind::InvalidArgument);
        assert!(matches!(
            store.rename_container(&"0".repeat(64), "ghost"),
            Err(ContainerError::NoSuchContainer(_))
        ));
        assert_eq!(store.find_container(&web.id).unwrap().name, "old_web");
    }

    #[test]
    fn names_are_adjective_underscore_surname_and_vary() {
        let a = generate_name("abc", 0);
        let (adjective, surname) = a.split_once('_').unwrap();
        assert!(
            ADJECTIVES.contains(&adjective) && SURNAMES.contains(&surname),
            "{a}"
        );
        let distinct: std::collections::BTreeSet<_> =
            (0..50).map(|i| generate_name("abc", i)).collect();
        assert!(distinct.len() > 20);
        assert_eq!(
            generate_name("abc", 0),
            a,
            "deterministic per id and attempt"
        );
    }
}
