use super::*;

/// `(rule, line)` of every finding.
fn findings(source: &str) -> Vec<(&'static str, usize)> {
    check(source, None)
        .unwrap()
        .warnings
        .iter()
        .map(|w| (w.rule, w.span.start_line))
        .collect()
}

fn messages(source: &str) -> Vec<String> {
    check(source, None)
        .unwrap()
        .warnings
        .into_iter()
        .map(|w| format!("{}: {}", w.rule, w.message))
        .collect()
}

#[test]
fn clean_file_has_no_findings() {
    let source = "ARG BASE=busybox\nFROM ${BASE} AS build\nWORKDIR /src\nENV A=1\nCOPY . .\nRUN make\nFROM scratch\nARG V=1\nCOPY --from=build /src/app /app-$V\nEXPOSE 80/tcp 53/udp\nCMD [\"/app\"]\n";
    assert_eq!(findings(source), []);
}

#[test]
fn stage_and_from_rules() {
    assert_eq!(
        messages("FROM busybox as Build\nFROM busybox AS build\nfrom busybox AS scratch\n"),
        [
            "FromAsCasing: 'as' and 'FROM' keywords' casing do not match",
            "StageNameCasing: Stage name 'Build' should be lowercase",
            "DuplicateStageName: Duplicate stage name \"build\", stage names should be unique",
            "ConsistentInstructionCasing: Command 'from' should match the case of the command majority (uppercase)",
            "FromAsCasing: 'AS' and 'from' keywords' casing do not match",
            "ReservedStageName: 'scratch' is reserved and should not be used as a stage name",
        ]
    );
    assert_eq!(
        messages("ARG VERSION\nFROM busybox:${VERSON}\nFROM busybox:$VERSION\n"),
        [
            "UndefinedArgInFrom: FROM argument 'VERSON' is not declared (did you mean $VERSION?)",
            "InvalidDefaultArgInFrom: Default value for ARG busybox:${VERSON} results in empty or invalid base image name",
            "InvalidDefaultArgInFrom: Default value for ARG busybox:$VERSION results in empty or invalid base image name",
        ]
    );
    assert_eq!(
        messages(
            "FROM --platform=$TARGETPLATFORM busybox\nFROM --platform=linux/amd64 busybox\nFROM --platform=$BUILDPLATFORM busybox\n"
        ),
        [
            "RedundantTargetPlatform: Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior",
            "FromPlatformFlagConstDisallowed: FROM --platform flag should not use constant value \"linux/amd64\"",
        ]
    );
}

#[test]
fn instruction_rules() {
    let source = "FROM busybox\nMAINTAINER me\nENV a b\nLABEL k v\nWORKDIR rel\nWORKDIR /abs\nWORKDIR again\nEXPOSE 80/TCP 127.0.0.1:8080:80\nARG DB_PASSWORD\nENV PUBLIC_KEY=x GITHUB_TOKEN=y\nCMD a\nCMD b\nENTRYPOINT run\nRUN a \\\n\n  b\n";
    assert_eq!(
        findings(source),
        [
            ("MaintainerDeprecated", 2),
            ("LegacyKeyValueFormat", 3),
            ("LegacyKeyValueFormat", 4),
            ("WorkdirRelativePath", 5),
            ("ExposeProtoCasing", 8),
            ("ExposeInvalidFormat", 8),
            ("SecretsUsedInArgOrEnv", 9),
            ("SecretsUsedInArgOrEnv", 10),
            ("JSONArgsRecommended", 11),
            ("MultipleInstructionsDisallowed", 11),
            ("JSONArgsRecommended", 12),
            ("JSONArgsRecommended", 13),
            ("NoEmptyContinuation", 14),
        ]
    );
    // A custom SHELL makes shell form deliberate.
    assert_eq!(
        findings("FROM busybox\nSHELL [\"/bin/bash\", \"-c\"]\nCMD echo hi\n"),
        []
    );
}

#[test]
fn undefined_vars_where_the_environment_is_known() {
    assert_eq!(
        messages(
            "FROM scratch AS base\nENV APP_HOME=/app\nARG VER\nCOPY x $APP_HOEM/$VER/$TARGETARCH\nFROM base\nWORKDIR $APP_HOME/$NOPE\n"
        ),
        [
            "UndefinedVar: Usage of undefined variable '$APP_HOEM' (did you mean $APP_HOME?)",
            "UndefinedVar: Usage of undefined variable '$NOPE'",
        ]
    );
    // A registry base image may define anything: not judged.
    assert_eq!(findings("FROM busybox\nWORKDIR $GOPATH\n"), []);
}

#[test]
fn directive_and_build_arg_configure_the_checks() {
    let source = "# check=skip=JSONArgsRecommended,MaintainerDeprecated\nFROM busybox\nMAINTAINER me\nCMD x\nWORKDIR rel\n";
    assert_eq!(findings(source), [("WorkdirRelativePath", 5)]);
    let report = check(source, Some("skip=all")).unwrap();
    assert!(report.warnings.is_empty() && !report.fails());
    let report = check(source, Some("error=true")).unwrap();
    assert_eq!(report.warnings.len(), 3);
    assert!(report.fails());
    let report = check(
        "# check=skip=all;error=true\nFROM a AS x\nFROM b AS x\n",
        None,
    )
    .unwrap();
    assert_eq!(report.warnings.len(), 1, "fatal rules cannot be skipped");
    assert!(report.fails());
    let err = check("# check=bogus=1\nFROM a\n", None).unwrap_err();
    assert_eq!(err.span.start_line, 1);
    assert!(err.message.contains("bogus"), "{}", err.message);
    assert!(CheckConfig::parse("error=maybe").is_err());
}

#[test]
fn rule_urls_are_kebab_case() {
    let w = Warning {
        rule: "JSONArgsRecommended",
        message: String::new(),
        span: Span::line(1),
    };
    assert_eq!(
        w.url(),
        "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/"
    );
    assert_eq!(RULES.len(), 19);
}

/// The reproducibility findings for `source` in a build with these build args.
fn reproducibility(source: &str, build_args: &[(&str, &str)]) -> Vec<String> {
    let args: BTreeMap<String, String> = build_args
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let options = CheckOptions {
        check_override: None,
        reproducible: Some(&args),
    };
    check_with(source, &options)
        .unwrap()
        .warnings
        .into_iter()
        .filter(|w| REPRODUCIBILITY_RULES.contains(&w.rule))
        .map(|w| format!("{}@{}: {}", w.rule, w.span.start_line, w.message))
        .collect()
}

#[test]
fn reproducibility_rules_flag_tags_and_unchecked_downloads() {
    let source = "ARG BASE=busybox:1.36\nARG PINNED=alpine@sha256:0123\n\
        FROM $BASE AS build\n\
        ADD https://example.com/a.tar.gz /a\n\
        ADD --checksum=sha256:abcd https://example.com/b /b\n\
        ADD local.txt HTTP://Example.com/c /c/\n\
        FROM ${PINNED}\n\
        COPY --from=build /a /a\n\
        COPY --from=0 /a /b\n\
        COPY --from=registry.example.com/tools:2 /bin/tool /bin/\n\
        COPY --from=tools@sha256:ffff /x /x\n\
        FROM scratch\n\
        FROM build\n";
    assert_eq!(
        reproducibility(source, &[]),
        [
            "UnpinnedImage@3: FROM busybox:1.36 names an image by tag, which can move to another image between builds; pin it by digest (busybox:1.36@sha256:<digest>)",
            "RemoteAddWithoutChecksum@4: ADD https://example.com/a.tar.gz has no --checksum: what the server sends can change between builds; add --checksum=sha256:<digest> to pin it",
            "RemoteAddWithoutChecksum@6: ADD HTTP://Example.com/c has no --checksum: what the server sends can change between builds; add --checksum=sha256:<digest> to pin it",
            "UnpinnedImage@10: COPY --from registry.example.com/tools:2 names an image by tag, which can move to another image between builds; pin it by digest (registry.example.com/tools:2@sha256:<digest>)",
        ]
    );
    // A build arg pinning the base silences the rule; an undefined variable is not judged.
    let pinned = reproducibility(
        "ARG BASE\nFROM $BASE\nFROM $UNKNOWN\nARG X\nCOPY --from=$X /a /a\n",
        &[("BASE", "busybox@sha256:0123")],
    );
    assert_eq!(pinned, Vec::<String>::new());
    let tagged = reproducibility("ARG BASE\nFROM $BASE\n", &[("BASE", "busybox")]);
    assert_eq!(tagged.len(), 1, "{tagged:?}");
    // A stage ARG gives `--from` its value.
    let stage_arg = reproducibility("FROM scratch\nARG T=tools:1\nCOPY --from=$T /a /a\n", &[]);
    assert_eq!(stage_arg.len(), 1, "{stage_arg:?}");
}

#[test]
fn reproducibility_rules_run_only_when_asked_and_can_be_skipped() {
    let source = "FROM busybox\nADD https://example.com/x /x\n";
    assert!(
        check(source, None)
            .unwrap()
            .warnings
            .iter()
            .all(|w| !REPRODUCIBILITY_RULES.contains(&w.rule))
    );
    assert_eq!(reproducibility(source, &[]).len(), 2);
    let skipped = format!("# check=skip=UnpinnedImage\n{source}");
    assert_eq!(
        reproducibility(&skipped, &[]),
        [
            "RemoteAddWithoutChecksum@3: ADD https://example.com/x has no --checksum: what the server sends can change between builds; add --checksum=sha256:<digest> to pin it"
        ]
    );
    let w = Warning {
        rule: "UnpinnedImage",
        message: String::new(),
        span: Span::line(1),
    };
    assert_eq!(w.url(), "docs/reproducible-builds.md#unpinnedimage");
}
