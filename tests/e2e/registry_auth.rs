//! Credentials, login/logout and TLS against real registries: htpasswd Basic auth over TLS with a
//! test CA (and mutual TLS), and the token flow Docker Hub uses (`auth: token` with a loopback
//! token issuer signing JWTs). Every kiln here gets its own `$DOCKER_CONFIG` and certs.d.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use kiln_testkit::{TlsRegistry, TokenRegistry};

use super::harness::{Kiln, assert_success, stderr, stdout};

/// A kiln with its own Docker config dir and certs.d, sharing the harness store and registry.
struct AuthKiln {
    k: Kiln,
    docker_config: tempfile::TempDir,
    certs_dir: PathBuf,
    /// Prepended to `PATH` (credential helpers).
    bin_dir: Option<PathBuf>,
}

impl AuthKiln {
    fn new(certs_dir: &Path) -> AuthKiln {
        AuthKiln {
            k: Kiln::new(),
            docker_config: tempfile::tempdir().unwrap(),
            certs_dir: certs_dir.to_owned(),
            bin_dir: None,
        }
    }

    fn run(&self, root: &Path, args: &[&str], stdin: &str) -> Output {
        let mut command = crate::e2e::harness::kiln_command();
        command
            .env("KILN_ROOT", root)
            .env("DOCKER_CONFIG", self.docker_config.path())
            .env("KILN_REGISTRY_CERTS_DIR", &self.certs_dir)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(bin) = &self.bin_dir {
            let path = std::env::var("PATH").unwrap_or_default();
            command.env("PATH", format!("{}:{path}", bin.display()));
        }
        let mut child = command.spawn().expect("run kiln");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(self.k.root.path(), args, "");
        assert_success(&out, args);
        stdout(&out)
    }

    fn login(&self, registry: &str, user: &str, password: &str) -> Output {
        self.run(
            self.k.root.path(),
            &["login", "-u", user, "--password-stdin", registry],
            &format!("{password}\n"),
        )
    }

    fn config(&self) -> serde_json::Value {
        let path = self.docker_config.path().join("config.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    /// The busybox image from the harness registry, named `remote` in the store.
    fn image_named(&self, remote: &str) {
        self.ok(&["pull", &self.k.base]);
        self.ok(&["tag", &self.k.base, remote]);
    }
}

fn assert_unauthorized(out: &Output, registry: &str, hint: &str) {
    assert!(!out.status.success(), "expected failure: {}", stdout(out));
    let err = stderr(out);
    assert!(
        err.contains(&format!(
            "unauthorized: authentication required at {registry} ({hint}"
        )),
        "{err}"
    );
}

#[test]
fn htpasswd_over_tls_login_push_pull_logout() {
    let reg = TlsRegistry::start(&[("alice", "s3cret")], false).unwrap();
    let k = AuthKiln::new(reg.certs_dir.path());
    let addr = reg.registry.addr();
    let remote = format!("{addr}/team/bb:1");
    k.image_named(&remote);

    // Without credentials the push is refused with a hint, at once.
    let out = k.run(k.k.root.path(), &["push", &remote], "");
    assert_unauthorized(&out, &addr, "no credentials; run `kiln login");

    let out = k.login(&addr, "alice", "wrong");
    assert_unauthorized(&out, &addr, "wrong username or password?");
    assert!(
        !stderr(&out).contains("wrong\n"),
        "the password is never printed"
    );
    assert!(!k.docker_config.path().join("config.json").exists());

    let out = k.login(&addr, "alice", "s3cret");
    assert_success(&out, &["login"]);
    assert!(stdout(&out).contains("Login Succeeded"), "{}", stdout(&out));
    assert!(!stderr(&out).contains("s3cret") && !stdout(&out).contains("s3cret"));
    let config = k.config();
    assert_eq!(config["auths"][&addr]["auth"], "YWxpY2U6czNjcmV0"); // alice:s3cret
    let mode = std::fs::metadata(k.docker_config.path().join("config.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let out = k.ok(&["push", &remote]);
    assert!(out.contains("digest: sha256:"), "{out}");
    // A fresh store pulls it back over TLS with the stored credentials.
    let other = k.k.fresh_store();
    let out = k.run(other.path(), &["pull", &remote], "");
    assert_success(&out, &["pull", &remote]);

    let out = k.ok(&["logout", &addr]);
    assert!(
        out.contains(&format!("Removing login credentials for {addr}")),
        "{out}"
    );
    assert!(k.config()["auths"].get(&addr).is_none(), "{}", k.config());
    let out = k.ok(&["logout", &addr]);
    assert!(out.contains("Not logged in"), "{out}");
    let third = k.k.fresh_store();
    let out = k.run(third.path(), &["pull", &remote], "");
    assert_unauthorized(&out, &addr, "no credentials");
}

#[test]
fn a_registry_requiring_client_certificates_gets_the_certs_d_identity() {
    let reg = TlsRegistry::start(&[("alice", "pw")], true).unwrap();
    let k = AuthKiln::new(reg.certs_dir.path());
    let addr = reg.registry.addr();
    let out = k.login(&addr, "alice", "pw");
    assert!(!out.status.success(), "no client certificate yet");
    reg.install_client_cert().unwrap();
    let out = k.login(&addr, "alice", "pw");
    assert_success(&out, &["login with a client certificate"]);
    let remote = format!("{addr}/mtls/bb:1");
    k.image_named(&remote);
    k.ok(&["push", &remote]);
}

#[test]
fn tls_registries_are_verified_against_the_certs_d_ca() {
    let reg = TlsRegistry::start(&[("alice", "pw")], false).unwrap();
    // certs.d names the registry but trusts another CA.
    let other_ca = kiln_testkit::TestCa::new().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let host_dir = certs.path().join(reg.registry.addr());
    std::fs::create_dir(&host_dir).unwrap();
    std::fs::copy(other_ca.cert_path(), host_dir.join("ca.crt")).unwrap();
    let k = AuthKiln::new(certs.path());
    let out = k.login(&reg.registry.addr(), "alice", "pw");
    assert!(!out.status.success());
    let err = stderr(&out).to_lowercase();
    assert!(err.contains("certificate"), "{err}");
}

#[test]
fn token_auth_login_stores_an_identity_token_and_push_pull_use_it() {
    let reg = TokenRegistry::start(&[("bob", "hunter2")]).unwrap();
    let certs = tempfile::tempdir().unwrap();
    let k = AuthKiln::new(certs.path());
    let addr = reg.registry.addr();
    let remote = format!("{addr}/bob/app:v1");
    k.image_named(&remote);

    // Anonymous tokens carry no access: the registry refuses, and kiln says how to fix it.
    let out = k.run(k.k.root.path(), &["push", &remote], "");
    assert_unauthorized(&out, &addr, "no credentials; run `kiln login");

    let before = reg.token_requests().len();
    let out = k.login(&addr, "bob", "wrong");
    assert_unauthorized(&out, &addr, "wrong username or password?");
    // Only requests carrying credentials: an anonymous token request of the push above may
    // still be in flight when that process exits (a parallel task cut short), and the issuer
    // records it late.
    let refused: Vec<_> = reg.token_requests()[before..]
        .iter()
        .filter(|r| r.basic_user.is_some())
        .cloned()
        .collect();
    assert_eq!(refused.len(), 1, "no retry storm: {refused:?}");
    assert_eq!(refused[0].status, 401);

    let out = k.login(&addr, "bob", "hunter2");
    assert_success(&out, &["login"]);
    let config = k.config();
    let entry = &config["auths"][&addr];
    assert!(
        entry["identitytoken"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{config}"
    );
    assert!(
        entry.get("auth").is_none(),
        "the password is not stored: {config}"
    );

    let before = reg.token_requests().len();
    k.ok(&["push", &remote]);
    let used: Vec<_> = reg.token_requests()[before..].to_vec();
    assert!(!used.is_empty());
    assert!(
        used.iter().all(|r| r.method == "POST" && r.status == 200),
        "the identity token is exchanged by POST: {used:?}"
    );
    assert!(used.len() <= 2, "tokens are reused per scope: {used:?}");

    let info = kiln_testkit::skopeo_inspect_raw(&remote);
    assert!(info.is_err(), "skopeo without credentials is refused too");
    let other = k.k.fresh_store();
    let out = k.run(other.path(), &["pull", &remote], "");
    assert_success(&out, &["pull", &remote]);
}

#[test]
fn a_credential_helper_stores_and_serves_the_secret() {
    let reg = TlsRegistry::start(&[("carol", "pw-carol")], false).unwrap();
    let mut k = AuthKiln::new(reg.certs_dir.path());
    let bin = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    // docker-credential-test: one file per server URL, the helper protocol on stdin/stdout.
    let script = format!(
        r#"#!/bin/sh
state={state}
case "$1" in
  get) url=$(cat); f="$state/$(echo "$url" | tr '/:' '__')"
       if [ -f "$f" ]; then cat "$f"; else echo "credentials not found in native keychain"; exit 1; fi ;;
  store) json=$(cat); url=$(echo "$json" | sed 's/.*"ServerURL":"\([^"]*\)".*/\1/')
       echo "$json" > "$state/$(echo "$url" | tr '/:' '__')" ;;
  erase) url=$(cat); rm "$state/$(echo "$url" | tr '/:' '__')" 2>/dev/null || {{ echo "credentials not found in native keychain"; exit 1; }} ;;
esac
"#,
        state = state.path().display()
    );
    let helper = bin.path().join("docker-credential-test");
    std::fs::write(&helper, script).unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    k.bin_dir = Some(bin.path().to_owned());
    std::fs::write(
        k.docker_config.path().join("config.json"),
        r#"{"credsStore":"test"}"#,
    )
    .unwrap();
    let addr = reg.registry.addr();

    let out = k.login(&addr, "carol", "pw-carol");
    assert_success(&out, &["login"]);
    assert!(
        stderr(&out).contains("docker-credential-test"),
        "{}",
        stderr(&out)
    );
    let file = std::fs::read_to_string(k.docker_config.path().join("config.json")).unwrap();
    assert!(!file.contains("pw-carol") && file.contains(&addr), "{file}");
    assert_eq!(std::fs::read_dir(state.path()).unwrap().count(), 1);

    let remote = format!("{addr}/carol/bb:1");
    k.image_named(&remote);
    k.ok(&["push", &remote]);

    k.ok(&["logout", &addr]);
    assert_eq!(std::fs::read_dir(state.path()).unwrap().count(), 0);
    let other = k.k.fresh_store();
    let out = k.run(other.path(), &["pull", &remote], "");
    assert_unauthorized(&out, &addr, "no credentials");
}
