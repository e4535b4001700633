//! Builds the guest kernel (`../guest`, a `no_std` crate for
//! `x86_64-unknown-none`) and hands its path to `include_bytes!`, so the
//! ordinary `cargo build` / `cargo test` is all a new machine needs.

use std::path::{Path, PathBuf};
use std::process::Command;

const GUEST_TARGET: &str = "x86_64-unknown-none";

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    let guest = root.join("guest");
    for p in ["guest/src", "guest/Cargo.toml", "guest/linker.ld", "guest/build.rs", "abi/src", "abi/Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }

    ensure_target_installed();

    // <target-dir>/<profile>/build/vmm-*/out -> <target-dir>/guest-kernel, shared by
    // every profile so `cargo test`, `clippy` and `run --release` build it once.
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let target_dir = out.ancestors().nth(4).map(|p| p.join("guest-kernel")).unwrap_or(out.join("guest"));

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&guest)
        .args(["build", "--release", "--target", GUEST_TARGET, "--target-dir"])
        .arg(&target_dir)
        // A fixed-address (non-PIE) executable: linux-loader does not relocate.
        .env("CARGO_ENCODED_RUSTFLAGS", "-Crelocation-model=static");
    for var in [
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_RUSTFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("failed to run cargo to build the guest");
    if !status.success() {
        panic!("building the guest kernel (guest/, target {GUEST_TARGET}) failed: {status}");
    }
    let image = target_dir.join(GUEST_TARGET).join("release").join("guest");
    assert!(image.exists(), "guest image missing at {}", image.display());
    println!("cargo:rustc-env=SHOOTDOWN_GUEST_IMAGE={}", image.display());
}

/// `rust-toolchain.toml` names the target, but rustup only installs listed
/// targets with a new toolchain; add it to an existing one here.
fn ensure_target_installed() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc).args(["--print", "sysroot"]).output().ok();
    let have = sysroot
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .map(|s| Path::new(&s).join("lib/rustlib").join(GUEST_TARGET).exists())
        .unwrap_or(false);
    if have {
        return;
    }
    let mut cmd = Command::new("rustup");
    cmd.args(["target", "add", GUEST_TARGET]);
    if let Ok(tc) = std::env::var("RUSTUP_TOOLCHAIN") {
        cmd.args(["--toolchain", &tc]);
    }
    match cmd.status() {
        Ok(s) if s.success() => {}
        other => panic!(
            "target {GUEST_TARGET} is not installed and `rustup target add {GUEST_TARGET}` failed ({other:?}); install it by hand"
        ),
    }
}
