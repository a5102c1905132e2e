//! The runtime file (`--actor-runtime-file`, `asya_runtime.py`) the operator publishes as the
//! `asya-runtime` ConfigMap in every namespace with an actor.
//!
//! Invariants:
//! - the file is read whole and must be UTF-8 and at most [`MAX_BYTES`] (a ConfigMap holds
//!   at most 1 MiB); a file that is unusable at start-up stops the operator with the reason;
//! - the file is re-read every poll period (a Helm-mounted ConfigMap changes by a symlink
//!   swap); a changed content is published to every reconciler, an unreadable or invalid
//!   one is logged and the last good content is kept.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::build::runtime_hash;
use crate::{Error, Result};

/// Largest runtime file accepted (leaves room for the ConfigMap's metadata under 1 MiB).
pub const MAX_BYTES: usize = 900 * 1024;

/// A runtime file's content and its sha256.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeFile {
    pub content: String,
    pub hash: String,
}

/// Read and check the runtime file.
pub fn load(path: &Path) -> Result<RuntimeFile> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.len() > MAX_BYTES {
        return Err(Error::Config(format!(
            "{} is {} bytes; a runtime file may be at most {MAX_BYTES} bytes (it is stored in a ConfigMap)",
            path.display(),
            bytes.len()
        )));
    }
    let content = String::from_utf8(bytes)
        .map_err(|_| Error::Config(format!("{} is not UTF-8 text", path.display())))?;
    Ok(RuntimeFile {
        hash: runtime_hash(&content),
        content,
    })
}

/// The current runtime file (None: the operator has none).
pub type RuntimeRx = watch::Receiver<Option<Arc<RuntimeFile>>>;

/// Load the file once (failing loudly) and return the channel plus the task that keeps it
/// current (None when no file is configured).
pub fn source(
    path: Option<PathBuf>,
    every: Duration,
) -> Result<(RuntimeRx, Option<futures::future::BoxFuture<'static, ()>>)> {
    let Some(path) = path else {
        // Nothing ever changes: the sender goes, readers keep seeing None.
        let (_, rx) = watch::channel(None);
        return Ok((rx, None));
    };
    let first = load(&path)?;
    tracing::info!(path = %path.display(), sha256 = %first.hash, "actor runtime file loaded");
    let (tx, rx) = watch::channel(Some(Arc::new(first)));
    let task = Box::pin(async move {
        loop {
            tokio::time::sleep(every).await;
            match load(&path) {
                Ok(f) => {
                    let changed = tx.borrow().as_ref().is_none_or(|c| c.hash != f.hash);
                    if changed {
                        tracing::info!(path = %path.display(), sha256 = %f.hash, "actor runtime file changed");
                        tx.send_replace(Some(Arc::new(f)));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "actor runtime file unreadable; keeping the last content")
                }
            }
        }
    }) as futures::future::BoxFuture<'static, ()>;
    Ok((rx, Some(task)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn changes_are_published_and_bad_content_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("asya_runtime.py");
        std::fs::write(&p, "print('v1')\n").unwrap();
        let (mut rx, task) = source(Some(p.clone()), Duration::from_millis(20)).unwrap();
        let first = rx.borrow_and_update().clone().unwrap();
        assert_eq!(first.content, "print('v1')\n");
        let t = tokio::spawn(task.unwrap());
        std::fs::write(&p, [0xff, 0xfe]).unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(!rx.has_changed().unwrap(), "invalid content keeps the last");
        std::fs::write(&p, "print('v2')\n").unwrap();
        tokio::time::timeout(Duration::from_secs(2), rx.changed())
            .await
            .unwrap()
            .unwrap();
        let now = rx.borrow().clone().unwrap();
        assert_eq!(now.content, "print('v2')\n");
        assert_ne!(now.hash, first.hash);
        t.abort();

        std::fs::write(&p, vec![b'a'; MAX_BYTES + 1]).unwrap();
        let e = source(Some(p), Duration::from_secs(1)).err().unwrap();
        assert!(e.to_string().contains("at most"), "{e}");
        let e = load(Path::new("/nonexistent/asya_runtime.py")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent"), "{e}");
    }
}
