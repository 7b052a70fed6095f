//! The master keyring that seals secrets: from HERALD_MASTER_KEY, or a key file
//! made on first start; and `herald keys rotate`, which re-seals every secret
//! under a new key.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use herald_core::{Sealer, Secret};
use herald_store::Store;

type Key = [u8; Sealer::KEY_LEN];

fn decode(text: &str) -> anyhow::Result<Key> {
    let bytes = B64
        .decode(text.trim())
        .context("a master key must be base64")?;
    match Key::try_from(bytes.as_slice()) {
        Ok(key) => Ok(key),
        Err(_) => bail!(
            "a master key must be {} bytes, base64-encoded",
            Sealer::KEY_LEN
        ),
    }
}

/// Parses a keyring: keys separated by commas or new lines, the primary first.
fn parse_ring(text: &str) -> anyhow::Result<Vec<Key>> {
    let keys: Vec<Key> = text
        .split([',', '\n'])
        .filter(|k| !k.trim().is_empty())
        .map(decode)
        .collect::<anyhow::Result<_>>()?;
    if keys.is_empty() {
        bail!("the keyring holds no key");
    }
    Ok(keys)
}

fn sealer(ring: &[Key]) -> Sealer {
    Sealer::with_keys(&ring[0], &ring[1..])
}

/// Writes the keyring file atomically with mode 0600: a crash leaves the old file or the new one.
fn write_ring(path: &Path, ring: &[Key]) -> anyhow::Result<()> {
    let text: Vec<String> = ring.iter().map(|k| B64.encode(k)).collect();
    let tmp = path.with_extension("key.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(text.join("\n").as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Loads the keyring, creating the key file (mode 0600) when there is none.
pub fn load(from_env: Option<&Secret>, key_file: &Path) -> anyhow::Result<Sealer> {
    Ok(sealer(&load_ring(from_env, key_file)?))
}

/// Loads the keyring like [`load`], and derives from its primary key the key
/// that signs the console's sign-in forms: every node with the same master
/// key has the same, so a form served by one node may be posted to another.
pub fn load_with_form_key(
    from_env: Option<&Secret>,
    key_file: &Path,
) -> anyhow::Result<(Sealer, [u8; 32])> {
    let ring = load_ring(from_env, key_file)?;
    Ok((
        sealer(&ring),
        derive(&ring[0], "herald console sign-in form key"),
    ))
}

/// A key for one purpose, derived from a master key (HMAC-SHA256 as a PRF),
/// so that it reveals nothing of the master key and serves nothing else.
fn derive(master: &Key, purpose: &str) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(master).expect("HMAC takes any key length");
    mac.update(purpose.as_bytes());
    mac.finalize().into_bytes().into()
}

fn load_ring(from_env: Option<&Secret>, key_file: &Path) -> anyhow::Result<Vec<Key>> {
    if let Some(ring) = from_env {
        return parse_ring(ring.expose()).context("HERALD_MASTER_KEY");
    }
    if key_file.exists() {
        let text = std::fs::read_to_string(key_file)
            .with_context(|| format!("reading {}", key_file.display()))?;
        return parse_ring(&text).with_context(|| key_file.display().to_string());
    }
    let key = Sealer::generate_key();
    write_ring(key_file, &[key])?;
    tracing::info!(path = %key_file.display(), "created the master key file; back it up: without it stored secrets cannot be opened");
    Ok(vec![key])
}

/// A new key, base64, for an operator who keeps the keyring in HERALD_MASTER_KEY.
pub fn generate() -> String {
    B64.encode(Sealer::generate_key())
}

/// Re-seals every secret under a new primary key.
///
/// With a key file: the new key is added in front of the old ones, every
/// secret is re-sealed in one transaction, then the old keys are removed. A
/// crash at any point leaves a keyring that opens every stored secret.
/// With HERALD_MASTER_KEY: the operator puts the new key first
/// (`HERALD_MASTER_KEY=new,old`, from `herald keys generate`), rotation
/// re-seals under it, and the old key can then be dropped from the variable.
pub async fn rotate(
    store: &dyn Store,
    from_env: Option<&Secret>,
    key_file: &Path,
) -> anyhow::Result<String> {
    let (ring, file) = match from_env {
        Some(ring) => (
            parse_ring(ring.expose()).context("HERALD_MASTER_KEY")?,
            None,
        ),
        None => {
            let text = std::fs::read_to_string(key_file)
                .with_context(|| format!("reading {}", key_file.display()))?;
            let old = parse_ring(&text)?;
            let mut ring = vec![Sealer::generate_key()];
            ring.extend(old);
            write_ring(key_file, &ring)?;
            (ring, Some(key_file))
        }
    };
    let keys = sealer(&ring);
    let primary = keys.key_id().to_owned();
    let count = store
        .reseal_secrets(Box::new(move |sealed, context| {
            let secret = keys.open(sealed, context).map_err(|e| e.to_string())?;
            Ok(keys.seal(&secret, context))
        }))
        .await?;
    if let Some(path) = file {
        write_ring(path, &ring[..1])?;
    }
    Ok(format!("re-sealed {count} secrets under key {primary}"))
}
