//! Archiving what retention deletes: each batch becomes one gzip'd JSON-lines file in the
//! export's form (events, each signed one followed by its `{"checkpoint": …}` line), so that
//! `meshguard audit verify --file` verifies an archive as it verifies an export.
//!
//! The file is written under a temporary name, flushed to disk, renamed and its directory synced
//! before retention deletes a single event: a crash leaves either no file (and the events) or the
//! whole file; retention then writes the same file again.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::{AuditCheckpoint, AuditEvent, ExportLine, StoreError};

/// The archive file of `gateway`'s events `first..=last`.
pub fn archive_name(gateway: &str, first: u64, last: u64) -> String {
    let safe: String = gateway
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}-{first:012}-{last:012}.jsonl.gz")
}

fn failed(path: &Path, err: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!(
        "cannot archive audit events to {}: {err}",
        path.display()
    ))
}

/// Writes `events` (one chain's, in `seq` order, not empty) and their `checkpoints` to `dir`
/// durably; returns the file's path.
pub(crate) fn write(
    dir: &Path,
    events: Vec<AuditEvent>,
    checkpoints: Vec<AuditCheckpoint>,
) -> Result<PathBuf, StoreError> {
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return Err(StoreError::Corrupt("an empty batch to archive".into()));
    };
    let name = archive_name(&first.event.gateway, first.seq, last.seq);
    std::fs::create_dir_all(dir).map_err(|e| failed(dir, e))?;
    let path = dir.join(&name);
    let partial = dir.join(format!(".{name}.partial"));
    let file = File::create(&partial).map_err(|e| failed(&partial, e))?;
    let mut gzip = GzEncoder::new(std::io::BufWriter::new(file), Compression::default());
    let mut signed = checkpoints.into_iter().peekable();
    for event in events {
        let seq = event.seq;
        let mut line = serde_json::to_vec(&ExportLine::Event(Box::new(event)))
            .map_err(|e| failed(&partial, e))?;
        line.push(b'\n');
        gzip.write_all(&line).map_err(|e| failed(&partial, e))?;
        while let Some(checkpoint) = signed.next_if(|c| c.seq <= seq) {
            if checkpoint.seq == seq {
                let mut line = serde_json::to_vec(&ExportLine::Checkpoint { checkpoint })
                    .map_err(|e| failed(&partial, e))?;
                line.push(b'\n');
                gzip.write_all(&line).map_err(|e| failed(&partial, e))?;
            }
        }
    }
    let file = gzip
        .finish()
        .map_err(|e| failed(&partial, e))?
        .into_inner()
        .map_err(|e| failed(&partial, e.error()))?;
    file.sync_all().map_err(|e| failed(&partial, e))?;
    std::fs::rename(&partial, &path).map_err(|e| failed(&path, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| failed(dir, e))?;
    Ok(path)
}
