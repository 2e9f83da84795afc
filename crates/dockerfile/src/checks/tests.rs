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
