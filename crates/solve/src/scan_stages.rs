//! Which stages besides the target get an SBOM of their own: BuildKit's
//! `BUILDKIT_SBOM_SCAN_STAGE`, either an `ARG` of the stage that is true (its default or a
//! build arg), or a build arg naming stages (`builder,tools`). The engine only hands back the
//! layers of the stages asked for; scanning them is `kiln_attest`'s.

use std::collections::BTreeMap;

/// A built stage's layers (bottom first), for scanning it.
#[derive(Debug, Clone)]
pub struct StageLayers {
    /// The stage's `AS` name, else its index.
    pub name: String,
    /// Its layers (each blob with its diffID), bottom first.
    pub layers: Vec<kiln_image::LayerRef>,
}

/// The layers of every built stage but the target that asks to be scanned.
pub(crate) fn collect(
    plan: &kiln_plan::BuildPlan,
    nodes: &[usize],
    board: &crate::schedule::StageBoard<crate::stage::StageState>,
    build_args: &BTreeMap<String, String>,
) -> Vec<StageLayers> {
    plan.stages
        .iter()
        .filter(|s| s.index != plan.target)
        .filter_map(|s| {
            let state = board.get(nodes[s.index])?;
            let name = s.name.clone().unwrap_or_else(|| s.index.to_string());
            scans_stage(&name, &state.args, build_args).then(|| StageLayers {
                name,
                layers: state.layer_refs().collect(),
            })
        })
        .collect()
}

/// The build arg and stage ARG that ask for a stage's SBOM, as BuildKit names it.
const SBOM_SCAN_STAGE: &str = "BUILDKIT_SBOM_SCAN_STAGE";

/// Whether the stage (named `name`, its ARGs `args`) is to be scanned: its own
/// `ARG BUILDKIT_SBOM_SCAN_STAGE` is true, or the build arg lists its name.
pub(crate) fn scans_stage(
    name: &str,
    args: &BTreeMap<String, String>,
    build_args: &BTreeMap<String, String>,
) -> bool {
    let truthy = |v: &str| matches!(v, "true" | "1");
    args.get(SBOM_SCAN_STAGE).is_some_and(|v| truthy(v))
        || build_args
            .get(SBOM_SCAN_STAGE)
            .is_some_and(|v| v.split(',').any(|s| s.trim() == name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_arg_or_a_build_arg_naming_the_stage() {
        let none = BTreeMap::new();
        let on = BTreeMap::from([(SBOM_SCAN_STAGE.to_owned(), "true".to_owned())]);
        let off = BTreeMap::from([(SBOM_SCAN_STAGE.to_owned(), "false".to_owned())]);
        let named = BTreeMap::from([(SBOM_SCAN_STAGE.to_owned(), "tools, builder".to_owned())]);
        assert!(scans_stage("builder", &on, &none));
        assert!(!scans_stage("builder", &off, &none));
        assert!(!scans_stage("builder", &none, &none));
        assert!(scans_stage("builder", &none, &named));
        assert!(!scans_stage("other", &none, &named));
    }
}
