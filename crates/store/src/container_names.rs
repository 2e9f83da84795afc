//! Generated container names, `adjective_surname` as Docker makes them, from kiln's own word
//! lists (people who shaped ceramics, glass and metallurgy, for a tool named after a kiln).

use kiln_image::Digest;

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
