//! One graph for several platforms: each platform's graph is lowered on its
//! own (the frontends expand `TARGETARCH` and friends per platform), then
//! [`merge`] puts them side by side and makes a stage that is the same on
//! every platform once, as BuildKit's solver merges identical vertices.
//! That is what builds a `FROM --platform=$BUILDPLATFORM` stage once for
//! every target, and a `FROM scratch` stage of copies once for all.

use std::collections::HashMap;

use super::{Base, BuildGraph, CopyFrom, Mount, Stage, StageId, Step, StepId, StepKind};
use crate::platform::Platform;

/// Merges per-platform graphs of the same definition into one. Every
/// output is kept, marked with its graph's platform; a stage whose name,
/// base, platform ([`Stage::platform`]: `None` when it does not depend on
/// one) and steps (their payloads, with stage references already merged)
/// equal an earlier one's is that stage. Settings come from the first graph.
pub fn merge(graphs: Vec<(Platform, BuildGraph)>) -> BuildGraph {
    let mut out = BuildGraph::default();
    // Merged stages by name, for the structural comparison.
    let mut by_name: HashMap<String, Vec<StageId>> = HashMap::new();
    // The targets each merged stage serves.
    let mut users: HashMap<StageId, Vec<Platform>> = HashMap::new();
    let several = graphs.len() > 1;
    for (n, (platform, g)) in graphs.into_iter().enumerate() {
        if n == 0 {
            out.settings = g.settings.clone();
        }
        let everything: Vec<StageId> = (0..g.stages.len()).map(StageId).collect();
        // Dependencies first, so every reference is merged before its user.
        let order = g.build_order(&everything);
        let mut map: Vec<Option<StageId>> = vec![None; g.stages.len()];
        for id in order {
            let st = g.stage(id);
            let remap = |s: StageId, map: &[Option<StageId>]| map[s.0].unwrap_or(s);
            let base = match st.base {
                Base::Stage(b) => Base::Stage(remap(b, &map)),
                ref other => other.clone(),
            };
            let steps: Vec<Step> = st
                .steps
                .iter()
                .map(|s| {
                    let mut step = g.step(*s).clone();
                    remap_kind(&mut step.kind, &|s| remap(s, &map));
                    step
                })
                .collect();
            let same = by_name.get(&st.name).and_then(|candidates| {
                candidates.iter().copied().find(|c| {
                    let m = out.stage(*c);
                    m.base == base
                        && m.platform == st.platform
                        && m.steps.len() == steps.len()
                        && m.steps
                            .iter()
                            .zip(&steps)
                            .all(|(a, b)| out.step(*a).kind == b.kind)
                })
            });
            let merged = match same {
                Some(c) => c,
                None => {
                    let new_id = StageId(out.stages.len());
                    let mut ids = Vec::with_capacity(steps.len());
                    for mut step in steps {
                        step.stage = new_id;
                        ids.push(StepId(out.steps.len()));
                        out.steps.push(step);
                    }
                    out.stages.push(Stage {
                        name: st.name.clone(),
                        base,
                        base_text: st.base_text.clone(),
                        steps: ids,
                        source: st.source.clone(),
                        platform: st.platform.clone(),
                        label: None,
                    });
                    by_name.entry(st.name.clone()).or_default().push(new_id);
                    new_id
                }
            };
            map[id.0] = Some(merged);
            users.entry(merged).or_default().push(platform.clone());
        }
        for o in g.outputs {
            let mut o = o;
            o.stage = map[o.stage.0].unwrap_or(o.stage);
            o.platform = Some(platform.clone());
            out.outputs.push(o);
        }
    }
    // A stage made for one target only is shown with it; a shared one by
    // its name alone.
    if several {
        for (id, targets) in users {
            if let [only] = targets.as_slice() {
                let st = &mut out.stages[id.0];
                st.label = Some(format!("{only} {}", st.name));
            }
        }
    }
    out
}

/// Rewrites the stage references inside a step.
fn remap_kind(kind: &mut StepKind, remap: &dyn Fn(StageId) -> StageId) {
    match kind {
        StepKind::Copy(c) => {
            for item in &mut c.items {
                if let CopyFrom::Stage { stage, .. } = &mut item.from {
                    *stage = remap(*stage);
                }
            }
        }
        StepKind::Run(r) => {
            for m in &mut r.mounts {
                if let Mount::Bind {
                    stage: Some(stage), ..
                } = m
                {
                    *stage = remap(*stage);
                }
            }
        }
        StepKind::Config(_) => {}
    }
}
