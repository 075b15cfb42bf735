//! Building a [`BuildGraph`] from a frontend: stage references are resolved
//! once every stage is known, then unknown stages and cycles are reported as
//! diagnostics at the place that named them.

use crate::diag::{Diagnostic, SourceRef, did_you_mean};

use super::{
    Base, BuildGraph, CopyFrom, ImageSource, Output, Settings, Stage, StageId, Step, StepId,
    StepKind,
};

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
}

struct PendingStep {
    stage: StageId,
    kind: StepKind,
    source: SourceRef,
    copy_from: Vec<Option<PendingRef>>,
    args: Vec<SourceRef>,
}

/// Accumulates stages and steps, then resolves and checks them.
#[derive(Default)]
pub struct GraphBuilder {
    stages: Vec<PendingStage>,
    steps: Vec<PendingStep>,
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
        });
        StageId(self.stages.len() - 1)
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
        self.steps.push(PendingStep {
            stage,
            kind,
            source,
            copy_from,
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
        let lookup = |name: &str| names.iter().position(|n| n == name).map(StageId);
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
            });
        }

        let mut steps = Vec::with_capacity(self.steps.len());
        for (i, mut p) in self.steps.into_iter().enumerate() {
            if let StepKind::Copy(c) = &mut p.kind {
                // Items naming an unknown stage are dropped (with their source
                // locations): the graph is then only used for further checks,
                // which must not mistake them for context copies.
                let mut keep_items = Vec::new();
                let mut keep_args = Vec::new();
                let mut args = std::mem::take(&mut p.args).into_iter();
                for (mut item, pending) in
                    std::mem::take(&mut c.items).into_iter().zip(&p.copy_from)
                {
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
            stages[p.stage.0].steps.push(StepId(i));
            steps.push(Step {
                stage: p.stage,
                kind: p.kind,
                source: p.source,
                args: p.args,
            });
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

/// Reports each cycle once, at the stage where the walk closed it.
fn find_cycles(g: &BuildGraph) -> Vec<Diagnostic> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    fn walk(
        g: &BuildGraph,
        s: StageId,
        marks: &mut [Mark],
        path: &mut Vec<StageId>,
        out: &mut Vec<Diagnostic>,
    ) {
        marks[s.0] = Mark::Active;
        path.push(s);
        for d in g.dependencies(s) {
            match marks[d.0] {
                Mark::New => walk(g, d, marks, path, out),
                Mark::Active => {
                    let start = path.iter().position(|&p| p == d).unwrap_or(0);
                    let chain: Vec<&str> = path[start..]
                        .iter()
                        .chain(std::iter::once(&d))
                        .map(|id| g.stage(*id).name.as_str())
                        .collect();
                    let at = &g.stage(s).source;
                    out.push(
                        Diagnostic::error(
                            &at.file,
                            at.span,
                            format!(
                                "stages depend on each other in a cycle: {}",
                                chain.join(" → ")
                            ),
                        )
                        .with_help("a stage can only use stages that do not use it"),
                    );
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks[s.0] = Mark::Done;
    }
    let mut marks = vec![Mark::New; g.stages.len()];
    let mut out = Vec::new();
    for i in 0..g.stages.len() {
        if marks[i] == Mark::New {
            walk(g, StageId(i), &mut marks, &mut Vec::new(), &mut out);
        }
    }
    out
}
