//! The audit write-ahead log of a SQLite gateway: the durable record of every event it chains.
//!
//! Committing an event to SQLite takes about half a millisecond on the development machine: a
//! pool checkout and five statements (each a hand-off to sqlx's worker thread) around the WAL's
//! fsync. Appending the same event to a file takes one `write` and one `fdatasync`, a third of
//! that. So with SQLite the audit writer chains each batch itself, appends it to this log, and
//! answers once the log is on disk; an indexer then inserts the batch into the SQL tables, which
//! queries read. A query first waits for the events acknowledged before it to be indexed
//! (`AuditWriter::settled`), so no reader sees an answer whose event it cannot find.
//! docs/architecture/audit-log.md explains the trade-offs.
//!
//! The log is a directory of segments, `<first seq>.jsonl`, one JSON line per event in the
//! form `GET /admin/audit` answers with. A batch is written whole, then synced; a crash can
//! leave only a torn tail of the newest segment, which no answer acknowledged and which
//! [`AuditLog::recover`] cuts off. A segment is deleted once every event in it is indexed. One
//! gateway at a time writes a log: the directory's `LOCK` file is held while it runs.
//!
//! A busy log writes into segments filled with zeros ahead of use, by a thread of their own:
//! syncing a write over allocated blocks leaves the file's size and block map alone, so the
//! filesystem has no metadata to journal, and under load that takes about a third off each
//! batch's sync (docs/architecture/audit-log.md). Recovery reads a run of zeros as the end of a
//! segment.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use meshguard_store::AuditEvent;

/// The log's directory, inside the data dir.
pub const LOG_DIR: &str = "audit-log";
/// A segment that has grown past this is sealed and a new one started, whether or not a
/// prepared one is ready.
const SEGMENT_BYTES: u64 = 64 << 20;
/// The size of a prepared segment (zeros until the writer overwrites them).
const PREPARED_BYTES: u64 = 16 << 20;
/// A log prepares segments only once its current one holds this much: a gateway that audits a
/// few events never writes 16 MiB of zeros.
const PREPARE_AFTER: u64 = 1 << 20;
/// Zeros are written and synced this much at a time, so that a log sync never waits behind a
/// long flush of the next segment.
const ZERO_CHUNK: usize = 1 << 20;
/// The segment being prepared; not a segment (no `.jsonl`), so recovery deletes it.
const PREPARING_NAME: &str = "next-segment.zeros";
/// The extension of a segment file.
const SEGMENT_EXTENSION: &str = "jsonl";

/// Why the log cannot be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file operation failed.
    #[error("audit log `{path}`: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// Another process holds the log.
    #[error(
        "audit log `{0}` is in use by another gateway process on this data directory; stop it first"
    )]
    Locked(PathBuf),
    /// A sealed segment holds a line that is not an event: the log was altered.
    #[error("audit log `{path}`, line {line}: {message}")]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// An earlier write failed and could not be undone: nothing more is appended.
    #[error("audit log `{0}` failed earlier and could not be rolled back; restart the gateway")]
    Broken(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A log as found at start-up: the lock is held, the events it still holds are read (for the
/// store to index what it lacks), and nothing is written until [`Recovery::into_log`].
#[derive(Debug)]
pub struct Recovery {
    dir: PathBuf,
    lock: File,
    segments: Vec<PathBuf>,
    /// Every event still in the log, oldest first.
    pub events: Vec<AuditEvent>,
}

/// The open log, appended to by the audit writer.
#[derive(Debug)]
pub struct AuditLog {
    dir: PathBuf,
    _lock: File,
    current: File,
    current_path: PathBuf,
    current_first: u64,
    current_len: u64,
    /// How much of the current segment was filled with zeros before use (0: it grows).
    current_prepared: u64,
    /// The next segment, being filled with zeros.
    preparing: Option<JoinHandle<Result<File, LogError>>>,
    /// Preparing a segment failed: not tried again before the next segment.
    prepare_failed: bool,
    /// Sealed segments (first seq, path), oldest first.
    sealed: Vec<(u64, PathBuf)>,
    broken: bool,
}

fn segment_first_seq(path: &Path) -> Option<u64> {
    if path.extension().and_then(|e| e.to_str()) != Some(SEGMENT_EXTENSION) {
        return None;
    }
    path.file_stem()?.to_str()?.parse().ok()
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.{SEGMENT_EXTENSION}"))
}

/// Makes a new or removed directory entry durable.
fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

impl AuditLog {
    /// Opens (creating) the log in `dir`, takes its lock and reads the events it holds. A torn
    /// tail of the newest segment (a batch cut short by a crash, never acknowledged) is cut off.
    pub fn recover(dir: &Path) -> Result<Recovery, LogError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(LogError::Locked(dir.to_owned())),
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        let mut segments: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|entry| {
                let path = entry.ok()?.path();
                Some((segment_first_seq(&path)?, path))
            })
            .collect();
        segments.sort();
        let mut events = Vec::new();
        let last = segments.len().saturating_sub(1);
        for (index, (_, path)) in segments.iter().enumerate() {
            read_segment(path, index == last, &mut events)?;
        }
        Ok(Recovery {
            dir: dir.to_owned(),
            lock,
            segments: segments.into_iter().map(|(_, path)| path).collect(),
            events,
        })
    }

    /// Appends a batch and waits until it is on disk. A failed write is rolled back so the
    /// log never holds an event nobody was told of; if that fails too, the log refuses every
    /// later append (the gateway then answers 503: fail closed).
    pub fn append(&mut self, events: &[AuditEvent]) -> Result<(), LogError> {
        if self.broken {
            return Err(LogError::Broken(self.current_path.clone()));
        }
        let Some(first) = events.first() else {
            return Ok(());
        };
        let mut lines = Vec::with_capacity(events.len() * 768);
        for event in events {
            serde_json::to_writer(&mut lines, event).map_err(|e| {
                io(&self.current_path)(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
            })?;
            lines.push(b'\n');
        }
        if self.current_len >= SEGMENT_BYTES {
            self.rotate(first.seq, None)?;
        } else if self.current_len + lines.len() as u64 > self.current_prepared
            && let Some(prepared) = self.prepared()
        {
            self.rotate(first.seq, Some(prepared))?;
        }
        // Written at its offset, not at the file's cursor: a failed write may have moved it.
        let written = self
            .current
            .write_all_at(&lines, self.current_len)
            .and_then(|()| self.current.sync_data());
        match written {
            Ok(()) => {
                self.current_len += lines.len() as u64;
                self.prepare_next();
                Ok(())
            }
            Err(e) => {
                // Cutting the file also drops its prepared zeros: the segment grows from here.
                self.current_prepared = 0;
                let rolled_back = self
                    .current
                    .set_len(self.current_len)
                    .and_then(|()| self.current.sync_data());
                if rolled_back.is_err() {
                    self.broken = true;
                }
                Err(io(&self.current_path)(e))
            }
        }
    }

    /// Starts filling the next segment with zeros once this log is busy enough to use it.
    fn prepare_next(&mut self) {
        if self.preparing.is_some()
            || self.prepare_failed
            || (self.current_prepared == 0 && self.current_len < PREPARE_AFTER)
        {
            return;
        }
        let dir = self.dir.clone();
        let spawned = std::thread::Builder::new()
            .name("audit-log-zeros".into())
            .spawn(move || prepare_segment(&dir.join(PREPARING_NAME)));
        match spawned {
            Ok(handle) => self.preparing = Some(handle),
            Err(e) => {
                self.prepare_failed = true;
                tracing::warn!(error = %e, "audit log: the next segment is not prepared");
            }
        }
    }

    /// The prepared segment, if its zeros are on disk. A failure to prepare one is logged and
    /// the log goes on growing files instead (and tries again at the next segment).
    fn prepared(&mut self) -> Option<File> {
        if !self.preparing.as_ref()?.is_finished() {
            return None;
        }
        match self.preparing.take()?.join() {
            Ok(Ok(file)) => return Some(file),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "audit log: the next segment could not be prepared");
            }
            Err(_) => tracing::warn!("audit log: preparing the next segment panicked"),
        }
        self.prepare_failed = true;
        None
    }

    /// Deletes the sealed segments whose every event is indexed (`seq <= indexed`).
    pub fn release(&mut self, indexed: u64) {
        let mut deleted = false;
        while let Some((_, path)) = self.sealed.first() {
            // A segment ends where the next one starts.
            let next_first = self
                .sealed
                .get(1)
                .map_or(self.current_first, |(first, _)| *first);
            if next_first.saturating_sub(1) > indexed {
                break;
            }
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(segment = %path.display(), error = %e, "indexed audit log segment not deleted");
                break;
            }
            self.sealed.remove(0);
            deleted = true;
        }
        if deleted && let Err(e) = sync_dir(&self.dir) {
            tracing::warn!(error = %e, "audit log directory not synced");
        }
    }

    /// Seals the current segment and starts the next at `first_seq`: the `prepared` one (its
    /// zeros on disk) or a new empty file.
    fn rotate(&mut self, first_seq: u64, prepared: Option<File>) -> Result<(), LogError> {
        let path = segment_path(&self.dir, first_seq);
        let (file, prepared_len) = match prepared {
            Some(file) => {
                std::fs::rename(self.dir.join(PREPARING_NAME), &path).map_err(io(&path))?;
                (file, PREPARED_BYTES)
            }
            None => (create_segment(&path)?, 0),
        };
        sync_dir(&self.dir)?;
        let sealed_path = std::mem::replace(&mut self.current_path, path);
        self.sealed.push((self.current_first, sealed_path));
        self.current = file;
        self.current_first = first_seq;
        self.current_len = 0;
        self.current_prepared = prepared_len;
        self.prepare_failed = false;
        Ok(())
    }
}

fn create_segment(path: &Path) -> Result<File, LogError> {
    OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .map_err(io(path))
}

/// Fills a new file at `path` with [`PREPARED_BYTES`] of zeros, each chunk synced as it goes.
fn prepare_segment(path: &Path) -> Result<File, LogError> {
    let file = create_segment(path)?;
    let zeros = vec![0_u8; ZERO_CHUNK];
    let mut offset = 0;
    while offset < PREPARED_BYTES {
        file.write_all_at(&zeros, offset)
            .and_then(|()| file.sync_data())
            .map_err(io(path))?;
        offset += zeros.len() as u64;
    }
    Ok(file)
}

impl Recovery {
    /// The log, ready for appends from `next_seq` on. The caller has indexed every recovered
    /// event, so the old segments are deleted.
    pub fn into_log(self, next_seq: u64) -> Result<AuditLog, LogError> {
        for path in &self.segments {
            std::fs::remove_file(path).map_err(io(path))?;
        }
        let preparing = self.dir.join(PREPARING_NAME);
        match std::fs::remove_file(&preparing) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&preparing)(e)),
            _ => {}
        }
        let current_path = segment_path(&self.dir, next_seq);
        let current = create_segment(&current_path)?;
        sync_dir(&self.dir)?;
        Ok(AuditLog {
            dir: self.dir,
            _lock: self.lock,
            current,
            current_path,
            current_first: next_seq,
            current_len: 0,
            current_prepared: 0,
            preparing: None,
            prepare_failed: false,
            sealed: Vec::new(),
            broken: false,
        })
    }
}

/// Reads the events of one segment into `events`. In the newest segment (`newest`), the first
/// line that is not a whole event starts a torn tail, which is cut off the file.
fn read_segment(path: &Path, newest: bool, events: &mut Vec<AuditEvent>) -> Result<(), LogError> {
    let file = File::open(path).map_err(io(path))?;
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let mut offset: u64 = 0;
    let mut number = 0;
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line).map_err(io(path))?;
        if read == 0 {
            return Ok(());
        }
        number += 1;
        if line.iter().all(|&byte| byte == 0) && !line.ends_with(b"\n") {
            // The prepared zeros after the last write: the segment ends here.
            return Ok(());
        }
        let whole = line.last() == Some(&b'\n');
        match serde_json::from_slice::<AuditEvent>(&line) {
            Ok(event) if whole => events.push(event),
            Ok(_) | Err(_) if newest => {
                tracing::warn!(segment = %path.display(), line = number, "audit log: a torn tail, never acknowledged, is cut off");
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io(path))?;
                file.set_len(offset)
                    .and_then(|()| file.sync_all())
                    .map_err(io(path))?;
                return Ok(());
            }
            Ok(_) => {
                return Err(LogError::Corrupt {
                    path: path.to_owned(),
                    line: number,
                    message: "a line cut short in a sealed segment".into(),
                });
            }
            Err(e) => {
                return Err(LogError::Corrupt {
                    path: path.to_owned(),
                    line: number,
                    message: e.to_string(),
                });
            }
        }
        offset += read as u64;
    }
}

/// Why the log could not be brought in step with the store at start-up.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// The log cannot be read or written.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The store refused the log's events: it does not hold the chain they continue.
    #[error("the audit log's events cannot be indexed: {0}")]
    Store(#[from] meshguard_store::StoreError),
}

/// Where this gateway's chain stands once the log is open.
#[derive(Debug)]
pub struct OpenedLog {
    /// The log, ready for the next event.
    pub log: AuditLog,
    /// The chain's newest `seq`.
    pub head_seq: u64,
    /// The chain's newest hash.
    pub head_hash: String,
}

/// Opens the log in `<data_dir>/audit-log` for the chain of `gateway`, first indexing in
/// `store` every event the log holds and the store lacks (those acknowledged before a crash).
pub async fn open(
    store: &dyn meshguard_store::Store,
    data_dir: &Path,
    gateway: &str,
) -> Result<OpenedLog, RecoveryError> {
    let dir = data_dir.join(LOG_DIR);
    let recovery = tokio::task::spawn_blocking(move || AuditLog::recover(&dir))
        .await
        .map_err(|e| LogError::Io {
            path: data_dir.join(LOG_DIR),
            source: std::io::Error::other(e.to_string()),
        })??;
    let (mut head_seq, mut head_hash) = store.audit_head(gateway).await?;
    let missing: Vec<AuditEvent> = recovery
        .events
        .iter()
        .filter(|event| event.event.gateway == gateway && event.seq > head_seq)
        .cloned()
        .collect();
    for chunk in missing.chunks(crate::audit_writer::MAX_BATCH) {
        store.append_chained(chunk, true).await?;
    }
    if let Some(last) = missing.last() {
        tracing::info!(
            events = missing.len(),
            through_seq = last.seq,
            "audit log: indexed the events acknowledged before the last stop"
        );
        head_seq = last.seq;
        head_hash.clone_from(&last.hash);
    }
    let log = recovery.into_log(head_seq.saturating_add(1))?;
    Ok(OpenedLog {
        log,
        head_seq,
        head_hash,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use meshguard_store::{AuditKind, NewAuditEvent, chain_event};
    use std::io::Write as _;

    fn event(seq: u64, prev: &str) -> AuditEvent {
        let mut context = serde_json::Map::new();
        context.insert("amount".into(), serde_json::json!(12.5));
        let new = NewAuditEvent {
            id: format!("ev-{seq}"),
            resource: Some("*".into()),
            context,
            latency_us: Some(3),
            ..NewAuditEvent::new(AuditKind::Check, "read:workspace/a.txt", "gw")
        };
        chain_event(&new, seq, prev).unwrap()
    }

    #[test]
    fn events_come_back_exactly_as_they_were_appended() {
        let dir = tempfile::tempdir().unwrap();
        let first = event(1, meshguard_store::chain::GENESIS_HASH);
        let second = event(2, &first.hash);
        let mut log = AuditLog::recover(dir.path()).unwrap().into_log(1).unwrap();
        log.append(&[first.clone(), second.clone()]).unwrap();
        drop(log);
        let recovered = AuditLog::recover(dir.path()).unwrap();
        assert_eq!(recovered.events, vec![first, second]);
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_a_second_process_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = event(1, meshguard_store::chain::GENESIS_HASH);
        let mut log = AuditLog::recover(dir.path()).unwrap().into_log(1).unwrap();
        log.append(std::slice::from_ref(&first)).unwrap();
        assert!(matches!(
            AuditLog::recover(dir.path()),
            Err(LogError::Locked(_))
        ));
        // A crash in the middle of the next batch's write.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log.current_path)
            .unwrap()
            .write_all(b"{\"id\":\"ev-2\",\"se")
            .unwrap();
        let path = log.current_path.clone();
        drop(log);
        let recovered = AuditLog::recover(dir.path()).unwrap();
        assert_eq!(recovered.events, vec![first]);
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.ends_with("}\n"), "the torn line is gone: {text}");
    }

    #[test]
    fn an_altered_sealed_segment_is_refused_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(segment_path(dir.path(), 1), "not json\n").unwrap();
        std::fs::write(segment_path(dir.path(), 9), "").unwrap();
        let err = AuditLog::recover(dir.path()).unwrap_err();
        assert!(matches!(&err, LogError::Corrupt { line: 1, .. }), "{err}");
    }

    /// `count` events chained after `prev` from `seq` on, each about 1 KiB.
    fn chained(seq: u64, count: u64, prev: &str) -> Vec<AuditEvent> {
        let mut prev = prev.to_owned();
        (seq..seq + count)
            .map(|seq| {
                let mut new = NewAuditEvent::new(AuditKind::Check, "read:workspace/a.txt", "gw");
                new.id = format!("ev-{seq}");
                new.context
                    .insert("padding".into(), "x".repeat(1000).into());
                let event = chain_event(&new, seq, &prev).unwrap();
                prev.clone_from(&event.hash);
                event
            })
            .collect()
    }

    /// Waits (at most 30 s) until the next segment's zeros are on disk.
    fn wait_prepared(log: &AuditLog) {
        let preparing = log
            .preparing
            .as_ref()
            .expect("a busy log prepares its next segment");
        for _ in 0..3000 {
            if preparing.is_finished() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the next segment was not prepared within 30 s");
    }

    #[test]
    fn a_busy_log_writes_into_prepared_zeros_and_recovery_stops_at_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = AuditLog::recover(dir.path()).unwrap().into_log(1).unwrap();
        let quiet = chained(1, 10, meshguard_store::chain::GENESIS_HASH);
        log.append(&quiet).unwrap();
        assert!(log.preparing.is_none(), "a quiet log writes no zeros");
        let busy = chained(11, 1100, &quiet[9].hash);
        log.append(&busy).unwrap();
        wait_prepared(&log);
        let after = chained(1111, 3, &busy[1099].hash);
        log.append(&after[..1]).unwrap();
        log.append(&after[1..]).unwrap();
        assert_eq!(
            log.current_first, 1111,
            "the prepared segment took the next batch"
        );
        assert_eq!(
            std::fs::metadata(&log.current_path).unwrap().len(),
            PREPARED_BYTES,
            "the batches overwrote zeros; the file did not grow"
        );
        drop(log);
        let recovered = AuditLog::recover(dir.path()).unwrap();
        let expected: Vec<AuditEvent> = quiet.into_iter().chain(busy).chain(after).collect();
        assert_eq!(recovered.events.len(), expected.len());
        assert!(recovered.events == expected, "every event back, in order");
        let log = recovered.into_log(1114).unwrap();
        assert!(
            !dir.path().join(PREPARING_NAME).exists(),
            "a segment left half prepared is removed at the start"
        );
        drop(log);
    }

    #[test]
    fn a_segment_that_cannot_be_prepared_leaves_the_log_growing_and_is_not_retried_per_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = AuditLog::recover(dir.path()).unwrap().into_log(1).unwrap();
        // A directory where the prepared segment's file would go: preparing it fails.
        std::fs::create_dir(dir.path().join(PREPARING_NAME)).unwrap();
        let busy = chained(1, 1100, meshguard_store::chain::GENESIS_HASH);
        log.append(&busy).unwrap();
        wait_prepared(&log);
        let after = chained(1101, 3, &busy[1099].hash);
        for event in &after {
            log.append(std::slice::from_ref(event)).unwrap();
            assert!(log.preparing.is_none(), "no new attempt after a failure");
        }
        assert!(log.prepare_failed);
        assert_eq!(log.current_first, 1, "the log went on growing its segment");
        drop(log);
        let recovered = AuditLog::recover(dir.path()).unwrap();
        assert_eq!(recovered.events.len(), 1103);
    }

    #[test]
    fn a_torn_write_over_prepared_zeros_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let first = event(1, meshguard_store::chain::GENESIS_HASH);
        std::fs::write(segment_path(dir.path(), 1), {
            let mut bytes = serde_json::to_vec(&first).unwrap();
            bytes.extend_from_slice(b"\n{\"id\":\"ev-2\",\"se");
            bytes.resize(64 << 10, 0);
            bytes
        })
        .unwrap();
        let recovered = AuditLog::recover(dir.path()).unwrap();
        assert_eq!(recovered.events, vec![first]);
    }

    #[test]
    fn a_sealed_segment_may_end_in_zeros_but_not_in_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let first = event(1, meshguard_store::chain::GENESIS_HASH);
        let second = event(2, &first.hash);
        let mut sealed = serde_json::to_vec(&first).unwrap();
        sealed.push(b'\n');
        sealed.resize(4096, 0);
        std::fs::write(segment_path(dir.path(), 1), &sealed).unwrap();
        std::fs::write(
            segment_path(dir.path(), 2),
            format!("{}\n", serde_json::to_string(&second).unwrap()),
        )
        .unwrap();
        let recovered = AuditLog::recover(dir.path()).unwrap();
        assert_eq!(recovered.events, vec![first, second]);
        drop(recovered);
        sealed.truncate(sealed.iter().position(|&byte| byte == 0).unwrap() - 20);
        sealed.resize(4096, 0);
        std::fs::write(segment_path(dir.path(), 1), &sealed).unwrap();
        let err = AuditLog::recover(dir.path()).unwrap_err();
        assert!(matches!(&err, LogError::Corrupt { line: 1, .. }), "{err}");
    }

    #[test]
    fn sealed_segments_go_once_everything_in_them_is_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = AuditLog::recover(dir.path()).unwrap().into_log(1).unwrap();
        let first = event(1, meshguard_store::chain::GENESIS_HASH);
        log.append(std::slice::from_ref(&first)).unwrap();
        log.current_len = SEGMENT_BYTES;
        let second = event(2, &first.hash);
        log.append(std::slice::from_ref(&second)).unwrap();
        assert_eq!(log.sealed.len(), 1);
        log.release(0);
        assert_eq!(log.sealed.len(), 1, "event 1 is not indexed yet");
        log.release(1);
        assert!(log.sealed.is_empty());
        assert!(!segment_path(dir.path(), 1).exists());
        assert!(segment_path(dir.path(), 2).exists());
    }
}
