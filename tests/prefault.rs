//! The binary's prefault helper (`fedsim::prefault`) faults heap pages in on another core; it
//! must change nothing but speed: a run gives byte-identical result files with it on and off.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Runs the small benchmark for a few simulated hours with `FEDSIM_PREFAULT` set to `setting`.
fn run(out: &Path, setting: &str) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_fedsim"))
        .args([
            "run",
            "scenarios/bench-small.toml",
            "--set",
            "duration=3h",
            "--out",
        ])
        .arg(out)
        .env("FEDSIM_PREFAULT", setting)
        .output()
        .expect("fedsim runs");
    assert!(
        output.status.success(),
        "FEDSIM_PREFAULT={setting}: {output:?}"
    );
    serde_json::from_str(&std::fs::read_to_string(out.join("run-info.json")).unwrap()).unwrap()
}

/// The result files of a run directory (run-info.json and logs hold wall-clock measurements).
fn result_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .filter(|(name, _)| name != "run-info.json" && !name.ends_with(".log"))
        .collect();
    files.sort();
    files
}

/// Whether this kernel knows `MADV_POPULATE_WRITE` (an empty range is checked for the advice
/// only).
fn kernel_can_populate() -> bool {
    #[cfg(target_os = "linux")]
    {
        let page = vec![0u8; 8192];
        let aligned = (page.as_ptr() as usize + 4095) & !4095;
        // SAFETY: an empty range; nothing is read or written.
        unsafe { libc::madvise(aligned as *mut libc::c_void, 0, libc::MADV_POPULATE_WRITE) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

#[test]
fn results_are_identical_with_the_prefault_helper_on_and_off() {
    let base = std::env::temp_dir().join(format!("fedsim-prefault-{}", std::process::id()));
    let (on, off) = (base.join("on"), base.join("off"));
    let _ = std::fs::remove_dir_all(&base);
    let info_on = run(&on, "1");
    let info_off = run(&off, "0");
    // Off means off; on is on wherever the kernel can (Linux 5.14+): a mimalloc upgrade that
    // broke the arena's reservation would show here.
    assert_eq!(info_off["prefault"], Value::Bool(false), "{info_off}");
    assert_eq!(
        info_on["prefault"],
        Value::Bool(kernel_can_populate()),
        "{info_on}"
    );
    let (files_on, files_off) = (result_files(&on), result_files(&off));
    assert!(
        files_on.iter().any(|(name, _)| name == "summary.json"),
        "{files_on:?}"
    );
    let names = |files: &[(String, Vec<u8>)]| files.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&files_on), names(&files_off));
    for ((name, bytes_on), (_, bytes_off)) in files_on.iter().zip(&files_off) {
        assert!(
            bytes_on == bytes_off,
            "{name} differs with the prefault helper on and off \
             (reproduce: FEDSIM_PREFAULT=1 / =0 fedsim run scenarios/bench-small.toml --set duration=3h)"
        );
    }
    let _ = std::fs::remove_dir_all(&base);
}
