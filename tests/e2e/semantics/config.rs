//! The config instructions: MAINTAINER, LABEL, EXPOSE, VOLUME, STOPSIGNAL, HEALTHCHECK, SHELL,
//! WORKDIR, USER, CMD/ENTRYPOINT, and the history entries they leave.

use serde_json::{Value, json};

use super::{build_in, build_ok, context, history_texts};
use crate::e2e::harness::{Kiln, stderr};

#[test]
fn config_instructions_land_in_the_image_config() {
    let k = Kiln::new();
    let ctx = context(
        &k,
        "\
FROM @BASE@
MAINTAINER Jane Doe <jane@example.com>
LABEL a=1 \"b c\"=\"d e\" f='g h'
LABEL legacy value with spaces
EXPOSE 80 80/tcp 53/UDP 8000-8002
VOLUME [\"/data\", \"/logs\"]
VOLUME /cache /tmp/x
STOPSIGNAL SIGQUIT
HEALTHCHECK --interval=30s --timeout=5s --start-period=1m30s --start-interval=2s --retries=4 \\
  CMD wget -q -O- http://localhost/ || exit 1
SHELL [\"/bin/sh\", \"-ec\"]
RUN echo \"shell-flags=$-\"
WORKDIR app
WORKDIR src
USER kiln:kiln
WORKDIR /home/kiln/made-by-user
WORKDIR /home/kiln/made-by-user
ENTRYPOINT [\"/bin/sh\", \"-c\", \"id -u; id -g; pwd; stat -c %U /home/kiln/made-by-user\"]
",
        &[],
    );
    let log = build_ok(&k, ctx.path(), "cfg", &[]);
    let flags = log
        .lines()
        .find_map(|l| l.split("| shell-flags=").nth(1))
        .unwrap_or_else(|| panic!("no RUN output:\n{log}"));
    assert!(
        flags.contains('e'),
        "SHELL [\"/bin/sh\", \"-ec\"] runs later RUNs with -e: {flags:?}\n{log}"
    );
    let img = k.inspect("cfg");
    let cfg = &img["Config"];
    assert_eq!(img["Author"], "Jane Doe <jane@example.com>");
    assert_eq!(
        cfg["Labels"],
        json!({"a": "1", "b c": "d e", "f": "g h", "legacy": "value with spaces"})
    );
    assert_eq!(
        cfg["ExposedPorts"],
        json!({"53/udp": {}, "80/tcp": {}, "8000/tcp": {}, "8001/tcp": {}, "8002/tcp": {}})
    );
    assert_eq!(
        cfg["Volumes"],
        json!({"/cache": {}, "/data": {}, "/logs": {}, "/tmp/x": {}})
    );
    assert_eq!(cfg["StopSignal"], "SIGQUIT");
    assert_eq!(
        cfg["Healthcheck"],
        json!({
            "Test": ["CMD-SHELL", "wget -q -O- http://localhost/ || exit 1"],
            "Interval": 30_000_000_000i64,
            "Timeout": 5_000_000_000i64,
            "StartPeriod": 90_000_000_000i64,
            "StartInterval": 2_000_000_000i64,
            "Retries": 4
        })
    );
    assert_eq!(cfg["Shell"], json!(["/bin/sh", "-ec"]));
    assert_eq!(cfg["User"], "kiln:kiln");
    assert_eq!(cfg["WorkingDir"], "/home/kiln/made-by-user");
    assert_eq!(
        cfg["Cmd"],
        Value::Null,
        "ENTRYPOINT resets the CMD inherited from busybox"
    );
    let out = k.ok(&["run", "--rm", "cfg"]);
    assert_eq!(
        out, "1000\n1000\n/home/kiln/made-by-user\nkiln\n",
        "USER name:group, and WORKDIR creates the directory owned by USER"
    );

    // History: BuildKit's wording; only steps that changed files have layers.
    let history = history_texts(&img);
    let layers = img["RootFS"]["Layers"].as_array().unwrap().len();
    assert_eq!(
        history.iter().filter(|(_, empty)| !empty).count(),
        layers,
        "{history:?}"
    );
    let find = |prefix: &str| {
        history
            .iter()
            .find(|(text, _)| text.starts_with(prefix))
            .unwrap_or_else(|| panic!("no history entry {prefix:?} in {history:?}"))
            .clone()
    };
    assert_eq!(
        find("EXPOSE"),
        (
            "EXPOSE map[53/udp:{} 80/tcp:{} 8000/tcp:{} 8001/tcp:{} 8002/tcp:{}]".into(),
            true
        )
    );
    assert_eq!(
        find("VOLUME [/cache"),
        ("VOLUME [/cache /tmp/x]".into(), true)
    );
    assert_eq!(
        find("HEALTHCHECK"),
        (
            "HEALTHCHECK [\"CMD-SHELL\" \"wget -q -O- http://localhost/ || exit 1\"]".into(),
            true
        )
    );
    assert_eq!(
        find("ENTRYPOINT"),
        (
            "ENTRYPOINT [\"/bin/sh\" \"-c\" \"id -u; id -g; pwd; stat -c %U /home/kiln/made-by-user\"]"
                .into(),
            true
        )
    );
    assert_eq!(find("LABEL a=1"), ("LABEL a=1 b c=d e f=g h".into(), true));
    assert!(find("MAINTAINER").1);
    assert_eq!(
        find("RUN"),
        (
            "RUN /bin/sh -ec echo \"shell-flags=$-\" # buildkit".into(),
            true
        ),
        "a RUN that changes nothing adds no layer"
    );
    assert!(!find("WORKDIR /app").1, "WORKDIR app created /app");
    assert!(!find("WORKDIR /app/src").1);
    let made: Vec<&(String, bool)> = history
        .iter()
        .filter(|(t, _)| t == "WORKDIR /home/kiln/made-by-user")
        .collect();
    assert_eq!(
        made.iter().map(|(_, e)| *e).collect::<Vec<_>>(),
        [false, true],
        "a WORKDIR that creates nothing adds no layer"
    );

    // HEALTHCHECK NONE disables the inherited check; CMD set after ENTRYPOINT stays.
    let ctx = context(
        &k,
        "FROM cfg\nHEALTHCHECK NONE\nCMD [\"x\"]\nENTRYPOINT [\"/bin/true\"]\nHEALTHCHECK CMD [\"/bin/true\", \"-v\"]\nHEALTHCHECK NONE\n",
        &[],
    );
    build_ok(&k, ctx.path(), "cfg-child", &[]);
    let cfg = &k.inspect("cfg-child")["Config"];
    assert_eq!(cfg["Healthcheck"], json!({"Test": ["NONE"]}));
    assert_eq!(cfg["Cmd"], json!(["x"]), "a CMD set in this stage survives");
    let ctx = context(
        &k,
        "FROM @BASE@ AS a\nCMD [\"x\"]\nFROM a\nENTRYPOINT [\"/bin/true\"]\n",
        &[],
    );
    build_ok(&k, ctx.path(), "cfg-stage", &[]);
    assert_eq!(
        k.inspect("cfg-stage")["Config"]["Cmd"],
        Value::Null,
        "a CMD from the base stage is inherited, so ENTRYPOINT resets it"
    );

    // USER with a numeric uid:gid pair that no passwd entry has.
    let ctx = context(
        &k,
        "FROM @BASE@\nUSER 1000:65534\nRUN echo \"ids=$(id -u):$(id -g)\"\n",
        &[],
    );
    let log = build_ok(&k, ctx.path(), "numeric-user", &[]);
    assert!(log.contains("ids=1000:65534"), "{log}");
    assert_eq!(k.inspect("numeric-user")["Config"]["User"], "1000:65534");

    let ctx = context(&k, "FROM @BASE@\nHEALTHCHECK --interval=1 CMD true\n", &[]);
    let out = build_in(&k, ctx.path(), "bad", &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Dockerfile:2") && stderr(&out).contains("--interval=1"),
        "{}",
        stderr(&out)
    );
    let ctx = context(&k, "FROM @BASE@\nEXPOSE 9-8\n", &[]);
    let out = build_in(&k, ctx.path(), "bad", &[]);
    assert!(
        !out.status.success() && stderr(&out).contains("Dockerfile:2"),
        "{}",
        stderr(&out)
    );
}

/// BuildKit's empty image (`emptyImage`, frontend/dockerfile/dockerfile2llb/image.go) has
/// `WorkingDir: "/"` and the default PATH; so does every scratch-based image and every stage
/// built on one, in `kiln inspect` and in the config blob.
#[test]
fn scratch_config_is_buildkits_empty_image() {
    let k = Kiln::new();
    let ctx = context(
        &k,
        "\
FROM scratch AS base
COPY f /f

FROM base
LABEL derived=1
",
        &[("f", "x")],
    );
    build_ok(&k, ctx.path(), "scratchcfg-base", &["--target", "base"]);
    build_ok(&k, ctx.path(), "scratchcfg", &[]);
    for tag in ["scratchcfg-base", "scratchcfg"] {
        let img = k.inspect(tag);
        let cfg = &img["Config"];
        assert_eq!(cfg["WorkingDir"], "/", "{tag}: {img:#}");
        assert_eq!(
            cfg["Env"],
            json!(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]),
            "{tag}: {img:#}"
        );
    }
}
