//! `meshguard audit verify --file EXPORT --key KEY.pub.pem`: verifies an exported trail with no
//! gateway, as an auditor would.
//!
//! The file is what `audit export` writes: events, each signed one followed by its
//! `{"checkpoint": …}` line. Each chain is walked from its first event in the file (whose
//! `prev_hash` the file cannot prove) with the same checks as the gateway's `audit verify`
//! (meshguard_store::chain_walk); what makes the file the gateway's trail rather than a chain
//! anyone could have rebuilt are the checkpoint signatures, so a chain with no checkpoint that
//! verifies fails.

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use meshguard_store::chain::{event_hash, exported_link};
use meshguard_store::chain_walk::ChainWalk;
use meshguard_store::{AuditCheckpoint, AuditEvent, CheckpointKeys, VerifyReport};
use serde_json::Value;

use crate::error::CliError;

/// Lines read, then parsed and hashed together (on every core), before they are linked in order.
const CHUNK: usize = 8192;
/// Chunks smaller than this are parsed on the calling thread: a thread costs more than it saves.
const PARALLEL_FROM: usize = 256;

/// One line of an export, parsed and, for an event, hashed again.
enum Line {
    Event {
        gateway: String,
        seq: u64,
        prev_hash: String,
        hash: String,
        /// Whether `hash` is the hash of the event's content.
        matches: bool,
    },
    Checkpoint(AuditCheckpoint),
}

/// A line read but not parsed yet: its file, its number there, its text.
type Pending<'f> = (&'f Path, usize, String);

/// Verifies `files`, in order, as one trail against the public keys in `keys`; the report reads
/// like the gateway's.
pub fn verify_files(files: &[PathBuf], keys: &[PathBuf]) -> anyhow::Result<Value> {
    let mut accepted = CheckpointKeys::default();
    for key in keys {
        let pem = std::fs::read_to_string(key)
            .with_context(|| format!("cannot read the public key {}", key.display()))?;
        accepted
            .add_pem(&pem)
            .map_err(|err| CliError::Usage(format!("{}: {err}", key.display())))?;
    }
    let mut walks: BTreeMap<String, ChainWalk<'_>> = BTreeMap::new();
    let mut chunk: Vec<Pending<'_>> = Vec::with_capacity(CHUNK);
    for file in files {
        for (index, line) in open(file)?.lines().enumerate() {
            let number = index + 1;
            let line = line.with_context(|| format!("{}: line {number}", file.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            chunk.push((file.as_path(), number, line));
            if chunk.len() == CHUNK {
                walk_chunk(&mut walks, &std::mem::take(&mut chunk), &accepted)?;
            }
        }
    }
    walk_chunk(&mut walks, &chunk, &accepted)?;
    if walks.is_empty() {
        return Err(CliError::Usage(
            "no audit event in the files: are they the output of `meshguard audit export` or \
             retention archives?"
                .to_owned(),
        )
        .into());
    }
    let mut chains = Vec::with_capacity(walks.len());
    for walk in walks.into_values() {
        let mut report = walk.finish();
        if report.broken.is_none() && report.signed_seq.is_none() {
            report.broken = Some(meshguard_store::ChainBreak {
                gateway: report.gateway.clone(),
                seq: report.from_seq + 1,
                reason: "no checkpoint signed by the given keys covers this chain: without one \
                         the file does not show that the gateway wrote it"
                    .to_owned(),
            });
        }
        chains.push(report);
    }
    let report = VerifyReport {
        ok: chains.iter().all(|chain| chain.broken.is_none()),
        full: true,
        events_checked: chains.iter().map(|chain| chain.events).sum(),
        chains,
    };
    Ok(serde_json::to_value(report)?)
}

/// The lines of `file`, gunzipped when it starts with gzip's magic bytes (a retention archive).
fn open(file: &Path) -> anyhow::Result<Box<dyn std::io::BufRead>> {
    use std::io::Read as _;
    let mut opened =
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let mut magic = [0u8; 2];
    let gzip = opened.read(&mut magic).ok() == Some(2) && magic == [0x1f, 0x8b];
    let opened =
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    Ok(if gzip {
        Box::new(std::io::BufReader::new(flate2::read::MultiGzDecoder::new(
            opened,
        )))
    } else {
        Box::new(std::io::BufReader::new(opened))
    })
}

/// Parses one line; an event is hashed again. A line as `audit export` writes it is hashed
/// without decoding the event ([`exported_link`]); any other is decoded, which says what is
/// wrong with it.
fn parse(file: &Path, number: usize, line: &str) -> anyhow::Result<Line> {
    if let Some(link) = exported_link(line) {
        return Ok(Line::Event {
            gateway: link.gateway,
            seq: link.seq,
            prev_hash: link.prev_hash,
            hash: link.hash,
            matches: true,
        });
    }
    let at = || format!("{}:{number}", file.display());
    let value: Value = serde_json::from_str(line)
        .map_err(|err| CliError::Usage(format!("{}: not JSON: {err}", at())))?;
    if let Some(checkpoint) = value.get("checkpoint") {
        let checkpoint = serde_json::from_value(checkpoint.clone())
            .map_err(|err| CliError::Usage(format!("{}: not a checkpoint: {err}", at())))?;
        return Ok(Line::Checkpoint(checkpoint));
    }
    let event: AuditEvent = serde_json::from_value(value)
        .map_err(|err| CliError::Usage(format!("{}: not an audit event: {err}", at())))?;
    let matches = event_hash(&event) == event.hash;
    Ok(Line::Event {
        gateway: event.event.gateway,
        seq: event.seq,
        prev_hash: event.prev_hash,
        hash: event.hash,
        matches,
    })
}

/// Parses (and hashes) the chunk's lines on every core, in file order.
fn parse_chunk(chunk: &[Pending<'_>]) -> Vec<anyhow::Result<Line>> {
    let parse_all = |part: &[Pending<'_>]| -> Vec<anyhow::Result<Line>> {
        part.iter()
            .map(|(file, number, line)| parse(file, *number, line))
            .collect()
    };
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    if threads < 2 || chunk.len() < PARALLEL_FROM {
        return parse_all(chunk);
    }
    std::thread::scope(|scope| {
        let parts: Vec<_> = chunk
            .chunks(chunk.len().div_ceil(threads))
            .map(|part| scope.spawn(move || parse_all(part)))
            .collect();
        parts
            .into_iter()
            .flat_map(|part| {
                // Parsing cannot panic on any input; if it did, the file is refused.
                part.join()
                    .unwrap_or_else(|_| vec![Err(anyhow::anyhow!("a line could not be parsed"))])
            })
            .collect()
    })
}

/// Links the chunk's events and checks its checkpoints in file order; the first line that is
/// neither an event nor a checkpoint refuses the file.
fn walk_chunk<'k>(
    walks: &mut BTreeMap<String, ChainWalk<'k>>,
    chunk: &[Pending<'_>],
    keys: &'k CheckpointKeys,
) -> anyhow::Result<()> {
    for line in parse_chunk(chunk) {
        match line? {
            Line::Event {
                gateway,
                seq,
                prev_hash,
                hash,
                matches,
            } => {
                let walk = walks.entry(gateway).or_insert_with_key(|gateway| {
                    ChainWalk::new(
                        gateway,
                        seq.saturating_sub(1),
                        &prev_hash,
                        "the first event of the file",
                        keys,
                    )
                });
                walk.push_link(seq, &prev_hash, &hash, matches);
            }
            // A checkpoint before any event of its chain signs nothing in the file.
            Line::Checkpoint(checkpoint) => {
                if let Some(walk) = walks.get_mut(&checkpoint.gateway) {
                    walk.signed(checkpoint);
                }
            }
        }
    }
    Ok(())
}
