//! The data directory, created on first start: signing key pair, admin token, instance id.
//!
//! Secrets are written with mode 0600 through `create_new`, so a second gateway starting at the
//! same moment cannot overwrite the first one's key; it reads it instead.
//!
//! At every start the directory is tightened to 0700 and MeshGuard's files in it to 0600 (the
//! public key stays readable), whatever an older version, a restore or a hand-made directory left;
//! a directory or file owned by another user is refused rather than trusted.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};

use crate::config::Secret;
use crate::token::TokenKeys;

/// File names inside the data directory.
pub const SIGNING_KEY_FILE: &str = "signing-key.pem";
/// The public half, for operators and other verifiers.
pub const PUBLIC_KEY_FILE: &str = "signing-key.pub.pem";
/// The generated admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// The persisted gateway instance id, which names this gateway's audit chain.
pub const INSTANCE_ID_FILE: &str = "gateway.id";
/// The default SQLite database.
pub const DATABASE_FILE: &str = "meshguard.db";

/// What the gateway reads from its data directory at start.
#[derive(Debug)]
pub struct DataDir {
    /// The directory.
    pub path: PathBuf,
    /// Keys for agent tokens.
    pub keys: TokenKeys,
    /// The same private key, for signing audit checkpoints, and the public keys accepted.
    pub audit_keys: std::sync::Arc<crate::checkpoints::AuditKeys>,
    /// The admin token (from the config, or the generated file).
    pub admin_token: Secret,
    /// This gateway's instance id.
    pub instance_id: String,
}

/// A data directory that cannot be prepared.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The directory or a file in it belongs to another user: its content cannot be trusted, and
    /// tightening its mode would not keep that user out.
    #[error(
        "{path} is owned by uid {owner}, not by the user running the gateway (uid {ours}); chown it to that user or choose another --data-dir"
    )]
    NotOurs {
        /// The directory or file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The gateway's effective uid.
        ours: u32,
    },
    /// A file exists but its content is not what MeshGuard wrote.
    #[error("{path}: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl DataDir {
    /// Opens `path`, creating it and any missing file. `configured_admin` (from
    /// `MESHGUARD_ADMIN_TOKEN` or the config) takes the place of `admin.token`.
    pub fn open(path: &Path, configured_admin: Option<&Secret>) -> Result<DataDir, DataDirError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(io(path))?;
        tighten(path)?;
        let (keys, signing) = load_or_create_keys(path)?;
        let audit_keys = std::sync::Arc::new(crate::checkpoints::AuditKeys::load(signing, path));
        let admin_token = match configured_admin {
            Some(token) => token.clone(),
            None => Secret::new(read_or_create(&path.join(ADMIN_TOKEN_FILE), || {
                Ok(format!("mga_{}", random_hex(32)))
            })?),
        };
        let instance_id = read_or_create(&path.join(INSTANCE_ID_FILE), || {
            Ok(format!("gw_{}", random_hex(8)))
        })?;
        Ok(DataDir {
            path: path.to_path_buf(),
            keys,
            audit_keys,
            admin_token,
            instance_id,
        })
    }
}

/// The files MeshGuard keeps in the data directory, tightened at every start. Other files are
/// left alone: a data dir pointed at a directory holding more (by mistake, `--data-dir ~`) must
/// not have every file in it made private.
const PRIVATE_FILES: [&str; 7] = [
    SIGNING_KEY_FILE,
    ADMIN_TOKEN_FILE,
    INSTANCE_ID_FILE,
    DATABASE_FILE,
    "meshguard.db-wal",
    "meshguard.db-shm",
    "meshguard.db-journal",
];

/// Tightens the data directory to 0700 and MeshGuard's files in it to 0600 (the public key to
/// 0644), refusing any that another user owns. Symbolic links are neither followed nor changed.
/// Runs at start and again once the store is open, for SQLite's `-wal` and `-shm` files.
pub fn tighten(dir: &Path) -> Result<(), DataDirError> {
    let ours = rustix::process::geteuid().as_raw();
    let owned = |path: &Path, meta: &std::fs::Metadata| {
        if meta.uid() == ours {
            Ok(())
        } else {
            Err(DataDirError::NotOurs {
                path: path.to_path_buf(),
                owner: meta.uid(),
                ours,
            })
        }
    };
    let meta = std::fs::symlink_metadata(dir).map_err(io(dir))?;
    owned(dir, &meta)?;
    set_mode(dir, &meta, 0o700)?;
    let files = PRIVATE_FILES
        .iter()
        .map(|name| (*name, 0o600))
        .chain([(PUBLIC_KEY_FILE, 0o644)]);
    for (name, mode) in files {
        let path = dir.join(name);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&path)(e)),
        };
        if !meta.file_type().is_file() {
            continue;
        }
        owned(&path, &meta)?;
        set_mode(&path, &meta, mode)?;
    }
    Ok(())
}

fn set_mode(path: &Path, meta: &std::fs::Metadata, mode: u32) -> Result<(), DataDirError> {
    if meta.permissions().mode() & 0o777 == mode {
        return Ok(());
    }
    tracing::info!(path = %path.display(), from = format!("{:o}", meta.permissions().mode() & 0o777), to = format!("{mode:o}"), "permissions tightened");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io(path))
}

/// Creates an absent SQLite database file with mode 0600 before SQLite opens it: SQLite creates
/// files with the process umask, and gives its `-wal` and `-shm` files the database's mode.
pub fn create_private_file(path: &Path) -> Result<(), DataDirError> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io(path)(e)),
    }
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// Writes a new secret file with mode 0600, or reads the existing one. The value is made before
/// the file is created, so a failure never leaves an empty file behind.
fn read_or_create(
    path: &Path,
    make: impl FnOnce() -> Result<String, DataDirError>,
) -> Result<String, DataDirError> {
    if path.exists() {
        return read_existing(path);
    }
    let value = make()?;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut file) => {
            file.write_all(format!("{value}\n").as_bytes())
                .map_err(io(path))?;
            Ok(value)
        }
        // Another gateway created it between our check and our create: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_existing(path),
        Err(e) => Err(io(path)(e)),
    }
}

fn read_existing(path: &Path) -> Result<String, DataDirError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let value = text.trim().to_owned();
    if value.is_empty() {
        return Err(DataDirError::Corrupt {
            path: path.to_path_buf(),
            message: "file is empty; delete it to generate a new one".into(),
        });
    }
    Ok(value)
}

fn load_or_create_keys(dir: &Path) -> Result<(TokenKeys, SigningKey), DataDirError> {
    let private_path = dir.join(SIGNING_KEY_FILE);
    let corrupt = |message: String| DataDirError::Corrupt {
        path: private_path.clone(),
        message,
    };
    let generated = read_or_create(&private_path, || {
        let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        key.to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.trim_end().to_owned())
            .map_err(|e| corrupt(format!("cannot encode a new key: {e}")))
    })?;
    let key = SigningKey::from_pkcs8_pem(&generated)
        .map_err(|e| corrupt(format!("not an Ed25519 PKCS#8 key: {e}")))?;
    let private_pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| corrupt(e.to_string()))?;
    let public_pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| corrupt(e.to_string()))?;
    // The public half is derived from the private key every start, so the two never disagree.
    let public_path = dir.join(PUBLIC_KEY_FILE);
    std::fs::write(&public_path, &public_pem).map_err(io(&public_path))?;
    std::fs::set_permissions(&public_path, std::fs::Permissions::from_mode(0o644))
        .map_err(io(&public_path))?;
    let keys = TokenKeys::from_pem(private_pem.as_bytes(), public_pem.as_bytes())
        .map_err(|e| corrupt(e.to_string()))?;
    Ok((keys, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{AgentClaims, ISSUER};

    #[test]
    fn first_start_creates_secrets_with_mode_0600_and_second_start_reuses_them() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("home");
        let first = DataDir::open(&dir, None).unwrap();
        for file in [SIGNING_KEY_FILE, ADMIN_TOKEN_FILE, INSTANCE_ID_FILE] {
            let mode = std::fs::metadata(dir.join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        let pem = std::fs::read_to_string(dir.join(SIGNING_KEY_FILE)).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));

        let claims = AgentClaims {
            iss: ISSUER.into(),
            sub: "agent_1".into(),
            name: "dev".into(),
            jti: "tok_1".into(),
            iat: 0,
            exp: None,
        };
        let token = first.keys.sign(&claims).unwrap();

        let second = DataDir::open(&dir, None).unwrap();
        assert_eq!(first.admin_token, second.admin_token);
        assert_eq!(first.instance_id, second.instance_id);
        assert_eq!(*second.keys.verify(&token).unwrap(), claims);
    }

    #[test]
    fn a_configured_admin_token_replaces_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let token = Secret::new("configured-admin-token");
        let dir = DataDir::open(tmp.path(), Some(&token)).unwrap();
        assert_eq!(dir.admin_token, token);
        assert!(!tmp.path().join(ADMIN_TOKEN_FILE).exists());
    }

    #[test]
    fn a_loose_directory_and_its_files_are_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("home");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        for file in [DATABASE_FILE, "meshguard.db-wal", ADMIN_TOKEN_FILE] {
            std::fs::write(dir.join(file), "x\n").unwrap();
            std::fs::set_permissions(dir.join(file), std::fs::Permissions::from_mode(0o644))
                .unwrap();
        }
        std::fs::write(dir.join("notes.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(dir.join("notes.sh"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        DataDir::open(&dir, None).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode(&dir.join("notes.sh")),
            0o755,
            "not MeshGuard's: left alone"
        );
        assert_eq!(mode(&dir), 0o700);
        for file in [DATABASE_FILE, "meshguard.db-wal", ADMIN_TOKEN_FILE] {
            assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
        }
        assert_eq!(mode(&dir.join(PUBLIC_KEY_FILE)), 0o644);
    }

    #[test]
    fn a_directory_or_file_of_another_user_is_refused() {
        // Only root can give a file away; elsewhere there is nothing to set up.
        if rustix::process::geteuid().as_raw() != 0 {
            return;
        }
        let nobody = 65534;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("home");
        DataDir::open(&dir, None).unwrap();
        std::os::unix::fs::chown(dir.join(INSTANCE_ID_FILE), Some(nobody), None).unwrap();
        let err = DataDir::open(&dir, None).unwrap_err();
        assert!(matches!(err, DataDirError::NotOurs { owner, .. } if owner == nobody));
        assert!(
            err.to_string().contains("gateway.id is owned by uid 65534"),
            "{err}"
        );
        std::os::unix::fs::chown(dir.join(INSTANCE_ID_FILE), Some(0), None).unwrap();
        std::os::unix::fs::chown(&dir, Some(nobody), None).unwrap();
        let err = DataDir::open(&dir, None).unwrap_err();
        assert!(matches!(err, DataDirError::NotOurs { .. }), "{err}");
    }

    #[test]
    fn a_private_file_is_created_0600_and_an_existing_one_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join(DATABASE_FILE);
        create_private_file(&db).unwrap();
        assert_eq!(
            std::fs::metadata(&db).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::write(&db, "kept").unwrap();
        create_private_file(&db).unwrap();
        assert_eq!(std::fs::read_to_string(&db).unwrap(), "kept");
    }

    #[test]
    fn a_corrupt_key_is_reported_with_its_path() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(SIGNING_KEY_FILE), "garbage").unwrap();
        let err = DataDir::open(tmp.path(), None).unwrap_err();
        assert!(err.to_string().contains(SIGNING_KEY_FILE), "{err}");
    }
}
