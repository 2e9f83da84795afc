//! Build-argument scoping by Docker's rules: predefined platform ARGs, global ARGs (before
//! the first FROM, visible to FROM lines), and the value a stage's `ARG` declaration gets.

use kiln_image::Platform;
use std::collections::{BTreeMap, BTreeSet};

pub use kiln_dockerfile::PROXY_ARGS;

/// The value a stage's `ARG` declaration resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgValue {
    /// From `--build-arg`, or from the global ARG (or predefined ARG) of the same name when
    /// declared without a default. Already final: not to be expanded again.
    Given(String),
    /// The declaration's raw default word; the engine expands it with the stage's variables.
    Default(String),
    /// Declared without default and given no value: the variable is unset.
    Unset,
}

/// The predefined platform ARGs for a target and a build platform. `--build-arg` of the
/// same name overrides them, as in BuildKit.
pub(crate) fn predefined_args(
    target: &Platform,
    build: &Platform,
    build_args: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut args = BTreeMap::new();
    for (prefix, platform) in [("TARGET", target), ("BUILD", build)] {
        let values = [
            ("PLATFORM", platform.to_string()),
            ("OS", platform.os.clone()),
            ("ARCH", platform.architecture.clone()),
            ("VARIANT", platform.variant.clone().unwrap_or_default()),
        ];
        for (suffix, value) in values {
            let name = format!("{prefix}{suffix}");
            let value = build_args.get(&name).cloned().unwrap_or(value);
            args.insert(name, value);
        }
    }
    args
}

/// The global ARG values, and how a declaration resolves against them and the build args.
#[derive(Debug)]
pub(crate) struct ArgScope<'a> {
    build_args: &'a BTreeMap<String, String>,
    predefined: &'a BTreeMap<String, String>,
    /// Global ARG values (after --build-arg override and default expansion); `None` when
    /// declared without value.
    globals: BTreeMap<String, Option<String>>,
}

impl<'a> ArgScope<'a> {
    pub fn new(
        build_args: &'a BTreeMap<String, String>,
        predefined: &'a BTreeMap<String, String>,
    ) -> ArgScope<'a> {
        ArgScope {
            build_args,
            predefined,
            globals: BTreeMap::new(),
        }
    }

    /// The variables FROM lines see: predefined ARGs, then global ARGs over them.
    pub fn global_lookup(&self, name: &str) -> Option<String> {
        match self.globals.get(name) {
            Some(Some(value)) => Some(value.clone()),
            // A global declared without value still exposes a predefined value of that name.
            _ => self.predefined.get(name).cloned(),
        }
    }

    /// Declares a global ARG. `expanded_default` is the default already expanded with the
    /// globals declared before it.
    pub fn declare_global(&mut self, name: &str, expanded_default: Option<String>) {
        let value = match self.build_arg(name) {
            Some(given) => Some(given),
            None => expanded_default,
        };
        self.globals.insert(name.to_string(), value);
    }

    /// Resolves an `ARG` declared inside a stage.
    pub fn declare_in_stage(&self, name: &str, raw_default: Option<&str>) -> ArgValue {
        if let Some(given) = self.build_arg(name) {
            return ArgValue::Given(given);
        }
        if let Some(default) = raw_default {
            return ArgValue::Default(default.to_string());
        }
        match self.globals.get(name) {
            Some(Some(value)) => ArgValue::Given(value.clone()),
            _ => match self.predefined.get(name) {
                Some(value) => ArgValue::Given(value.clone()),
                None => ArgValue::Unset,
            },
        }
    }

    /// The global ARGs that have a value.
    pub fn global_values(&self) -> BTreeMap<String, String> {
        self.globals
            .iter()
            .filter_map(|(name, value)| Some((name.clone(), value.clone()?)))
            .collect()
    }

    fn build_arg(&self, name: &str) -> Option<String> {
        self.build_args.get(name).cloned()
    }
}

/// Prefix of build args that are BuildKit frontend options (`BUILDKIT_INLINE_CACHE`,
/// `BUILDKIT_CONTEXT_KEEP_GIT_DIR`, `BUILDKIT_SYNTAX`, …) rather than Dockerfile variables.
/// kiln accepts them silently; `BUILDKIT_SANDBOX_HOSTNAME` is the one it acts on.
pub const BUILDKIT_OPTION_PREFIX: &str = "BUILDKIT_";

/// The build arg that sets a reproducible build's time. The engine reads it whether or not an
/// ARG declares it (a declaration only also exposes it to RUN, as in BuildKit), so it is never
/// reported as unused.
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";

/// Build args that no ARG in `declared` consumes, except proxy, predefined, BuildKit option
/// ones and `SOURCE_DATE_EPOCH`; sorted.
pub(crate) fn unused_build_args(
    build_args: &BTreeMap<String, String>,
    predefined: &BTreeMap<String, String>,
    declared: &BTreeSet<String>,
) -> Vec<String> {
    build_args
        .keys()
        .filter(|name| {
            !declared.contains(*name)
                && !PROXY_ARGS.contains(&name.as_str())
                && !predefined.contains_key(*name)
                && !name.starts_with(BUILDKIT_OPTION_PREFIX)
                && name.as_str() != SOURCE_DATE_EPOCH
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predefined_args_follow_platforms_and_overrides() {
        let target: Platform = "linux/arm/v7".parse().unwrap();
        let build: Platform = "linux/amd64".parse().unwrap();
        let overrides = BTreeMap::from([("BUILDOS".to_string(), "custom".to_string())]);
        let args = predefined_args(&target, &build, &overrides);
        assert_eq!(args["TARGETPLATFORM"], "linux/arm/v7");
        assert_eq!(args["TARGETARCH"], "arm");
        assert_eq!(args["TARGETVARIANT"], "v7");
        assert_eq!(args["BUILDPLATFORM"], "linux/amd64");
        assert_eq!(args["BUILDVARIANT"], "");
        assert_eq!(args["BUILDOS"], "custom");
        assert_eq!(args.len(), 8);
    }

    #[test]
    fn stage_declarations_prefer_build_arg_then_default_then_global() {
        let build_args = BTreeMap::from([("GIVEN".to_string(), "cli".to_string())]);
        let predefined = BTreeMap::from([("TARGETOS".to_string(), "linux".to_string())]);
        let mut scope = ArgScope::new(&build_args, &predefined);
        scope.declare_global("G", Some("global".into()));
        scope.declare_global("GIVEN", Some("ignored".into()));
        assert_eq!(scope.global_lookup("GIVEN").as_deref(), Some("cli"));
        assert_eq!(
            scope.declare_in_stage("GIVEN", Some("d")),
            ArgValue::Given("cli".into())
        );
        assert_eq!(
            scope.declare_in_stage("G", Some("${X}")),
            ArgValue::Default("${X}".into())
        );
        assert_eq!(
            scope.declare_in_stage("G", None),
            ArgValue::Given("global".into())
        );
        assert_eq!(
            scope.declare_in_stage("TARGETOS", None),
            ArgValue::Given("linux".into())
        );
        assert_eq!(scope.declare_in_stage("NOPE", None), ArgValue::Unset);
    }

    #[test]
    fn unused_excludes_declared_proxy_and_predefined() {
        let build_args: BTreeMap<String, String> = [
            "A",
            "B",
            "HTTP_PROXY",
            "TARGETARCH",
            "C",
            "BUILDKIT_INLINE_CACHE",
            "SOURCE_DATE_EPOCH",
        ]
        .into_iter()
        .map(|n| (n.to_string(), "v".to_string()))
        .collect();
        let predefined = BTreeMap::from([("TARGETARCH".to_string(), "amd64".to_string())]);
        let declared = BTreeSet::from(["B".to_string()]);
        assert_eq!(
            unused_build_args(&build_args, &predefined, &declared),
            ["A", "C"]
        );
    }
}
