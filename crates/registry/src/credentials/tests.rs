use std::os::unix::fs::PermissionsExt;

use super::*;

fn basic(user: &str, pass: &str) -> Credential {
    Credential::Basic {
        username: user.into(),
        password: pass.into(),
    }
}

fn store_with(config: &str) -> (tempfile::TempDir, CredentialStore) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    let store = CredentialStore::at(dir.path());
    (dir, store)
}

#[test]
fn docker_hub_aliases_are_one_key_and_schemes_and_paths_are_stripped() {
    for name in [
        "docker.io",
        "index.docker.io",
        "registry-1.docker.io",
        "https://index.docker.io/v1/",
    ] {
        assert_eq!(server_key(name), DOCKER_HUB_KEY, "{name}");
    }
    assert_eq!(server_key("127.0.0.1:5000"), "127.0.0.1:5000");
    assert_eq!(server_key("https://reg.lan:5000/v1/"), "reg.lan:5000");
    assert_eq!(server_key("http://reg.lan"), "reg.lan");
}

#[test]
fn reads_base64_auth_username_password_and_identity_tokens() {
    // "alice:s3cr:et" — the password may itself contain a colon.
    let (_dir, store) = store_with(
        r#"{"auths":{
            "https://index.docker.io/v1/":{"auth":"YWxpY2U6czNjcjpldA=="},
            "https://reg.lan:5000/v1/":{"username":"bob","password":"pw"},
            "tok.lan":{"auth":"","identitytoken":"refresh-1"},
            "empty.lan":{}
        }}"#,
    );
    assert_eq!(
        store.get("registry-1.docker.io").unwrap(),
        Some(basic("alice", "s3cr:et"))
    );
    assert_eq!(
        store.get("docker.io").unwrap(),
        Some(basic("alice", "s3cr:et"))
    );
    assert_eq!(store.get("reg.lan:5000").unwrap(), Some(basic("bob", "pw")));
    assert_eq!(
        store.get("tok.lan").unwrap(),
        Some(Credential::IdentityToken("refresh-1".into()))
    );
    assert_eq!(store.get("empty.lan").unwrap(), None);
    assert_eq!(store.get("other.lan").unwrap(), None);
}

#[test]
fn missing_file_means_no_credentials_and_bad_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = CredentialStore::at(dir.path().join("nope"));
    assert_eq!(store.get("x.lan").unwrap(), None);

    let (_dir, store) = store_with("{not json");
    let err = store.get("x.lan").unwrap_err().to_string();
    assert!(
        err.contains("config.json is not a valid Docker config file"),
        "{err}"
    );

    let (_dir, store) = store_with(r#"{"auths":{"x.lan":{"auth":"bm9jb2xvbg=="}}}"#);
    let err = store.get("x.lan").unwrap_err().to_string();
    assert!(err.contains("user:password"), "{err}");
}

#[test]
fn debug_output_never_shows_secrets() {
    let text = format!(
        "{:?} {:?}",
        basic("alice", "hunter2"),
        Credential::IdentityToken("tok-123".into())
    );
    assert!(
        !text.contains("hunter2") && !text.contains("tok-123"),
        "{text}"
    );
    assert!(text.contains("alice"), "{text}");
}

#[test]
fn store_writes_a_private_file_atomically_and_keeps_other_fields() {
    let (dir, store) = store_with(
        r#"{"auths":{"https://reg.lan/v1/":{"auth":"b2xkOm9sZA=="}},"psFormat":"table","proxies":{"default":{}}}"#,
    );
    let where_ = store.store("reg.lan", &basic("new", "pw")).unwrap();
    assert_eq!(where_, CredentialLocation::File(store.config_path()));
    let mode = std::fs::metadata(store.config_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let doc: Value = serde_json::from_slice(&std::fs::read(store.config_path()).unwrap()).unwrap();
    assert_eq!(doc["psFormat"], "table");
    assert!(doc["proxies"]["default"].is_object());
    // The alias key written by another tool is replaced, not duplicated.
    let auths = doc["auths"].as_object().unwrap();
    assert_eq!(auths.len(), 1, "{doc}");
    assert_eq!(auths["reg.lan"]["auth"], BASE64.encode("new:pw"));
    assert_eq!(store.get("reg.lan").unwrap(), Some(basic("new", "pw")));
    // No temp files are left beside it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("config.json")]);

    store
        .store("index.docker.io", &Credential::IdentityToken("rt".into()))
        .unwrap();
    let doc: Value = serde_json::from_slice(&std::fs::read(store.config_path()).unwrap()).unwrap();
    assert_eq!(doc["auths"][DOCKER_HUB_KEY]["identitytoken"], "rt");
    assert_eq!(
        store.get("docker.io").unwrap(),
        Some(Credential::IdentityToken("rt".into()))
    );

    assert!(store.erase("registry-1.docker.io").unwrap());
    assert_eq!(store.get("docker.io").unwrap(), None);
    assert!(!store.erase("docker.io").unwrap(), "nothing left to erase");
    assert_eq!(store.get("reg.lan").unwrap(), Some(basic("new", "pw")));
}

#[test]
fn store_creates_the_config_dir_private() {
    let dir = tempfile::tempdir().unwrap();
    let store = CredentialStore::at(dir.path().join("fresh/.docker"));
    store.store("reg.lan", &basic("u", "p")).unwrap();
    let mode = std::fs::metadata(dir.path().join("fresh/.docker"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    assert_eq!(store.get("reg.lan").unwrap(), Some(basic("u", "p")));
}

/// A helper keeping one credential per server in files under `state`, as the real helpers do in
/// a keychain: `get` prints the helper JSON, `store` saves its stdin, `erase` removes it.
fn write_helper(bin: &std::path::Path, state: &std::path::Path, name: &str) {
    let script = format!(
        r#"#!/bin/sh
set -e
state={state}
case "$1" in
  get) url=$(cat); f="$state/$(echo "$url" | tr '/:' '__')"
       if [ -f "$f" ]; then cat "$f"; else echo "credentials not found in native keychain"; exit 1; fi ;;
  store) json=$(cat); url=$(echo "$json" | sed 's/.*"ServerURL":"\([^"]*\)".*/\1/')
       echo "$json" > "$state/$(echo "$url" | tr '/:' '__')" ;;
  erase) url=$(cat); f="$state/$(echo "$url" | tr '/:' '__')"
       if [ -f "$f" ]; then rm "$f"; else echo "credentials not found in native keychain"; exit 1; fi ;;
  *) echo "unknown action" >&2; exit 2 ;;
esac
"#,
        state = state.display()
    );
    let path = bin.join(format!("docker-credential-{name}"));
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn helper_setup(config: &str) -> (tempfile::TempDir, CredentialStore) {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["bin", "state", "docker"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
    }
    write_helper(&dir.path().join("bin"), &dir.path().join("state"), "kt");
    std::fs::write(dir.path().join("docker/config.json"), config).unwrap();
    let path = format!("{}:/usr/bin:/bin", dir.path().join("bin").display());
    let store = CredentialStore::at(dir.path().join("docker")).with_helper_search_path(path);
    (dir, store)
}

#[test]
fn creds_store_helper_gets_stores_and_erases() {
    let (dir, store) = helper_setup(r#"{"credsStore":"kt"}"#);
    assert_eq!(
        store.get("reg.lan:5000").unwrap(),
        None,
        "not found is no credentials"
    );
    let location = store.store("reg.lan:5000", &basic("u", "p:w")).unwrap();
    assert_eq!(location, CredentialLocation::Helper("kt".into()));
    assert_eq!(store.get("reg.lan:5000").unwrap(), Some(basic("u", "p:w")));
    // The secret went to the helper; the file only lists the registry.
    let file = std::fs::read_to_string(store.config_path()).unwrap();
    assert!(
        !file.contains("p:w") && file.contains("reg.lan:5000"),
        "{file}"
    );
    assert!(std::fs::read_dir(dir.path().join("state")).unwrap().count() == 1);

    store
        .store("docker.io", &Credential::IdentityToken("rt-9".into()))
        .unwrap();
    let saved =
        std::fs::read_to_string(dir.path().join("state/https___index.docker.io_v1_")).unwrap();
    assert!(saved.contains(r#""Username":"<token>""#), "{saved}");
    assert_eq!(
        store.get("index.docker.io").unwrap(),
        Some(Credential::IdentityToken("rt-9".into()))
    );

    assert!(store.erase("reg.lan:5000").unwrap());
    assert_eq!(store.get("reg.lan:5000").unwrap(), None);
    assert!(!store.erase("reg.lan:5000").unwrap());
}

#[test]
fn cred_helpers_win_per_registry_over_the_file_and_failures_are_named() {
    let (_dir, store) = helper_setup(
        r#"{"credHelpers":{"helped.lan":"kt","broken.lan":"missing"},
            "auths":{"plain.lan":{"auth":"YTpi"}}}"#,
    );
    assert_eq!(store.get("plain.lan").unwrap(), Some(basic("a", "b")));
    assert_eq!(
        store.location("helped.lan").unwrap(),
        CredentialLocation::Helper("kt".into())
    );
    store.store("helped.lan", &basic("h", "s")).unwrap();
    assert_eq!(store.get("helped.lan").unwrap(), Some(basic("h", "s")));
    let err = store.get("broken.lan").unwrap_err().to_string();
    assert!(
        err.contains("docker-credential-missing get failed: cannot run"),
        "{err}"
    );
}
