//! A kiln invocation harness: a private store, a registry with busybox in it, and helpers to run
//! the binary and look at its results.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kiln_testkit::TestRegistry;

pub struct Kiln {
    pub root: tempfile::TempDir,
    pub registry: TestRegistry,
    /// `127.0.0.1:PORT/busybox:latest`
    pub base: String,
}

pub fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(rel)
}

/// The kiln binary, to run in the machine's own network namespace: its containers' default
/// network is kept to the user-mode one (slirp4netns), so no test makes the default bridge and
/// its nftables rules there. Tests of bridges, the bridge as the default included, run kiln in
/// network namespaces they create (`bridges::TestNet`, `Daemon::start_in_netns`), without it.
pub fn kiln_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
    in_the_machines_netns(&mut command);
    command
}

/// Sets what [`kiln_command`] sets on a command that starts kiln some other way in the
/// machine's network namespace (a copy of the binary, or kiln under `script` or `unshare`,
/// which pass the environment on), so its containers' default network is slirp4netns too.
pub fn in_the_machines_netns(command: &mut Command) -> &mut Command {
    command.env("KILN_DEFAULT_NETWORK", "slirp4netns")
}

impl Kiln {
    pub fn new() -> Kiln {
        let registry = TestRegistry::start().expect("start docker-registry");
        let base = kiln_testkit::push_busybox(&registry, "busybox:latest").expect("push busybox");
        Kiln {
            root: tempfile::tempdir().unwrap(),
            registry,
            base,
        }
    }

    /// A second kiln with an empty store using the same registry.
    pub fn fresh_store(&self) -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    pub fn cmd_in(&self, root: &Path, args: &[&str]) -> Output {
        kiln_command()
            .env("KILN_ROOT", root)
            .args(args)
            .output()
            .expect("run kiln")
    }

    pub fn cmd(&self, args: &[&str]) -> Output {
        self.cmd_in(self.root.path(), args)
    }

    /// Runs kiln and panics with its output unless it succeeded.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert_success(&out, args);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Builds `dockerfile` from a fresh, otherwise empty context, with `BASE` pointing at the
    /// registry's busybox and `extra` flags before the context.
    pub fn build_dockerfile(&self, tag: &str, dockerfile: &str, extra: &[&str]) -> Output {
        let ctx = tempfile::tempdir().unwrap();
        std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
        let base = format!("BASE={}", self.base);
        let mut args = vec!["build", "-t", tag, "--build-arg", &base];
        args.extend_from_slice(extra);
        let dir = ctx.path().to_str().unwrap().to_owned();
        args.push(&dir);
        self.cmd(&args)
    }

    /// Builds a testdata context with `BASE` pointing at the registry's busybox.
    pub fn build(&self, context: &str, tag: &str, extra: &[&str]) -> Output {
        let dir = testdata(&format!("contexts/{context}"));
        let base = format!("BASE={}", self.base);
        let mut args = vec!["build", "-t", tag, "--build-arg", &base];
        args.extend_from_slice(extra);
        let dir = dir.to_str().unwrap().to_owned();
        args.push(&dir);
        self.cmd(&args)
    }

    /// `kiln build -t TAG --network none --build-arg BASE=<busybox> EXTRA… CONTEXT`: the build
    /// most context tests run, whose steps need no network. `context` is a directory or a URL.
    pub fn build_offline(&self, tag: &str, extra: &[&str], context: &str) -> Output {
        let base = format!("BASE={}", self.base);
        let mut args = vec![
            "build",
            "-t",
            tag,
            "--network",
            "none",
            "--build-arg",
            &base,
        ];
        args.extend_from_slice(extra);
        args.push(context);
        self.cmd(&args)
    }

    /// `cat PATH` in a container of `image` with no network; panics unless it succeeded.
    pub fn cat(&self, image: &str, path: &str) -> String {
        let out = self.cmd(&["run", "--rm", "--network", "none", image, "cat", path]);
        assert_success(&out, &["run", image, "cat", path]);
        stdout(&out)
    }

    pub fn build_ok(&self, context: &str, tag: &str, extra: &[&str]) -> String {
        let out = self.build(context, tag, extra);
        assert_success(&out, &["build", context]);
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn image_id(&self, name: &str) -> String {
        self.image_id_in(self.root.path(), name)
    }

    /// The id of the image `name` in the store at `root` (a second store, not this one's).
    pub fn image_id_in(&self, root: &Path, name: &str) -> String {
        let out = self.cmd_in(root, &["inspect", name]);
        assert_success(&out, &["inspect", name]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0]["Id"].as_str().unwrap().to_owned()
    }

    /// Starts `kiln build --progress=plain` with `extra` flags in the background, on a fresh
    /// context holding `dockerfile` (`BASE` is the registry's busybox), and returns once the
    /// newest build's log in the build history shows `marker`: the step is running then, so a
    /// test can kill or interrupt it mid-step. Returns the child and the context to keep.
    pub fn build_running_until(
        &self,
        dockerfile: &str,
        extra: &[&str],
        marker: &str,
    ) -> (std::process::Child, tempfile::TempDir) {
        let ctx = tempfile::tempdir().unwrap();
        std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
        let base = format!("BASE={}", self.base);
        let child = kiln_command()
            .env("KILN_ROOT", self.root.path())
            .args(["build", "--progress=plain"])
            .args(extra)
            .args(["--build-arg", &base, ctx.path().to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        super::containers::eventually("the step's output in the build history", || {
            let ids = stdout(&self.cmd(&["build", "history", "ls", "-q"]));
            ids.lines().next().is_some_and(|id| {
                stdout(&self.cmd(&["build", "history", "logs", id])).contains(marker)
            })
        });
        (child, ctx)
    }

    pub fn inspect(&self, name: &str) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["inspect", name])).unwrap();
        v[0].clone()
    }
}

pub fn assert_success(out: &Output, what: &[&str]) {
    assert!(
        out.status.success(),
        "kiln {what:?} failed ({})\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What kiln on a pty of the test's gives back: the child, the pty's master to type on, and all
/// kiln wrote to its terminal so far (a thread keeps reading, so kiln never blocks on a full pty).
pub type OnAPty = (
    std::process::Child,
    std::fs::File,
    std::sync::Arc<std::sync::Mutex<String>>,
);

/// Runs kiln (through [`kiln_command`], in the store at `k.root`) with a new pty as its stdin,
/// stdout and stderr, as a user's terminal would be.
pub fn kiln_on_a_pty(k: &Kiln, args: &[&str]) -> OnAPty {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    use std::io::Read;
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap();
    let slave = std::fs::File::options()
        .read(true)
        .write(true)
        .open(name.to_str().unwrap())
        .unwrap();
    let child = kiln_command()
        .env("KILN_ROOT", k.root.path())
        .args(args)
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .unwrap();
    let master = std::fs::File::from(master);
    let mut reader = master.try_clone().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            sink.lock().unwrap().push_str(&text);
        }
    });
    (child, master, seen)
}
