//! Progress reporting for a CLI progress bar; the engine calls it from its worker threads.

/// Receives totals once, then increments as files are copied, reused or found unchanged.
pub trait Progress: Sync {
    /// Files and bytes the operation expects to handle.
    fn planned(&self, _files: u64, _bytes: u64) {}
    /// `files` more files handled, `bytes` more bytes of content.
    fn advanced(&self, _files: u64, _bytes: u64) {}
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
