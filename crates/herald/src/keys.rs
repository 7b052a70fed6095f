//! The master key that seals secrets: from HERALD_MASTER_KEY, or a key file made on first start.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use herald_core::{Sealer, Secret};

fn decode(text: &str) -> anyhow::Result<[u8; Sealer::KEY_LEN]> {
    let bytes = B64
        .decode(text.trim())
        .context("the master key must be base64")?;
    match <[u8; Sealer::KEY_LEN]>::try_from(bytes.as_slice()) {
        Ok(key) => Ok(key),
        Err(_) => bail!(
            "the master key must be {} bytes, base64-encoded",
            Sealer::KEY_LEN
        ),
    }
}

/// Loads the master key, creating the key file (mode 0600) when there is none.
pub fn load(from_env: Option<&Secret>, key_file: &Path) -> anyhow::Result<Sealer> {
    if let Some(key) = from_env {
        return Ok(Sealer::new(
            &decode(key.expose()).context("HERALD_MASTER_KEY")?,
        ));
    }
    if key_file.exists() {
        let text = std::fs::read_to_string(key_file)
            .with_context(|| format!("reading {}", key_file.display()))?;
        return Ok(Sealer::new(
            &decode(&text).with_context(|| key_file.display().to_string())?,
        ));
    }
    let key = Sealer::generate_key();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(key_file)
        .with_context(|| format!("creating {}", key_file.display()))?;
    file.write_all(B64.encode(key).as_bytes())?;
    file.sync_all()?;
    tracing::info!(path = %key_file.display(), "created the master key file; back it up: without it stored secrets cannot be opened");
    Ok(Sealer::new(&key))
}
