//! `--mount=` values as BuildKit reads them: one CSV record of `key=value` fields (and the bare
//! flags `ro`, `rw`, `readonly`, `readwrite`, `required`), with every value expanded like a
//! Dockerfile word before it is interpreted. `type` defaults to `bind`.

use kiln_store::CacheSharing;

/// The kind of a `RUN --mount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountType {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

impl MountType {
    pub fn as_str(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

/// One `--mount` flag, parsed and expanded but not yet resolved against the stage (relative
/// targets, default ids and the `from` source are resolved by the engine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunMount {
    pub kind: MountType,
    pub target: Option<String>,
    pub source: Option<String>,
    pub from: Option<String>,
    pub id: Option<String>,
    pub sharing: Option<CacheSharing>,
    pub readonly: bool,
    pub required: bool,
    /// `env=` of a secret: expose it as this environment variable.
    pub env: Option<String>,
    /// `size=` of a tmpfs, in bytes.
    pub size: Option<u64>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// Why a `--mount` value was rejected. The message is what BuildKit says, more or less.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--mount={raw}: {reason}")]
pub struct MountError {
    pub raw: String,
    pub reason: String,
}

const ALL_KEYS: &[&str] = &[
    "type",
    "from",
    "source",
    "src",
    "target",
    "dst",
    "destination",
    "readonly",
    "ro",
    "readwrite",
    "rw",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "env",
];

/// Parses one `--mount` value. `expand` substitutes variables in a value (the stage's ENV and
/// ARGs, as for other instructions) and returns an error message on failure.
pub fn parse_mount(
    raw: &str,
    expand: &dyn Fn(&str) -> Result<String, String>,
) -> Result<RunMount, MountError> {
    let fail = |reason: String| MountError {
        raw: raw.to_owned(),
        reason,
    };
    let mut m = RunMount {
        kind: MountType::Bind,
        target: None,
        source: None,
        from: None,
        id: None,
        sharing: None,
        readonly: false,
        required: false,
        env: None,
        size: None,
        mode: None,
        uid: None,
        gid: None,
    };
    // Unless `ro`/`rw` says otherwise, bind and secret mounts are read-only, caches and tmpfs not.
    let mut readonly_given = false;
    for field in split_csv(raw).map_err(fail)? {
        let Some((key, value)) = field.split_once('=') else {
            let key = field.to_ascii_lowercase();
            match key.as_str() {
                "readonly" | "ro" => {
                    m.readonly = true;
                    readonly_given = true;
                }
                "readwrite" | "rw" => {
                    m.readonly = false;
                    readonly_given = true;
                }
                "required" if matches!(m.kind, MountType::Secret | MountType::Ssh) => {
                    m.required = true;
                }
                "required" => {
                    return Err(fail(format!(
                        "unexpected key 'required' for mount type '{}'",
                        m.kind.as_str()
                    )));
                }
                _ => {
                    return Err(fail(format!(
                        "invalid field '{field}' must be a key=value pair"
                    )));
                }
            }
            continue;
        };
        let key = key.to_ascii_lowercase();
        if key == "from" && value.find('$').is_some_and(|i| i + 1 != value.len()) {
            return Err(fail(
                "'from' doesn't support variable expansion, define alias stage instead".into(),
            ));
        }
        let value = expand(value).map_err(fail)?;
        let bool_value = |value: &str| {
            parse_go_bool(value).ok_or_else(|| fail(format!("invalid value for {key}: {value}")))
        };
        let number = |base: u32, what: &str| {
            u32::from_str_radix(&value, base)
                .map_err(|_| fail(format!("invalid value {value} for {what}")))
        };
        match key.as_str() {
            "type" => {
                m.kind = match value.to_ascii_lowercase().as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => MountType::Ssh,
                    _ => {
                        return Err(fail(format!(
                            "unsupported mount type {value:?} (expected bind, cache, tmpfs, \
                             secret or ssh)"
                        )));
                    }
                }
            }
            "from" => m.from = Some(value),
            "source" | "src" => m.source = Some(value),
            "target" | "dst" | "destination" => m.target = Some(value),
            "readonly" | "ro" => {
                m.readonly = bool_value(&value)?;
                readonly_given = true;
            }
            "readwrite" | "rw" => {
                m.readonly = !bool_value(&value)?;
                readonly_given = true;
            }
            "required" if matches!(m.kind, MountType::Secret | MountType::Ssh) => {
                m.required = bool_value(&value)?;
            }
            "size" if m.kind == MountType::Tmpfs => {
                m.size = Some(
                    parse_ram_size(&value)
                        .ok_or_else(|| fail(format!("invalid value for size: {value}")))?,
                );
            }
            "required" | "size" => {
                return Err(fail(format!(
                    "unexpected key '{key}' for mount type '{}'",
                    m.kind.as_str()
                )));
            }
            "id" => m.id = Some(value),
            "sharing" => {
                m.sharing = Some(match value.to_ascii_lowercase().as_str() {
                    "shared" => CacheSharing::Shared,
                    "private" => CacheSharing::Private,
                    "locked" => CacheSharing::Locked,
                    _ => {
                        return Err(fail(format!(
                            "unsupported sharing value {value:?} (expected shared, private \
                             or locked)"
                        )));
                    }
                })
            }
            "mode" => m.mode = Some(number(8, "mode")?),
            "uid" => m.uid = Some(number(10, "uid")?),
            "gid" => m.gid = Some(number(10, "gid")?),
            "env" => m.env = Some(value),
            _ => {
                let hint = suggest(&key, ALL_KEYS)
                    .map(|k| format!(" (did you mean {k}?)"))
                    .unwrap_or_default();
                return Err(fail(format!("unexpected key '{key}' in '{field}'{hint}")));
            }
        }
    }
    validate(&mut m, readonly_given).map_err(fail)?;
    Ok(m)
}

/// The cross-field rules BuildKit applies after reading every field.
fn validate(m: &mut RunMount, readonly_given: bool) -> Result<(), String> {
    let kind = m.kind.as_str();
    let file_info_allowed = matches!(
        m.kind,
        MountType::Secret | MountType::Ssh | MountType::Cache
    );
    if !file_info_allowed {
        for (name, given) in [
            ("mode", m.mode.is_some()),
            ("uid", m.uid.is_some()),
            ("gid", m.gid.is_some()),
        ] {
            if given {
                return Err(format!("{name} not allowed for {kind:?} type mounts"));
            }
        }
    }
    if !readonly_given {
        m.readonly = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
    }
    if m.sharing.is_some() && m.kind != MountType::Cache {
        return Err(format!("invalid cache sharing set for {kind} mount"));
    }
    match m.kind {
        MountType::Secret => {
            if m.from.is_some() {
                return Err("secret mount should not have a from".into());
            }
            if m.source.is_none() && m.target.is_none() && m.id.is_none() {
                return Err("invalid secret mount. one of source, target required".into());
            }
            if m.source.is_some() && m.id.is_some() {
                return Err("both source and id can't be set".into());
            }
        }
        MountType::Ssh => {
            if m.from.is_some() {
                return Err("ssh mount should not have a from".into());
            }
            if m.source.is_some() {
                return Err("unexpected key 'source' for mount type 'ssh'".into());
            }
            if m.env.is_some() {
                return Err("unexpected key 'env' for mount type 'ssh'".into());
            }
        }
        MountType::Bind | MountType::Cache | MountType::Tmpfs => {
            if m.target.as_deref().is_none_or(str::is_empty) {
                return Err(format!("a {kind} mount needs target="));
            }
            if m.env.is_some() {
                return Err(format!("unexpected key 'env' for mount type '{kind}'"));
            }
        }
    }
    Ok(())
}

/// Splits one CSV record as Go's `encoding/csv` does: fields separated by commas; a field that
/// starts with `"` is quoted (`""` inside stands for one quote) and may contain commas; a quote
/// anywhere else is an error.
pub(crate) fn split_csv(record: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = record.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => {
                        return Err(
                            "failed to parse csv mounts: extraneous or missing \" in quoted-field"
                                .into(),
                        );
                    }
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => {}
                Some(_) => {
                    return Err(
                        "failed to parse csv mounts: extraneous or missing \" in quoted-field"
                            .into(),
                    );
                }
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => {
                        return Err(
                            "failed to parse csv mounts: bare \" in non-quoted-field".into()
                        );
                    }
                    Some(c) => field.push(c),
                }
            }
        }
        fields.push(field);
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// A size as docker's `units.RAMInBytes` reads it: a decimal number, optional space, then an
/// optional binary unit `k`, `m`, `g`, `t` or `p` (any case, optionally followed by `b` or
/// `ib`): `64m`, `1.5GiB`, `4096`.
pub(crate) fn parse_ram_size(value: &str) -> Option<u64> {
    let number_end = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(number_end);
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return None;
    }
    let number: f64 = number.parse().ok()?;
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(&unit);
    let power = match unit {
        "" => 0,
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        "p" => 5,
        _ => return None,
    };
    let bytes = number * 1024f64.powi(power);
    (bytes.is_finite() && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// The known key closest to a mistyped one, if any is close (edit distance at most 2).
fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}
