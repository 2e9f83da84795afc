//! `kiln run`: command, environment, working dir, user, volumes, network, exit codes.

use super::harness::{Kiln, stdout};

#[test]
fn run_options_behave_like_docker() {
    let k = Kiln::new();
    k.ok(&["pull", &k.base]);
    let base = k.base.as_str();
    assert_eq!(
        k.ok(&[
            "run",
            "--rm",
            "-e",
            "FOO=bar",
            base,
            "sh",
            "-c",
            "echo $FOO"
        ]),
        "bar\n"
    );
    assert_eq!(
        k.ok(&["run", "--rm", "-w", "/tmp/work", base, "pwd"]),
        "/tmp/work\n"
    );
    assert_eq!(
        k.ok(&["run", "--rm", "-u", "1000:1000", base, "id", "-u"]),
        "1000\n"
    );
    assert_eq!(
        k.ok(&[
            "run",
            "--rm",
            "-u",
            "kiln",
            base,
            "sh",
            "-c",
            "echo $HOME $(id -un)"
        ]),
        "/home/kiln kiln\n",
        "HOME comes from the user's passwd entry"
    );
    let out = k.cmd(&["run", "--rm", base, "sh", "-c", "exit 42"]);
    assert_eq!(
        out.status.code(),
        Some(42),
        "the exit code is passed through"
    );

    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in.txt"), "from the host\n").unwrap();
    let vol = format!("{}:/mnt", host.path().display());
    assert_eq!(
        k.ok(&["run", "--rm", "-v", &vol, base, "cat", "/mnt/in.txt"]),
        "from the host\n"
    );
    k.ok(&[
        "run",
        "--rm",
        "-v",
        &vol,
        base,
        "sh",
        "-c",
        "echo written > /mnt/out.txt",
    ]);
    assert_eq!(
        std::fs::read_to_string(host.path().join("out.txt")).unwrap(),
        "written\n"
    );
    let ro = format!("{}:/mnt:ro", host.path().display());
    let out = k.cmd(&[
        "run",
        "--rm",
        "-v",
        &ro,
        base,
        "sh",
        "-c",
        "echo x > /mnt/nope",
    ]);
    assert!(!out.status.success(), "a :ro volume is read-only");

    let ifaces = k.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        base,
        "ls",
        "/sys/class/net",
    ]);
    assert_eq!(
        ifaces.split_whitespace().collect::<Vec<_>>(),
        vec!["lo"],
        "{ifaces}"
    );
    // A container's writes never reach the image.
    k.ok(&[
        "run",
        "--rm",
        base,
        "sh",
        "-c",
        "echo scribble > /etc/scribble",
    ]);
    let out = k.cmd(&["run", "--rm", base, "cat", "/etc/scribble"]);
    assert!(!out.status.success(), "{}", stdout(&out));
}
