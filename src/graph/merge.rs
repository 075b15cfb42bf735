//! One graph for several platforms: each platform's graph is lowered on its
//! own (the frontends expand `TARGETARCH` and friends per platform), then
//! [`merge`] puts them side by side and makes a stage that is the same on
//! every platform once, as BuildKit's solver merges identical vertices.
//! That is what builds a `FROM --platform=$BUILDPLATFORM` stage once for
//! every target, and a `FROM scratch` stage of copies once for all.

use std::collections::HashMap;

use super::{
    Base, BuildGraph, ConfigChange, CopyFrom, Mount, Stage, StageId, Step, StepId, StepKind,
};
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
            let wanted = Wanted {
                name: &st.name,
                base: &base,
                platform: st.platform.as_ref(),
                steps: &steps,
            };
            let merged = match wanted.same(&out, &by_name) {
                Some(c) => c,
                None => match wanted.shared_prefix(&out, &by_name) {
                    // Another target's stage starts with the same steps:
                    // they become a stage of their own, built once, and
                    // both continue from it.
                    Some((c, k)) => {
                        let prefix = if k == out.stage(c).steps.len() {
                            c
                        } else {
                            split(&mut out, &mut by_name, &mut users, c, k)
                        };
                        let u = users.entry(prefix).or_default();
                        if !u.contains(&platform) {
                            u.push(platform.clone());
                        }
                        let rest = steps[k..].to_vec();
                        let over = Base::Stage(prefix);
                        if k == steps.len() {
                            prefix
                        } else if let Some(same) = (Wanted {
                            base: &over,
                            steps: &rest,
                            ..wanted
                        })
                        .same(&out, &by_name)
                        {
                            same
                        } else {
                            push_stage(&mut out, &mut by_name, st, over, st.name.clone(), rest)
                        }
                    }
                    None => push_stage(
                        &mut out,
                        &mut by_name,
                        st,
                        base,
                        st.base_text.clone(),
                        steps,
                    ),
                },
            };
            map[id.0] = Some(merged);
            let u = users.entry(merged).or_default();
            if !u.contains(&platform) {
                u.push(platform.clone());
            }
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

/// Adds a stage of `steps` over `base`, made from `st`; returns its id.
fn push_stage(
    out: &mut BuildGraph,
    by_name: &mut HashMap<String, Vec<StageId>>,
    st: &Stage,
    base: Base,
    base_text: String,
    steps: Vec<Step>,
) -> StageId {
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
        base_text,
        steps: ids,
        source: st.source.clone(),
        platform: st.platform.clone(),
        label: None,
    });
    by_name.entry(st.name.clone()).or_default().push(new_id);
    new_id
}

/// A stage looked for among the merged ones.
#[derive(Clone, Copy)]
struct Wanted<'a> {
    name: &'a str,
    base: &'a Base,
    platform: Option<&'a Platform>,
    steps: &'a [Step],
}

impl<'a> Wanted<'a> {
    /// Merged stages of this name, base and platform.
    fn candidates<'o>(
        self,
        out: &'o BuildGraph,
        by_name: &'o HashMap<String, Vec<StageId>>,
    ) -> impl Iterator<Item = (StageId, &'o Stage)> + use<'o, 'a> {
        by_name
            .get(self.name)
            .into_iter()
            .flatten()
            .map(|c| (*c, out.stage(*c)))
            .filter(move |(_, m)| m.base == *self.base && m.platform.as_ref() == self.platform)
    }

    /// The merged stage that is this one: the same steps too.
    fn same(self, out: &BuildGraph, by_name: &HashMap<String, Vec<StageId>>) -> Option<StageId> {
        self.candidates(out, by_name)
            .find(|(_, m)| {
                m.steps.len() == self.steps.len()
                    && m.steps
                        .iter()
                        .zip(self.steps)
                        .all(|(a, b)| out.step(*a).kind == b.kind)
            })
            .map(|(c, _)| c)
    }

    /// The merged stage that shares the longest prefix of the steps with
    /// this one, and its length: at least one step, one that makes a layer
    /// among them (a shared config change alone is not worth a stage), and
    /// no ONBUILD in it (a stage built `FROM` another drops its triggers,
    /// so the split would change the image).
    fn shared_prefix(
        self,
        out: &BuildGraph,
        by_name: &HashMap<String, Vec<StageId>>,
    ) -> Option<(StageId, usize)> {
        let mut best: Option<(StageId, usize)> = None;
        for (c, m) in self.candidates(out, by_name) {
            let k = m
                .steps
                .iter()
                .zip(self.steps)
                .take_while(|(a, b)| {
                    let kind = &out.step(**a).kind;
                    *kind == b.kind && !matches!(kind, StepKind::Config(ConfigChange::OnBuild(_)))
                })
                .count();
            let layers = m.steps[..k]
                .iter()
                .any(|s| !matches!(out.step(*s).kind, StepKind::Config(_)));
            if layers && best.is_none_or(|(_, b)| k > b) {
                best = Some((c, k));
            }
        }
        best
    }
}

/// Splits stage `c` after its first `k` steps: they become a new stage
/// (same name, base and platform), and `c` keeps its id and the rest of
/// its steps over it. `c`'s result is unchanged: its steps' keys chain on
/// the new stage's last key, as they chained on the step before.
fn split(
    out: &mut BuildGraph,
    by_name: &mut HashMap<String, Vec<StageId>>,
    users: &mut HashMap<StageId, Vec<Platform>>,
    c: StageId,
    k: usize,
) -> StageId {
    let prefix = StageId(out.stages.len());
    let orig = out.stage(c).clone();
    let (head, tail) = orig.steps.split_at(k);
    for s in head {
        out.steps[s.0].stage = prefix;
    }
    out.stages.push(Stage {
        steps: head.to_vec(),
        label: None,
        ..orig.clone()
    });
    let st = &mut out.stages[c.0];
    st.base = Base::Stage(prefix);
    st.base_text = orig.name.clone();
    st.steps = tail.to_vec();
    by_name.entry(orig.name.clone()).or_default().push(prefix);
    let before = users.get(&c).cloned().unwrap_or_default();
    let u = users.entry(prefix).or_default();
    for p in before {
        if !u.contains(&p) {
            u.push(p);
        }
    }
    prefix
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
        StepKind::Config(_) | StepKind::Fetch(_) => {}
    }
}
