//! Parsing `--mount` values and `--secret` flags.

use kiln_store::CacheSharing;

use super::parse::{parse_ram_size, split_csv};
use super::*;

fn no_vars(word: &str) -> Result<String, String> {
    Ok(word.to_owned())
}

fn parse(raw: &str) -> Result<RunMount, String> {
    parse_mount(raw, &no_vars).map_err(|e| e.to_string())
}

#[test]
fn bind_is_the_default_and_read_only() {
    let m = parse("target=/src,source=app").unwrap();
    assert_eq!(m.kind, MountType::Bind);
    assert_eq!(m.target.as_deref(), Some("/src"));
    assert_eq!(m.source.as_deref(), Some("app"));
    assert!(m.readonly);
    let m = parse("type=bind,dst=/src,rw").unwrap();
    assert!(!m.readonly);
    let m = parse("type=bind,destination=/src,readwrite=true").unwrap();
    assert!(!m.readonly);
    let m = parse("type=bind,target=/src,ro=false").unwrap();
    assert!(!m.readonly);
}

#[test]
fn cache_mount_keys() {
    let m =
        parse("type=cache,target=/root/.cache,id=pip,sharing=locked,mode=0700,uid=1000,gid=1001")
            .unwrap();
    assert_eq!(m.kind, MountType::Cache);
    assert_eq!(m.id.as_deref(), Some("pip"));
    assert_eq!(m.sharing, Some(CacheSharing::Locked));
    assert_eq!(
        (m.mode, m.uid, m.gid),
        (Some(0o700), Some(1000), Some(1001))
    );
    assert!(!m.readonly, "caches are writable by default");
    let m = parse("type=CACHE,target=/c,sharing=Private,ro").unwrap();
    assert_eq!(m.sharing, Some(CacheSharing::Private));
    assert!(m.readonly);
}

#[test]
fn tmpfs_size_uses_binary_units() {
    let m = parse("type=tmpfs,target=/t,size=64m").unwrap();
    assert_eq!(m.size, Some(64 << 20));
    assert_eq!(parse_ram_size("1.5GiB"), Some(3 << 29));
    assert_eq!(parse_ram_size("4096"), Some(4096));
    assert_eq!(parse_ram_size("10 kb"), Some(10240));
    assert_eq!(parse_ram_size("12x"), None);
    assert_eq!(parse_ram_size("m"), None);
    assert!(
        parse("type=tmpfs,target=/t,size=lots")
            .unwrap_err()
            .contains("invalid value for size")
    );
    assert!(
        parse("type=cache,target=/t,size=1m")
            .unwrap_err()
            .contains("unexpected key 'size'")
    );
}

#[test]
fn secret_mounts() {
    let m = parse("type=secret,id=token,required,env=TOKEN").unwrap();
    assert_eq!(m.kind, MountType::Secret);
    assert!(m.required && m.readonly);
    assert_eq!(m.env.as_deref(), Some("TOKEN"));
    let m = parse("type=secret,id=t,required=false,mode=0440,uid=1,gid=2").unwrap();
    assert!(!m.required);
    assert_eq!(m.mode, Some(0o440));
    assert!(
        parse("type=secret")
            .unwrap_err()
            .contains("one of source, target required")
    );
    assert!(
        parse("type=secret,id=a,src=b")
            .unwrap_err()
            .contains("both source and id")
    );
    assert!(
        parse("type=secret,id=a,from=x")
            .unwrap_err()
            .contains("should not have a from")
    );
}

#[test]
fn mistakes_are_reported_like_buildkit() {
    let e = parse("type=volume,target=/x").unwrap_err();
    assert!(e.contains("unsupported mount type \"volume\""), "{e}");
    assert!(e.starts_with("--mount=type=volume,target=/x: "), "{e}");
    let e = parse("type=cache,taget=/x").unwrap_err();
    assert!(
        e.contains("unexpected key 'taget'") && e.contains("did you mean target?"),
        "{e}"
    );
    assert!(
        parse("type=cache,target=/x,sharing=maybe")
            .unwrap_err()
            .contains("unsupported sharing value")
    );
    assert!(
        parse("type=cache,target=/x,mode=999")
            .unwrap_err()
            .contains("invalid value 999 for mode")
    );
    assert!(
        parse("type=cache,target=/x,uid=-1")
            .unwrap_err()
            .contains("invalid value -1 for uid")
    );
    assert!(
        parse("type=bind,target=/x,mode=0755")
            .unwrap_err()
            .contains("mode not allowed for \"bind\"")
    );
    assert!(
        parse("type=bind,target=/x,required")
            .unwrap_err()
            .contains("unexpected key 'required'")
    );
    assert!(
        parse("type=bind,target=/x,sharing=shared")
            .unwrap_err()
            .contains("invalid cache sharing")
    );
    assert!(
        parse("type=bind,target=/x,ro=maybe")
            .unwrap_err()
            .contains("invalid value for ro")
    );
    assert!(
        parse("type=bind,target=/x,oops")
            .unwrap_err()
            .contains("must be a key=value pair")
    );
    assert!(parse("type=cache").unwrap_err().contains("needs target="));
    assert!(
        parse("type=ssh,from=x")
            .unwrap_err()
            .contains("should not have a from")
    );
    assert!(parse("type=ssh,env=X").unwrap_err().contains("'env'"));
    assert!(
        parse("type=bind,target=/x,from=$STAGE")
            .unwrap_err()
            .contains("doesn't support variable expansion")
    );
}

#[test]
fn values_are_expanded_before_they_are_read() {
    let vars = |word: &str| -> Result<String, String> {
        Ok(word.replace("$DIR", "/cache").replace("${KIND}", "cache"))
    };
    let m = parse_mount("type=${KIND},target=$DIR,id=x-$DIR", &vars).unwrap();
    assert_eq!(m.kind, MountType::Cache);
    assert_eq!(m.target.as_deref(), Some("/cache"));
    assert_eq!(m.id.as_deref(), Some("x-/cache"));
    let failing = |_: &str| -> Result<String, String> { Err("X: unset".into()) };
    assert!(
        parse_mount("target=$X", &failing)
            .unwrap_err()
            .to_string()
            .contains("X: unset")
    );
}

#[test]
fn csv_fields_follow_go_rules() {
    assert_eq!(split_csv("a=1,b=2").unwrap(), ["a=1", "b=2"]);
    assert_eq!(
        split_csv("\"target=/a,b\",ro").unwrap(),
        ["target=/a,b", "ro"]
    );
    assert_eq!(split_csv("\"x=\"\"q\"\"\"").unwrap(), ["x=\"q\""]);
    assert_eq!(split_csv("a=1,").unwrap(), ["a=1", ""]);
    assert!(split_csv("a=\"1\"").is_err());
    assert!(split_csv("\"a=1").is_err());
}

#[test]
fn secret_flags_follow_buildx() {
    let none = |_: &str| false;
    assert_eq!(
        parse_secret_flag("id=npm,src=/home/me/.npmrc", &none).unwrap(),
        ("npm".into(), SecretSource::File("/home/me/.npmrc".into()))
    );
    assert_eq!(
        parse_secret_flag("id=tok,env=GH_TOKEN", &none).unwrap(),
        ("tok".into(), SecretSource::Env("GH_TOKEN".into()))
    );
    assert_eq!(
        parse_secret_flag("type=env,id=tok,src=GH_TOKEN", &none).unwrap(),
        ("tok".into(), SecretSource::Env("GH_TOKEN".into()))
    );
    assert_eq!(
        parse_secret_flag("src=/run/key.pem", &none).unwrap(),
        ("key.pem".into(), SecretSource::File("/run/key.pem".into()))
    );
    // A bare id: the variable of that name if it is set, else the file of that name.
    let set = |name: &str| name == "API_KEY";
    assert_eq!(
        parse_secret_flag("id=API_KEY", &set).unwrap(),
        ("API_KEY".into(), SecretSource::Env("API_KEY".into()))
    );
    assert_eq!(
        parse_secret_flag("id=creds", &set).unwrap(),
        ("creds".into(), SecretSource::File("creds".into()))
    );
    assert!(
        parse_secret_flag("id=a,bogus=1", &none)
            .unwrap_err()
            .contains("unexpected key")
    );
    assert!(
        parse_secret_flag("type=ssh,id=a", &none)
            .unwrap_err()
            .contains("unsupported secret type")
    );
    assert!(parse_secret_flag("", &none).is_err());
}

#[test]
fn secrets_load_from_files_and_env_and_never_print() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s");
    std::fs::write(&file, "hunter2").unwrap();
    let env = |name: &str| (name == "V").then(|| b"from-env".to_vec());
    let s = load_secret("a", &SecretSource::File(file), &env).unwrap();
    assert_eq!(s.bytes(), b"hunter2");
    assert!(!format!("{s:?}").contains("hunter2"));
    let s = load_secret("b", &SecretSource::Env("V".into()), &env).unwrap();
    assert_eq!(s.bytes(), b"from-env");
    let e = load_secret("c", &SecretSource::Env("NOPE".into()), &env).unwrap_err();
    assert!(e.contains("NOPE is not set"), "{e}");
    let e = load_secret("d", &SecretSource::File(dir.path().join("missing")), &env).unwrap_err();
    assert!(e.contains("secret d: cannot read"), "{e}");
}

fn key_of(mount: &PlannedMount) -> kiln_store::CacheKey {
    let mut key = crate::cache::KeyBuilder::new("RUN", None);
    mount.add_to_key(&mut key);
    key.finish()
}

#[test]
fn secret_bytes_never_change_the_key_but_where_it_goes_does() {
    let secret = |bytes: &[u8], target: &str| PlannedMount::SecretFile {
        target: target.into(),
        id: "token".into(),
        secret: Some(Secret::new(bytes.to_vec())),
        mode: 0o400,
        uid: 0,
        gid: 0,
        required: false,
    };
    let a = key_of(&secret(b"one", "/run/secrets/token"));
    assert_eq!(a, key_of(&secret(b"two", "/run/secrets/token")));
    assert_ne!(a, key_of(&secret(b"one", "/etc/token")));
    let env = |bytes: &[u8], name: &str| PlannedMount::SecretEnv {
        name: name.into(),
        id: "token".into(),
        secret: Some(Secret::new(bytes.to_vec())),
        required: true,
    };
    assert_eq!(key_of(&env(b"one", "T")), key_of(&env(b"two", "T")));
    assert_ne!(key_of(&env(b"one", "T")), key_of(&env(b"one", "U")));
}

#[test]
fn cache_and_tmpfs_settings_change_the_key() {
    let cache = |dir: &[u8], sharing, readonly| PlannedMount::Cache {
        target: "/c".into(),
        id: "/c".into(),
        dir_key: kiln_image::Digest::of(dir),
        sharing,
        settings: kiln_store::CacheDirSettings::default(),
        readonly,
        seed: None,
    };
    let base = key_of(&cache(b"a", CacheSharing::Shared, false));
    assert_eq!(base, key_of(&cache(b"a", CacheSharing::Shared, false)));
    assert_ne!(base, key_of(&cache(b"b", CacheSharing::Shared, false)));
    assert_ne!(base, key_of(&cache(b"a", CacheSharing::Locked, false)));
    assert_ne!(base, key_of(&cache(b"a", CacheSharing::Shared, true)));
    let tmpfs = |size| PlannedMount::Tmpfs {
        target: "/t".into(),
        size,
    };
    assert_ne!(key_of(&tmpfs(None)), key_of(&tmpfs(Some(1 << 20))));
}
