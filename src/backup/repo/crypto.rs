//! Names and encryption of the repository's blobs (issue 17, item 5).
//!
//! A blob is named by the sha256 of its plaintext, or, in an encrypted repository, by
//! HMAC-SHA256 under the repository's *naming key*: the same content gets the same name
//! in every run, so deduplication works, yet a name reveals nothing to whoever has only
//! the repository's files without that key. The naming key is not a decryption key.
//!
//! Each backup run draws a fresh 32-byte *run key*, encrypts the blobs and snapshot it
//! writes with it (ChaCha20-Poly1305, the blob's name as associated data, so a blob cannot
//! be swapped under another name), wraps it to the `BACKUP_RECIPIENTS` with age into
//! `keys/KEYID.age`, and forgets it when the run ends. So the host never holds a secret
//! that can decrypt a backup: reading one needs an age identity (`--identity FILE`).
//!
//! This module owns keys, names and the stored form of a blob; it does no file I/O beyond
//! reading an identity file.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::BlobId;

/// The flags byte that starts every stored blob.
const COMPRESSED: u8 = 1;
const ENCRYPTED: u8 = 2;
const KEY_ID_LEN: usize = 16;
const NONCE_LEN: usize = 12;

/// The id of a run key, as named in `keys/` and in each blob it encrypted.
pub type KeyId = [u8; KEY_ID_LEN];

/// How blobs are named: sha256, or HMAC-SHA256 under the naming key.
#[derive(Clone)]
pub enum Naming {
    Plain,
    Keyed(Hmac<Sha256>),
}

impl Naming {
    pub fn keyed(key: &[u8]) -> Naming {
        Naming::Keyed(
            <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length"),
        )
    }

    pub fn id(&self, data: &[u8]) -> BlobId {
        match self {
            Naming::Plain => Sha256::digest(data).into(),
            Naming::Keyed(mac) => {
                let mut mac = mac.clone();
                mac.update(data);
                mac.finalize().into_bytes().into()
            }
        }
    }
}

impl std::fmt::Debug for Naming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Naming::Plain => "Naming::Plain",
            Naming::Keyed(_) => "Naming::Keyed(<redacted>)",
        })
    }
}

/// A run key: what the blobs and snapshot of one backup run are encrypted with.
pub struct RunKey {
    pub id: KeyId,
    cipher: ChaCha20Poly1305,
}

impl RunKey {
    /// Draws a fresh key and wraps it to `recipients`: returns the key and the age file
    /// to store as `keys/KEYID.age`.
    pub fn generate(recipients: &[String]) -> Result<(RunKey, Vec<u8>)> {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        let mut id = [0u8; KEY_ID_LEN];
        rand::rngs::OsRng.fill_bytes(&mut id);
        let parsed = parse_recipients(recipients)?;
        let encryptor =
            age::Encryptor::with_recipients(parsed.iter().map(|r| r as &dyn age::Recipient))
                .map_err(|e| anyhow!("failed to wrap the backup key to BACKUP_RECIPIENTS: {e}"))?;
        let mut wrapped = Vec::new();
        let mut writer = encryptor
            .wrap_output(&mut wrapped)
            .context("failed to wrap the backup key")?;
        writer
            .write_all(&key)
            .and_then(|()| writer.finish().map(|_| ()))
            .context("failed to wrap the backup key")?;
        let run_key = RunKey::from_bytes(id, &key);
        key.fill(0);
        Ok((run_key, wrapped))
    }

    fn from_bytes(id: KeyId, key: &[u8]) -> RunKey {
        RunKey {
            id,
            cipher: ChaCha20Poly1305::new_from_slice(key).expect("a 32-byte key"),
        }
    }

    /// `nonce || ciphertext || tag` of `plain`, bound to `context`.
    pub fn seal(&self, context: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                (&nonce).into(),
                Payload {
                    msg: plain,
                    aad: context,
                },
            )
            .expect("encryption into memory cannot fail");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        if sealed.len() < NONCE_LEN + 16 {
            bail!("too short to be encrypted data");
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                nonce.into(),
                Payload {
                    msg: body,
                    aad: context,
                },
            )
            .map_err(|_| anyhow!("it does not decrypt (changed, damaged, or under another name)"))
    }
}

impl std::fmt::Debug for RunKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RunKey({}, <redacted>)", hex::encode(self.id))
    }
}

pub fn parse_recipients(recipients: &[String]) -> Result<Vec<age::x25519::Recipient>> {
    recipients
        .iter()
        .map(|r| {
            age::x25519::Recipient::from_str(r).map_err(|e| {
                anyhow!("BACKUP_RECIPIENTS: {r:?} is not an age public key ({e})\nuse keys like age1... as `age-keygen` prints them")
            })
        })
        .collect()
}

/// The age identities of an identity file (`age-keygen -o FILE`), and the run keys they
/// unwrapped so far.
pub struct Keyring {
    identities: Vec<Box<dyn age::Identity>>,
    source: String,
    keys: HashMap<KeyId, RunKey>,
}

impl Keyring {
    pub fn from_file(path: &Path) -> Result<Keyring> {
        let text = std::fs::read(path)
            .with_context(|| format!("failed to read identity file {}", path.display()))?;
        let identities = age::IdentityFile::from_buffer(&text[..])
            .and_then(|f| {
                f.into_identities()
                    .map_err(|e| std::io::Error::other(e.to_string()))
            })
            .with_context(|| {
                format!(
                    "{} is not an age identity file\nmake one with `age-keygen -o FILE`",
                    path.display()
                )
            })?;
        if identities.is_empty() {
            bail!("identity file {} holds no age identity", path.display());
        }
        Ok(Keyring {
            identities,
            source: path.display().to_string(),
            keys: HashMap::new(),
        })
    }

    /// The run key `id`, unwrapped from its age file (read by `load`) on first use.
    pub fn key(&mut self, id: &KeyId, load: impl FnOnce() -> Result<Vec<u8>>) -> Result<&RunKey> {
        if !self.keys.contains_key(id) {
            let wrapped = load()?;
            let decryptor = age::Decryptor::new(&wrapped[..])
                .map_err(|e| anyhow!("key {} is not an age file: {e}", hex::encode(id)))?;
            let mut reader = decryptor
                .decrypt(self.identities.iter().map(|i| i.as_ref()))
                .map_err(|e| {
                    anyhow!(
                        "the identities in {} cannot open backup key {}: {e}\npass the identity of one of the BACKUP_RECIPIENTS the backup was taken for",
                        self.source,
                        hex::encode(id)
                    )
                })?;
            let mut key = Vec::new();
            reader
                .read_to_end(&mut key)
                .with_context(|| format!("backup key {} is damaged", hex::encode(id)))?;
            if key.len() != 32 {
                bail!("backup key {} is damaged: wrong length", hex::encode(id));
            }
            self.keys.insert(*id, RunKey::from_bytes(*id, &key));
            key.fill(0);
        }
        Ok(&self.keys[id])
    }
}

/// A blob's stored form, as [`encode`] makes it.
pub enum Encoded {
    /// Stored as it is: the flags byte [`RAW`], then the plaintext (not copied here).
    Raw,
    Bytes(Vec<u8>),
}

/// The flags byte of a blob stored as it is.
pub const RAW: [u8; 1] = [0];

impl Encoded {
    /// The stored bytes of `raw` encoded so, as parts to write in order.
    pub fn parts<'a>(&'a self, raw: &'a [u8]) -> [&'a [u8]; 2] {
        match self {
            Encoded::Raw => [&RAW, raw],
            Encoded::Bytes(b) => [b, &[]],
        }
    }
}

/// The stored form of a blob: a flags byte, then (encrypted) the run key's id and the
/// sealed payload, or (plain) the payload; the payload is zstd when that is smaller.
pub fn encode_parts(id: &BlobId, raw: &[u8], try_compress: bool, key: Option<&RunKey>) -> Encoded {
    if key.is_none() && !try_compress {
        return Encoded::Raw;
    }
    let compressed = try_compress
        .then(|| zstd::bulk::compress(raw, 3).ok())
        .flatten()
        .filter(|c| c.len() < raw.len());
    if key.is_none() && compressed.is_none() {
        return Encoded::Raw;
    }
    Encoded::Bytes(encode_with(id, raw, compressed, key))
}

/// [`encode_parts`] as one buffer.
pub fn encode(id: &BlobId, raw: &[u8], try_compress: bool, key: Option<&RunKey>) -> Vec<u8> {
    let compressed = try_compress
        .then(|| zstd::bulk::compress(raw, 3).ok())
        .flatten()
        .filter(|c| c.len() < raw.len());
    encode_with(id, raw, compressed, key)
}

fn encode_with(
    id: &BlobId,
    raw: &[u8],
    compressed: Option<Vec<u8>>,
    key: Option<&RunKey>,
) -> Vec<u8> {
    let mut flags = 0;
    let payload: &[u8] = match &compressed {
        Some(c) => {
            flags |= COMPRESSED;
            c
        }
        None => raw,
    };
    match key {
        None => {
            let mut out = Vec::with_capacity(1 + payload.len());
            out.push(flags);
            out.extend_from_slice(payload);
            out
        }
        Some(key) => {
            let sealed = key.seal(id, payload);
            let mut out = Vec::with_capacity(1 + KEY_ID_LEN + sealed.len());
            out.push(flags | ENCRYPTED);
            out.extend_from_slice(&key.id);
            out.extend_from_slice(&sealed);
            out
        }
    }
}

/// The run key a stored blob needs, if it is encrypted.
pub fn key_of(stored: &[u8]) -> Option<KeyId> {
    match stored.first() {
        Some(flags) if flags & ENCRYPTED != 0 && stored.len() > KEY_ID_LEN => Some(
            stored[1..1 + KEY_ID_LEN]
                .try_into()
                .expect("length checked"),
        ),
        _ => None,
    }
}

/// The plaintext of a stored blob, checked against its name. `key` is the run key the
/// blob names (from [`key_of`]), for an encrypted blob.
pub fn decode(
    naming: &Naming,
    id: &BlobId,
    stored: &[u8],
    raw_len: usize,
    key: Option<&RunKey>,
) -> Result<Vec<u8>> {
    let (&flags, rest) = stored.split_first().context("it is empty")?;
    if flags & !(COMPRESSED | ENCRYPTED) != 0 {
        bail!("it has unknown flags {flags:#x}");
    }
    let opened;
    let payload = if flags & ENCRYPTED != 0 {
        let key = key.context("it is encrypted, and no key was given")?;
        opened = key.open(id, &rest[KEY_ID_LEN.min(rest.len())..])?;
        &opened[..]
    } else {
        rest
    };
    let raw = if flags & COMPRESSED != 0 {
        zstd::bulk::decompress(payload, raw_len)
            .map_err(|e| anyhow!("it does not decompress: {e}"))?
    } else {
        payload.to_vec()
    };
    if raw.len() != raw_len {
        bail!("it holds {} bytes; the index says {raw_len}", raw.len());
    }
    if naming.id(&raw) != *id {
        bail!("its content does not match its name");
    }
    Ok(raw)
}

/// Whether a blob is stored encrypted.
pub fn is_encrypted(stored: &[u8]) -> bool {
    stored.first().is_some_and(|f| f & ENCRYPTED != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_blobs_round_trip_and_a_changed_byte_is_caught() {
        let identity = age::x25519::Identity::generate();
        let recipients = vec![identity.to_public().to_string()];
        let (key, wrapped) = RunKey::generate(&recipients).unwrap();
        let naming = Naming::keyed(b"naming key");
        let raw = b"squat 5x5 ".repeat(100);
        let id = naming.id(&raw);
        for run_key in [None, Some(&key)] {
            let stored = encode(&id, &raw, true, run_key);
            assert_eq!(is_encrypted(&stored), run_key.is_some());
            assert_eq!(
                decode(&naming, &id, &stored, raw.len(), run_key).unwrap(),
                raw
            );
            let mut bad = stored.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            assert!(decode(&naming, &id, &bad, raw.len(), run_key).is_err());
        }
        let stored = encode(&id, &raw, true, Some(&key));
        assert!(!stored.windows(5).any(|w| w == b"squat"));
        // Another identity cannot unwrap the run key; the right one can.
        let dir = tempfile::tempdir().unwrap();
        let wrong = dir.path().join("wrong.txt");
        std::fs::write(
            &wrong,
            age::x25519::Identity::generate()
                .to_string()
                .expose_secret_str(),
        )
        .unwrap();
        let mut ring = Keyring::from_file(&wrong).unwrap();
        assert!(ring.key(&key.id, || Ok(wrapped.clone())).is_err());
        let right = dir.path().join("right.txt");
        std::fs::write(&right, identity.to_string().expose_secret_str()).unwrap();
        let mut ring = Keyring::from_file(&right).unwrap();
        let unwrapped = ring.key(&key.id, || Ok(wrapped.clone())).unwrap();
        assert_eq!(
            decode(&naming, &id, &stored, raw.len(), Some(unwrapped)).unwrap(),
            raw
        );
    }

    trait ExposeStr {
        fn expose_secret_str(&self) -> String;
    }
    impl ExposeStr for age::secrecy::SecretString {
        fn expose_secret_str(&self) -> String {
            use age::secrecy::ExposeSecret;
            self.expose_secret().to_string()
        }
    }
}
