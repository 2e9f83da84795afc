//! Tests of `plan`: stages, targets, dependencies, ARG scoping and errors.

use crate::*;
use kiln_dockerfile::parse;

fn options(build_args: &[(&str, &str)], target: Option<&str>) -> BuildOptions {
    BuildOptions {
        build_args: build_args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        target: target.map(str::to_string),
        platform: "linux/arm64/v8".parse().unwrap(),
        build_platform: "linux/amd64".parse().unwrap(),
    }
}

fn plan_of(source: &str, opts: &BuildOptions) -> Result<BuildPlan, PlanError> {
    plan(&parse(source).unwrap(), opts)
}

fn arg_values(stage: &StagePlan) -> Vec<(String, ArgValue)> {
    stage
        .steps
        .iter()
        .filter_map(|step| match &step.kind {
            StepKind::Arg { name, value } => Some((name.clone(), value.clone())),
            _ => None,
        })
        .collect()
}

const MULTI: &str = "\
FROM golang:1.22 AS Build
RUN go build -o /app
FROM alpine AS test
COPY --from=build /app /app
FROM build AS debug
FROM scratch
COPY --from=0 /app /app
COPY --from=busybox:latest /bin/sh /sh
";

#[test]
fn stages_bases_and_copy_from_dependencies() {
    let plan = plan_of(MULTI, &options(&[], None)).unwrap();
    assert_eq!(plan.stages.len(), 4);
    assert_eq!(plan.target, 3);
    assert_eq!(plan.stages[0].base, Base::Image("golang:1.22".into()));
    assert_eq!(plan.stages[0].name.as_deref(), Some("Build"));
    assert_eq!(plan.stages[2].base, Base::Stage(0));
    assert_eq!(plan.stages[3].base, Base::Scratch);
    assert_eq!(plan.stages[1].deps, [0]);
    assert_eq!(plan.stages[3].deps, [0]);
    let copies: Vec<&Option<CopyFrom>> = plan.stages[3]
        .steps
        .iter()
        .filter_map(|s| match &s.kind {
            StepKind::Copy { from, .. } => Some(from),
            _ => None,
        })
        .collect();
    assert_eq!(
        copies,
        [
            &Some(CopyFrom::Stage(0)),
            &Some(CopyFrom::Image("busybox:latest".into()))
        ]
    );
    let needed: Vec<bool> = plan.stages.iter().map(|s| s.needed).collect();
    assert_eq!(needed, [true, false, false, true]);
}

#[test]
fn target_is_case_insensitive_and_prunes() {
    let plan = plan_of(MULTI, &options(&[], Some("TEST"))).unwrap();
    assert_eq!(plan.target, 1);
    let needed: Vec<bool> = plan.stages.iter().map(|s| s.needed).collect();
    assert_eq!(needed, [true, true, false, false]);

    let err = plan_of(MULTI, &options(&[], Some("nope"))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "target stage \"nope\" not found; the stages are: Build, test, debug"
    );
}

#[test]
fn run_mount_from_is_a_dependency() {
    let source = "FROM a AS deps\nFROM b\nRUN --mount=type=bind,from=deps,target=/d true\n";
    let plan = plan_of(source, &options(&[], None)).unwrap();
    assert_eq!(plan.stages[1].deps, [0]);
    assert!(plan.stages[0].needed);
}

#[test]
fn global_args_expand_from_lines_with_build_arg_override() {
    let source = "\
ARG REPO=library
ARG TAG=1.0
ARG IMAGE=${REPO}/app:${TAG}
FROM $IMAGE
FROM --platform=$BUILDPLATFORM base-$TARGETARCH
";
    let plan = plan_of(source, &options(&[("TAG", "2.0")], None)).unwrap();
    assert_eq!(plan.stages[0].base, Base::Image("library/app:2.0".into()));
    assert_eq!(plan.stages[1].base, Base::Image("base-arm64".into()));
    assert_eq!(plan.stages[1].platform.as_deref(), Some("linux/amd64"));
    assert!(plan.unused_build_args.is_empty());
    assert_eq!(plan.predefined_args["TARGETVARIANT"], "v8");
}

#[test]
fn stage_args_follow_docker_scoping() {
    let source = "\
ARG VERSION=1.0
ARG ONLY_GLOBAL
FROM alpine
ARG VERSION
ARG WITH_DEFAULT=\"x $VERSION\" CLI
ARG ONLY_GLOBAL NOTHING TARGETOS
";
    let plan = plan_of(source, &options(&[("CLI", "from-cli")], None)).unwrap();
    assert_eq!(
        arg_values(&plan.stages[0]),
        [
            ("VERSION".to_string(), ArgValue::Given("1.0".into())),
            (
                "WITH_DEFAULT".to_string(),
                ArgValue::Default("\"x $VERSION\"".into())
            ),
            ("CLI".to_string(), ArgValue::Given("from-cli".into())),
            ("ONLY_GLOBAL".to_string(), ArgValue::Unset),
            ("NOTHING".to_string(), ArgValue::Unset),
            ("TARGETOS".to_string(), ArgValue::Given("linux".into())),
        ]
    );
    // The declaration of the ARG instruction is kept on each step for display.
    assert_eq!(plan.stages[0].steps[1].instruction.span.start_line, 5);
}

#[test]
fn unused_build_args_ignore_unneeded_stages_and_proxies() {
    let source = "\
ARG G
FROM a AS one
ARG IN_ONE
FROM b AS two
ARG IN_TWO
";
    let opts = options(
        &[
            ("G", "1"),
            ("IN_ONE", "1"),
            ("IN_TWO", "1"),
            ("NOT_DECLARED", "1"),
            ("HTTPS_PROXY", "http://proxy"),
        ],
        Some("two"),
    );
    let plan = plan_of(source, &opts).unwrap();
    assert_eq!(plan.unused_build_args, ["IN_ONE", "NOT_DECLARED"]);
}

#[test]
fn copy_from_uses_stage_args() {
    let source = "FROM a AS src\nFROM b\nARG FROM_STAGE=src\nCOPY --from=$FROM_STAGE /x /x\n";
    let plan = plan_of(source, &options(&[], None)).unwrap();
    assert_eq!(plan.stages[1].deps, [0]);
}

#[test]
fn errors_carry_spans() {
    let err = plan_of("ARG A\nRUN true\nFROM a\n", &options(&[], None)).unwrap_err();
    assert_eq!(err.span().map(|s| s.start_line), Some(2));
    assert!(
        err.to_string().contains("RUN before the first FROM"),
        "{err}"
    );

    let err = plan_of("ARG ONLY\n", &options(&[], None)).unwrap_err();
    assert_eq!(err, PlanError::NoStages);

    let err = plan_of("ARG IMG\nFROM a\nFROM ${IMG}\n", &options(&[], None)).unwrap_err();
    assert_eq!(err.span().map(|s| s.start_line), Some(3));
    assert!(matches!(err, PlanError::EmptyBaseImage { .. }), "{err}");

    let err = plan_of("FROM a AS x\nFROM b AS X\n", &options(&[], None)).unwrap_err();
    assert!(
        matches!(err, PlanError::DuplicateStageName { first_line: 1, .. }),
        "{err}"
    );
    assert_eq!(err.span().map(|s| s.start_line), Some(2));

    let err = plan_of(
        "FROM a\nCOPY --from=later /x /x\nFROM b AS later\n",
        &options(&[], None),
    )
    .unwrap_err();
    assert_eq!(err.span().map(|s| s.start_line), Some(2));
    assert!(matches!(err, PlanError::StageNotYetDefined { .. }), "{err}");

    let err = plan_of("FROM ${X:?need-X}\n", &options(&[], None)).unwrap_err();
    assert_eq!(err.span().map(|s| s.start_line), Some(1));
    assert!(err.to_string().contains("need-X"), "{err}");
}

#[test]
fn from_a_later_stage_is_an_error_but_its_own_name_is_an_image() {
    let err = plan_of("FROM later\nFROM b AS later\n", &options(&[], None)).unwrap_err();
    assert_eq!(
        err,
        PlanError::FromLaterStage {
            span: kiln_dockerfile::Span::line(1),
            name: "later".into(),
            defined_line: 2,
        }
    );
    // As in BuildKit, a stage's base is looked up before the stage's own name exists.
    let plan = plan_of("FROM node AS node\nRUN true\n", &options(&[], None)).unwrap();
    assert_eq!(plan.stages[0].base, Base::Image("node".into()));
}

#[test]
fn copy_from_itself_or_later_or_out_of_range_fails_before_building() {
    let err = plan_of(
        "FROM a AS one\nFROM b AS two\nCOPY --from=two /x /x\n",
        &options(&[], None),
    )
    .unwrap_err();
    assert_eq!(err.span().map(|s| s.start_line), Some(3));
    assert!(
        err.to_string()
            .contains("circular dependency detected on stage: two"),
        "{err}"
    );
    let err = plan_of("FROM a\nCOPY --from=0 /x /x\n", &options(&[], None)).unwrap_err();
    assert!(
        err.to_string()
            .contains("circular dependency detected on stage: stage-0"),
        "{err}"
    );
    let err = plan_of(
        "FROM a AS first\nCOPY --from=1 /x /x\nFROM b\n",
        &options(&[], None),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("needs to be defined before the current stage \"first\""),
        "{err}"
    );
    let err = plan_of("FROM a\nCOPY --from=5 /x /x\n", &options(&[], None)).unwrap_err();
    assert!(
        matches!(
            err,
            PlanError::StageIndexOutOfRange {
                index: 5,
                count: 1,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn triggers_are_planned_like_instructions() {
    let source = "ARG G=global\nFROM a AS src\nFROM b\nFROM c\n";
    let plan = plan_of(source, &options(&[("CLI", "given")], None)).unwrap();
    let trigger = |text: &str| parse(text).unwrap().instructions.remove(0);
    let step = plan
        .plan_trigger(2, &trigger("COPY --from=src /a /b"))
        .unwrap();
    assert!(matches!(
        step.kind,
        StepKind::Copy {
            from: Some(CopyFrom::Stage(0)),
            ..
        }
    ));
    let step = plan
        .plan_trigger(2, &trigger("COPY --from=1 /a /b"))
        .unwrap();
    assert!(matches!(
        step.kind,
        StepKind::Copy {
            from: Some(CopyFrom::Stage(1)),
            ..
        }
    ));
    assert!(
        plan.plan_trigger(1, &trigger("COPY --from=1 /a /b"))
            .is_err()
    );
    let arg = |text: &str| match plan.plan_trigger(2, &trigger(text)).unwrap().kind {
        StepKind::Arg { value, .. } => value,
        other => panic!("{other:?}"),
    };
    assert_eq!(arg("ARG CLI=default"), ArgValue::Given("given".into()));
    assert_eq!(arg("ARG G"), ArgValue::Given("global".into()));
    assert_eq!(arg("ARG X=$G"), ArgValue::Default("$G".into()));
    assert_eq!(arg("ARG NONE"), ArgValue::Unset);
    assert!(plan.plan_trigger(2, &trigger("ARG A B")).is_err());
    assert_eq!(plan.global_args["G"], "global");
}
