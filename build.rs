//! Names the build by its sources: `FEDSIM_BUILD` = `<crate version>+src.<16 hex digits>`, a
//! hash of every file that can change what a run computes or draws (src/, assets/, Cargo.toml,
//! Cargo.lock, and the compiled-in default scenario). .gitattributes keeps line endings LF in
//! every checkout, so the hash does not depend on the platform; the toolchain is not part of it. `fedsim_version` alone is the same for every commit, so resumed and merged
//! sweeps could not tell two builds apart; run-info.json, sweep.json and `fedsim --version`
//! carry this name instead. It is a content hash, not a git commit, so a clean clone, a
//! tarball and a working tree with the same files name the same build.

use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    // The default scenario is compiled in (`include_str!` in src/scenario/mod.rs).
    let inputs = [
        "src",
        "assets",
        "Cargo.toml",
        "Cargo.lock",
        "scenarios/rq1-polling-load.toml",
    ];
    let mut files = Vec::new();
    for input in inputs {
        println!("cargo::rerun-if-changed={input}");
        collect(Path::new(input), &mut files);
    }
    files.sort();
    // FNV-1a over (path, length, bytes) of each file: identifies a build, not a security hash.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut add = |bytes: &[u8]| {
        for byte in bytes {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for file in &files {
        let bytes = fs::read(file).unwrap_or_default();
        // '/' separators whatever the host, so every platform names the same sources alike.
        let name = file.to_string_lossy().replace('\\', "/");
        add(name.as_bytes());
        add(&(bytes.len() as u64).to_le_bytes());
        add(&bytes);
    }
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    println!("cargo::rustc-env=FEDSIM_BUILD={version}+src.{hash:016x}");
}

/// Every regular file under `path` (or `path` itself).
fn collect(path: &Path, files: &mut Vec<PathBuf>) {
    let Ok(metadata) = fs::metadata(path) else {
        return;
    };
    if metadata.is_file() {
        files.push(path.to_owned());
    } else if metadata.is_dir()
        && let Ok(entries) = fs::read_dir(path)
    {
        for entry in entries.flatten() {
            collect(&entry.path(), files);
        }
    }
}
