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
use meshguard_store::chain_walk::{ChainWalk, content_hashes_match};
use meshguard_store::{AuditCheckpoint, AuditEvent, CheckpointKeys, VerifyReport};
use serde_json::Value;

use crate::error::CliError;

/// Lines hashed together (on every core) before they are linked in order.
const CHUNK: usize = 8192;

/// One line of an export.
enum Line {
    Event(Box<AuditEvent>),
    Checkpoint(AuditCheckpoint),
}

/// Lines read but not yet walked: the events apart, to be hashed together.
#[derive(Default)]
struct Chunk {
    events: Vec<AuditEvent>,
    /// In file order: `None` for the next event, or a checkpoint.
    order: Vec<Option<AuditCheckpoint>>,
}

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
    let mut chunk = Chunk::default();
    for file in files {
        for (index, line) in open(file)?.lines().enumerate() {
            let number = index + 1;
            let line = line.with_context(|| format!("{}: line {number}", file.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            match parse(file, number, &line)? {
                Line::Event(event) => {
                    chunk.events.push(*event);
                    chunk.order.push(None);
                }
                Line::Checkpoint(checkpoint) => chunk.order.push(Some(checkpoint)),
            }
            if chunk.order.len() == CHUNK {
                walk_chunk(&mut walks, std::mem::take(&mut chunk), &accepted);
            }
        }
    }
    walk_chunk(&mut walks, chunk, &accepted);
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

fn parse(file: &Path, number: usize, line: &str) -> anyhow::Result<Line> {
    let at = || format!("{}:{number}", file.display());
    let value: Value = serde_json::from_str(line)
        .map_err(|err| CliError::Usage(format!("{}: not JSON: {err}", at())))?;
    if let Some(checkpoint) = value.get("checkpoint") {
        let checkpoint = serde_json::from_value(checkpoint.clone())
            .map_err(|err| CliError::Usage(format!("{}: not a checkpoint: {err}", at())))?;
        return Ok(Line::Checkpoint(checkpoint));
    }
    let event = serde_json::from_value(value)
        .map_err(|err| CliError::Usage(format!("{}: not an audit event: {err}", at())))?;
    Ok(Line::Event(Box::new(event)))
}

/// Hashes the chunk's events on every core, then links them and checks its checkpoints in file
/// order.
fn walk_chunk<'k>(
    walks: &mut BTreeMap<String, ChainWalk<'k>>,
    chunk: Chunk,
    keys: &'k CheckpointKeys,
) {
    let matches = content_hashes_match(&chunk.events);
    let mut events = chunk.events.into_iter().zip(matches);
    for item in chunk.order {
        match item {
            None => {
                let Some((event, matches)) = events.next() else {
                    break;
                };
                let gateway = event.event.gateway.clone();
                let walk = walks.entry(gateway).or_insert_with_key(|gateway| {
                    ChainWalk::new(
                        gateway,
                        event.seq.saturating_sub(1),
                        &event.prev_hash,
                        "the first event of the file",
                        keys,
                    )
                });
                walk.push(&event, matches);
            }
            // A checkpoint before any event of its chain signs nothing in the file.
            Some(checkpoint) => {
                if let Some(walk) = walks.get_mut(&checkpoint.gateway) {
                    walk.signed(checkpoint);
                }
            }
        }
    }
}
