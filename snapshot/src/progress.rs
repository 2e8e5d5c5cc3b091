//! Progress reporting for a CLI progress bar; the engine calls it from its worker threads.

/// Receives totals once, then increments as files are copied, reused or found unchanged, and,
/// for a take, each step of publishing the finished tree.
///
/// Every call is made while the engine waits for it: a take cannot get past the point a call
/// reports until the call returns (see [`Phase`] for what holds at each point).
pub trait Progress: Sync {
    /// Files and bytes the operation expects to handle.
    fn planned(&self, _files: u64, _bytes: u64) {}
    /// `files` more files handled, `bytes` more bytes of content. A take calls it from its
    /// copy workers as each file lands in the temporary tree; nothing is published before
    /// every such call has returned.
    fn advanced(&self, _files: u64, _bytes: u64) {}
    /// A take reached a step of publishing (in the order of [`Phase`]).
    fn phase(&self, _phase: Phase) {}
}

/// The steps of a take after its files are copied, in order. What a crash at each leaves
/// behind is what makes the take atomic, so a progress display can name the step it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Every entry of the new snapshot is in the `.tmp-*` tree with its metadata; no manifest
    /// yet, so the tree is nothing but a remain to sweep.
    TreeBuilt,
    /// The manifest is written into the `.tmp-*` tree, not yet flushed.
    ManifestWritten,
    /// The new tree is flushed to disk; next is the one atomic exchange with the published
    /// snapshot.
    Flushed,
    /// The new snapshot is published; the previous one now sits in the `.tmp-*` directory
    /// and is about to be removed. (A first take has no previous one: it goes from
    /// `Flushed` to `Published`.)
    Exchanged,
    /// Removing the previous snapshot: `removed` of `parts` subtrees are gone. Reported after
    /// each one, from the removal's worker threads.
    RemovingPrevious { removed: u64, parts: u64 },
    /// The previous snapshot is gone; only the new one's verify cache is left to record.
    Published,
}

impl Phase {
    /// A stable short name (for logs and command-line options).
    pub fn name(&self) -> &'static str {
        match self {
            Phase::TreeBuilt => "tree-built",
            Phase::ManifestWritten => "manifest-written",
            Phase::Flushed => "flushed",
            Phase::Exchanged => "exchanged",
            Phase::RemovingPrevious { .. } => "removing-previous",
            Phase::Published => "published",
        }
    }
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
