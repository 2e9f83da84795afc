//! Golden tests: each `testdata/plan/<case>/` holds a `Dockerfile`, an `options` file
//! (`build-arg NAME=VALUE` and `target NAME` lines) and the `expected` plan summary.
//! Set `KILN_BLESS=1` to rewrite the `expected` files after an intended change.

use kiln_plan::{Base, BuildOptions, BuildPlan, CopyFrom, StepKind, plan};
use std::fmt::Write;
use std::fs;
use std::path::Path;

fn options(text: &str) -> BuildOptions {
    let mut opts = BuildOptions {
        build_args: Default::default(),
        target: None,
        platform: "linux/arm64".parse().unwrap(),
        build_platform: "linux/amd64".parse().unwrap(),
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match line.split_once(' ') {
            Some(("build-arg", arg)) => {
                let (name, value) = arg.split_once('=').expect("build-arg NAME=VALUE");
                opts.build_args.insert(name.into(), value.into());
            }
            Some(("target", name)) => opts.target = Some(name.into()),
            _ => panic!("bad options line {line:?}"),
        }
    }
    opts
}

fn summary(plan: &BuildPlan) -> String {
    let mut out = String::new();
    writeln!(out, "target: {}", plan.target).unwrap();
    writeln!(out, "unused build args: {:?}", plan.unused_build_args).unwrap();
    for stage in &plan.stages {
        let base = match &stage.base {
            Base::Scratch => "scratch".to_string(),
            Base::Image(image) => format!("image {image}"),
            Base::Stage(index) => format!("stage {index}"),
        };
        writeln!(
            out,
            "stage {} {:?}: {base}, platform {:?}, deps {:?}, needed {}",
            stage.index, stage.name, stage.platform, stage.deps, stage.needed
        )
        .unwrap();
        for step in &stage.steps {
            let kind = match &step.kind {
                StepKind::Arg { name, value } => format!("arg {name} = {value:?}"),
                StepKind::Copy {
                    from: Some(CopyFrom::Stage(i)),
                    ..
                } => format!("copy from stage {i}"),
                StepKind::Copy {
                    from: Some(CopyFrom::Image(r)),
                    ..
                } => format!("copy from image {r}"),
                StepKind::Copy { from: None, .. } => "copy from context".to_string(),
                StepKind::Add(_) => "add".to_string(),
                StepKind::Other(_) => step.instruction.keyword.to_lowercase(),
            };
            writeln!(
                out,
                "  line {}-{}: {kind}: {}",
                step.instruction.span.start_line,
                step.instruction.span.end_line,
                step.instruction.original
            )
            .unwrap();
        }
    }
    out
}

#[test]
fn golden_plans() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/plan");
    let mut cases: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 2,
        "golden cases missing under {}",
        root.display()
    );
    for case in cases {
        let source = fs::read_to_string(case.join("Dockerfile")).unwrap();
        let opts = options(&fs::read_to_string(case.join("options")).unwrap_or_default());
        let df = kiln_dockerfile::parse(&source).unwrap();
        let got = summary(&plan(&df, &opts).unwrap());
        let expected_path = case.join("expected");
        if std::env::var_os("KILN_BLESS").is_some() {
            fs::write(&expected_path, &got).unwrap();
        }
        let expected = fs::read_to_string(&expected_path)
            .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
        assert_eq!(got, expected, "{}", case.display());
    }
}
