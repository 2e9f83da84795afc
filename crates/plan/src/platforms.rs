//! Planning one build for several target platforms (`--platform linux/amd64,linux/arm64`).
//!
//! Each target platform gets a [`BuildPlan`] of its own (its `TARGETPLATFORM` and friends),
//! and every stage of every plan becomes a node of one graph. The key decision: a stage whose
//! plan is the same for two target platforms and whose platform does not depend on the target
//! (`FROM --platform=$BUILDPLATFORM …`, the cross-compilation pattern) is *one* node, built
//! once and read by both targets, as BuildKit merges identical LLB vertices. "The same" is
//! decided on what the plan settled: the base, the expanded `--platform`, every step with its
//! ARG values (a stage that declares `ARG TARGETARCH` differs per target and so is not shared),
//! and its dependencies, which must be shared nodes themselves. Stages that read an image
//! (`COPY --from=<image>`, `RUN --mount=from=<image>`) resolve it for the target platform, so
//! they are never shared.

use kiln_dockerfile::{Command, Dockerfile};
use kiln_image::Platform;

use crate::{BuildOptions, BuildPlan, CopyFrom, PlanError, StagePlan, StepKind, mount_from};

/// The plans of one multi-platform build and the graph of stages they share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformPlans {
    /// The target platforms, in the order asked, duplicates removed.
    pub platforms: Vec<Platform>,
    /// One plan per target platform, in the same order.
    pub plans: Vec<BuildPlan>,
    /// `nodes[p][s]`: the node that stage `s` of plan `p` is. Stages of two plans with the
    /// same node are built once. Nodes are numbered in order of first appearance.
    pub nodes: Vec<Vec<usize>>,
    /// How many distinct nodes there are.
    pub node_count: usize,
}

impl PlatformPlans {
    /// Whether stage `stage` of plan `plan` is shared with another target platform.
    pub fn is_shared(&self, plan: usize, stage: usize) -> bool {
        let node = self.nodes[plan][stage];
        self.nodes
            .iter()
            .enumerate()
            .any(|(p, nodes)| p != plan && nodes.get(stage) == Some(&node))
    }
}

/// Plans `df` for each of `platforms` (at least one); `opts.platform` is ignored.
pub fn plan_platforms(
    df: &Dockerfile,
    opts: &BuildOptions,
    platforms: &[Platform],
) -> Result<PlatformPlans, PlanError> {
    let mut unique: Vec<Platform> = Vec::new();
    for p in platforms {
        if !unique.contains(p) {
            unique.push(p.clone());
        }
    }
    let plans = unique
        .iter()
        .map(|platform| {
            crate::plan(
                df,
                &BuildOptions {
                    platform: platform.clone(),
                    ..opts.clone()
                },
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut nodes: Vec<Vec<usize>> = Vec::with_capacity(plans.len());
    let mut node_count = 0;
    for (p, plan) in plans.iter().enumerate() {
        let mut mine = Vec::with_capacity(plan.stages.len());
        for stage in &plan.stages {
            // Stages only depend on earlier ones, so `mine` already holds their nodes.
            let shared_with = (0..p).find(|&q| {
                shareable(&plans[q].stages[stage.index], stage)
                    && stage.deps.iter().all(|&d| nodes[q][d] == mine[d])
            });
            match shared_with {
                Some(q) => mine.push(nodes[q][stage.index]),
                None => {
                    mine.push(node_count);
                    node_count += 1;
                }
            }
        }
        nodes.push(mine);
    }
    Ok(PlatformPlans {
        platforms: unique,
        plans,
        nodes,
        node_count,
    })
}

/// Whether stage `b` (of one target's plan) builds exactly what stage `a` (of another's)
/// builds, whatever the target platform.
fn shareable(a: &StagePlan, b: &StagePlan) -> bool {
    let same = StagePlan {
        needed: b.needed,
        ..a.clone()
    } == *b;
    let platform_fixed = b.platform.is_some();
    let reads_images = b.steps.iter().any(|step| match &step.kind {
        StepKind::Copy {
            from: Some(CopyFrom::Image(_)),
            ..
        } => true,
        // A mount's `from=` is an image unless it named a stage (then it is in `deps`); the
        // plan keeps mounts raw, so any `from=` counts.
        StepKind::Other(Command::Run { mounts, .. }) => {
            mounts.iter().any(|m| mount_from(m).is_some())
        }
        _ => false,
    });
    same && platform_fixed && !reads_images && a.needed && b.needed
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_dockerfile::parse;

    fn plans(source: &str, platforms: &[&str]) -> PlatformPlans {
        let opts = BuildOptions {
            build_args: Default::default(),
            target: None,
            platform: Platform::new("linux", "amd64"),
            build_platform: Platform::new("linux", "amd64"),
        };
        let platforms: Vec<Platform> = platforms.iter().map(|p| p.parse().unwrap()).collect();
        plan_platforms(&parse(source).unwrap(), &opts, &platforms).unwrap()
    }

    #[test]
    fn a_build_platform_stage_is_one_node_for_every_target() {
        let p = plans(
            "FROM --platform=$BUILDPLATFORM busybox AS build\n\
             RUN echo hi > /out\n\
             FROM busybox\n\
             COPY --from=build /out /out\n",
            &["linux/amd64", "linux/arm64", "linux/amd64"],
        );
        assert_eq!(p.platforms.len(), 2, "duplicates are built once");
        assert_eq!(p.nodes, vec![vec![0, 1], vec![0, 2]]);
        assert_eq!(p.node_count, 3);
        assert!(p.is_shared(1, 0));
        assert!(!p.is_shared(1, 1));
        assert_eq!(p.plans[1].predefined_args["TARGETARCH"], "arm64");
        assert_eq!(p.plans[1].predefined_args["BUILDARCH"], "amd64");
    }

    #[test]
    fn target_args_a_target_stage_or_image_reads_keep_stages_apart() {
        let p = plans(
            "FROM --platform=$BUILDPLATFORM busybox AS build\n\
             ARG TARGETARCH\n\
             RUN echo $TARGETARCH > /out\n\
             FROM --platform=$BUILDPLATFORM busybox AS tools\n\
             COPY --from=alpine /etc/os-release /\n\
             FROM --platform=$BUILDPLATFORM busybox AS plain\n\
             FROM --platform=$BUILDPLATFORM plain AS onplain\n\
             FROM --platform=$BUILDPLATFORM build AS onbuild\n\
             FROM busybox\n\
             COPY --from=onbuild /out /out\n\
             COPY --from=tools /os-release /\n\
             COPY --from=onplain / /p\n",
            &["linux/amd64", "linux/arm64"],
        );
        assert!(!p.is_shared(1, 0), "ARG TARGETARCH differs per target");
        assert!(
            !p.is_shared(1, 1),
            "COPY --from an image resolves per target"
        );
        assert!(p.is_shared(1, 2));
        assert!(p.is_shared(1, 3), "built on a shared stage");
        assert!(!p.is_shared(1, 4), "built on a per-target stage");
        assert!(!p.is_shared(1, 5));
    }

    #[test]
    fn one_platform_is_one_plan_of_its_own() {
        let p = plans("FROM busybox\nRUN true\n", &["linux/arm64"]);
        assert_eq!(p.nodes, vec![vec![0]]);
        assert!(!p.is_shared(0, 0));
    }
}
