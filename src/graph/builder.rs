//! Building a [`BuildGraph`] from a frontend: stage references are resolved
//! once every stage is known, then unknown stages and cycles are reported as
//! diagnostics at the place that named them.

use std::collections::HashMap;

use crate::diag::{Diagnostic, SourceRef, did_you_mean};

use super::{
    Base, BuildGraph, CopyFrom, ImageSource, Mount, Output, Settings, Stage, StageId, Step, StepId,
    StepKind,
};
use crate::platform::Platform;

/// A reference to a stage or an image, as written, before stages are known.
#[derive(Debug, Clone)]
pub struct PendingRef {
    /// The name as written.
    pub name: String,
    /// What it means if no stage has that name (`None`: not a valid image
    /// reference either, so it must be a stage).
    pub image: Option<ImageSource>,
    /// Where it was written.
    pub at: SourceRef,
}

/// A stage's base before resolution.
#[derive(Debug, Clone)]
pub enum PendingBase {
    /// `scratch`.
    Scratch,
    /// A name that may be a stage.
    Ref(PendingRef),
    /// Definitely an image (a transport-qualified reference).
    Image(ImageSource),
}

struct PendingStage {
    name: String,
    base: PendingBase,
    base_text: String,
    source: SourceRef,
    /// The platform, and whether the frontend was told it (`FROM
    /// --platform`) rather than defaulting to the target's.
    platform: Option<(Platform, bool)>,
}

/// Accumulates stages and steps, then resolves and checks them.
#[derive(Default)]
pub struct GraphBuilder {
    stages: Vec<PendingStage>,
    /// Steps as they will be in the graph (copy items resolved in place by
    /// [`GraphBuilder::finish`]: no second list of 200,000 steps).
    steps: Vec<Step>,
    /// For copy steps: each item's source, by step index.
    copy_from: HashMap<usize, Vec<Option<PendingRef>>>,
    outputs: Vec<Output>,
    settings: Settings,
}

impl GraphBuilder {
    /// An empty builder with build-wide settings.
    pub fn new(settings: Settings) -> Self {
        GraphBuilder {
            settings,
            ..Default::default()
        }
    }

    /// Makes room for `n` more steps at once, so a graph of 200,000 steps is
    /// not copied while it grows (a frontend that can bound its step count
    /// cheaply, e.g. by lines, says so; unused room is never touched).
    pub fn reserve_steps(&mut self, n: usize) {
        self.steps.reserve_exact(n);
    }

    /// Adds a stage; returns its id.
    pub fn add_stage(
        &mut self,
        name: &str,
        base: PendingBase,
        base_text: &str,
        source: SourceRef,
    ) -> StageId {
        self.stages.push(PendingStage {
            name: name.to_string(),
            base,
            base_text: base_text.to_string(),
            source,
            platform: None,
        });
        StageId(self.stages.len() - 1)
    }

    /// Sets the platform a stage is built for: `explicit` when the frontend
    /// was told it (`FROM --platform`), else the target's. The graph keeps
    /// it only where the stage's result depends on it (see
    /// [`Stage::platform`]).
    pub fn set_platform(&mut self, stage: StageId, platform: Platform, explicit: bool) {
        if let Some(s) = self.stages.get_mut(stage.0) {
            s.platform = Some((platform, explicit));
        }
    }

    /// Adds a step to a stage. For a copy, `copy_from` has one entry per item:
    /// `Some` for an item that reads from another stage or an image (resolved in
    /// [`GraphBuilder::finish`]), `None` for one that reads the context. `args`
    /// locates each copy source, flattened across items, for diagnostics.
    pub fn add_step(
        &mut self,
        stage: StageId,
        kind: StepKind,
        source: SourceRef,
        copy_from: Vec<Option<PendingRef>>,
        args: Vec<SourceRef>,
    ) -> StepId {
        if matches!(kind, StepKind::Copy(_)) {
            self.copy_from.insert(self.steps.len(), copy_from);
        }
        self.steps.push(Step {
            stage,
            kind,
            source,
            args,
        });
        StepId(self.steps.len() - 1)
    }

    /// Adds an output image.
    pub fn add_output(&mut self, output: Output) {
        self.outputs.push(output);
    }

    /// The id of a stage added so far, by name.
    pub fn stage_named(&self, name: &str) -> Option<StageId> {
        self.stages.iter().position(|s| s.name == name).map(StageId)
    }

    /// Resolves stage references and checks the graph. Returns the graph
    /// together with one diagnostic per unknown stage and per cycle; when there
    /// are any, the graph is only good for further checking (unknown stages
    /// read as scratch), never for building.
    pub fn finish(self) -> (BuildGraph, Vec<Diagnostic>) {
        let mut diags = Vec::new();
        let names: Vec<String> = self.stages.iter().map(|s| s.name.clone()).collect();
        let mut index: HashMap<&str, StageId> = HashMap::with_capacity(names.len());
        for (i, n) in names.iter().enumerate() {
            index.entry(n.as_str()).or_insert(StageId(i));
        }
        let lookup = |name: &str| index.get(name).copied();
        let unknown = |r: &PendingRef, diags: &mut Vec<Diagnostic>| {
            let mut d = Diagnostic::error(
                &r.at.file,
                r.at.span,
                format!(
                    "`{}` is not a stage of this build nor a valid image reference",
                    r.name
                ),
            )
            .with_label("unknown stage");
            if let Some(s) = did_you_mean(&r.name, names.iter().map(String::as_str)) {
                d = d.with_help(format!("did you mean the stage `{s}`?"));
            }
            diags.push(d);
        };

        let mut stages = Vec::with_capacity(self.stages.len());
        for s in &self.stages {
            let base = match &s.base {
                PendingBase::Scratch => Base::Scratch,
                PendingBase::Image(i) => Base::Image(i.clone()),
                PendingBase::Ref(r) => match (lookup(&r.name), &r.image) {
                    (Some(id), _) => Base::Stage(id),
                    (None, Some(img)) => Base::Image(img.clone()),
                    (None, None) => {
                        unknown(r, &mut diags);
                        Base::Scratch
                    }
                },
            };
            stages.push(Stage {
                name: s.name.clone(),
                base,
                base_text: s.base_text.clone(),
                steps: Vec::new(),
                source: s.source.clone(),
                platform: s.platform.as_ref().map(|(p, _)| p.clone()),
                label: None,
            });
        }

        let mut steps = self.steps;
        let mut copy_from = self.copy_from;
        for (i, p) in steps.iter_mut().enumerate() {
            if let StepKind::Copy(c) = &mut p.kind {
                let pending = copy_from.remove(&i).unwrap_or_default();
                // Items naming an unknown stage are dropped (with their source
                // locations): the graph is then only used for further checks,
                // which must not mistake them for context copies.
                let mut keep_items = Vec::new();
                let mut keep_args = Vec::new();
                let mut args = std::mem::take(&mut p.args).into_iter();
                for (mut item, pending) in std::mem::take(&mut c.items).into_iter().zip(&pending) {
                    let item_args: Vec<SourceRef> =
                        args.by_ref().take(item.sources.len()).collect();
                    if let Some(r) = pending {
                        match (lookup(&r.name), &r.image) {
                            (Some(id), _) => {
                                item.from = CopyFrom::Stage {
                                    stage: id,
                                    name: r.name.clone(),
                                }
                            }
                            (None, Some(img)) => {
                                item.from = CopyFrom::Image {
                                    source: img.clone(),
                                }
                            }
                            (None, None) => {
                                unknown(r, &mut diags);
                                continue;
                            }
                        }
                    }
                    keep_items.push(item);
                    keep_args.extend(item_args);
                }
                c.items = keep_items;
                p.args = keep_args;
            }
            // `RUN --mount=from=NAME`: an earlier stage of that name.
            if let StepKind::Run(r) = &mut p.kind {
                for m in &mut r.mounts {
                    if let Mount::Bind {
                        from: Some(name),
                        stage,
                        ..
                    } = m
                    {
                        *stage = lookup(name).filter(|d| d.0 < p.stage.0);
                    }
                }
            }
            stages[p.stage.0].steps.push(StepId(i));
        }

        // A stage's platform matters when a base image is chosen by it, a
        // RUN executes for it, or the frontend was told it; a stage of
        // scratch and copies is the same on every platform.
        for (i, st) in stages.iter_mut().enumerate() {
            let explicit = self.stages[i].platform.as_ref().is_some_and(|(_, e)| *e);
            let depends = matches!(st.base, Base::Image(_))
                || st.steps.iter().any(|id| match &steps[id.0].kind {
                    StepKind::Run(_) => true,
                    StepKind::Copy(c) => c
                        .items
                        .iter()
                        .any(|i| matches!(i.from, CopyFrom::Image { .. })),
                    StepKind::Config(_) | StepKind::Fetch(_) => false,
                });
            if !explicit && !depends {
                st.platform = None;
            }
        }

        let mut graph = BuildGraph {
            stages,
            steps,
            outputs: self.outputs,
            settings: self.settings,
        };
        diags.extend(find_cycles(&graph));
        graph.settings.inputs.sort();
        graph.settings.inputs.dedup();
        (graph, diags)
    }
}

/// Names shown in full in a cycle's message; a longer cycle shows its start
/// and end around a count.
const CYCLE_NAMES_SHOWN: usize = 8;

/// Reports each cycle once, at the stage where the walk closed it. An
/// iterative depth-first walk (explicit stack, each stage's place on the
/// path kept in an array): a 20,000-stage cycle costs linear time and no
/// stack, and its message names the first and last few stages.
fn find_cycles(g: &BuildGraph) -> Vec<Diagnostic> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let deps = g.dependency_lists();
    let n = g.stages.len();
    let mut marks = vec![Mark::New; n];
    // Where an active stage sits on `path`.
    let mut place = vec![0usize; n];
    let mut out = Vec::new();
    for root in 0..n {
        if marks[root] != Mark::New {
            continue;
        }
        // The path of the walk, each stage with its next dependency to visit.
        let mut path: Vec<(StageId, usize)> = vec![(StageId(root), 0)];
        marks[root] = Mark::Active;
        place[root] = 0;
        while let Some(&mut (s, ref mut next)) = path.last_mut() {
            let Some(&d) = deps[s.0].get(*next) else {
                marks[s.0] = Mark::Done;
                path.pop();
                continue;
            };
            *next += 1;
            match marks[d.0] {
                Mark::New => {
                    marks[d.0] = Mark::Active;
                    place[d.0] = path.len();
                    path.push((d, 0));
                }
                Mark::Active => {
                    let cycle: Vec<StageId> =
                        path[place[d.0]..].iter().map(|(id, _)| *id).collect();
                    out.push(cycle_diagnostic(g, &cycle, s));
                }
                Mark::Done => {}
            }
        }
    }
    out
}

/// "stages depend on each other in a cycle: a → b → a", at the stage `at`
/// whose dependency closed the cycle.
fn cycle_diagnostic(g: &BuildGraph, cycle: &[StageId], at: StageId) -> Diagnostic {
    let name = |id: &StageId| g.stage(*id).name.as_str();
    let first = cycle.first().map_or("", name);
    let chain = if cycle.len() <= CYCLE_NAMES_SHOWN {
        let mut names: Vec<&str> = cycle.iter().map(name).collect();
        names.push(first);
        names.join(" → ")
    } else {
        let head: Vec<&str> = cycle[..CYCLE_NAMES_SHOWN / 2].iter().map(name).collect();
        let tail: Vec<&str> = cycle[cycle.len() - CYCLE_NAMES_SHOWN / 2..]
            .iter()
            .map(name)
            .collect();
        format!(
            "{} → … ({} more) → {} → {first}",
            head.join(" → "),
            cycle.len() - CYCLE_NAMES_SHOWN,
            tail.join(" → ")
        )
    };
    let src = &g.stage(at).source;
    let mut d = Diagnostic::error(
        &src.file,
        src.span,
        format!("stages depend on each other in a cycle: {chain}"),
    )
    .with_help("a stage can only use stages that do not use it");
    if cycle.len() > CYCLE_NAMES_SHOWN {
        d = d.with_label(format!("{} stages in this cycle", cycle.len()));
    }
    d
}
