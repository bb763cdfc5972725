//! `--model owner/name` against a local folder laid out like the Hugging Face cache
//! (`$HF_HOME/hub/models--owner--name/{refs,snapshots}`): offline mode, fallback when the hub
//! is unreachable, and clear errors naming the missing or broken file. No network is used.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Reference, model_dir, relative_l2_slices};
use foley::audio::wav::read_wav;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Puts the tiny AudioLDM 2 fixture into `hf_home` as the cached snapshot of `repo`.
fn cache_fixture(hf_home: &Path, repo: &str) -> PathBuf {
    let folder = hf_home
        .join("hub")
        .join(format!("models--{}", repo.replace('/', "--")));
    std::fs::create_dir_all(folder.join("refs")).unwrap();
    std::fs::write(folder.join("refs/main"), COMMIT).unwrap();
    let snapshot = folder.join("snapshots").join(COMMIT);
    common::copy_dir(&model_dir("audioldm2-tiny"), &snapshot);
    snapshot
}

fn foley(hf_home: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_foley"));
    command
        .args(args)
        .env("HF_HOME", hf_home)
        .env_remove("HF_HUB_OFFLINE")
        // A closed local port: any network attempt fails at once instead of leaving the machine.
        .env("HF_ENDPOINT", "http://127.0.0.1:9");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run foley")
}

fn generate(hf_home: &Path, env: &[(&str, &str)], model: &str, out: &Path) -> Output {
    let out = out.display().to_string();
    foley(
        hf_home,
        env,
        &[
            "generate",
            "--model",
            model,
            "--prompt",
            "A hammer hitting a wooden surface",
            "--seed",
            "42",
            "--steps",
            "4",
            "--guidance",
            "3.5",
            "--out",
            &out,
            "--quiet",
        ],
    )
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_reference_waveform(path: &Path) {
    let (samples, _) = read_wav(path).unwrap();
    let expected = Reference::load("audioldm2-tiny", "e2e").values("ddim.neg0.len0.waveform");
    let error = relative_l2_slices(&samples, &expected);
    assert!(error <= 1e-4, "cached model waveform off by {error:.3e}");
}

#[test]
fn offline_mode_uses_the_cache() {
    let home = tempfile::tempdir().unwrap();
    cache_fixture(home.path(), "test-org/tiny-audioldm2");
    let out = home.path().join("clip.wav");
    let output = generate(
        home.path(),
        &[("HF_HUB_OFFLINE", "1")],
        "test-org/tiny-audioldm2",
        &out,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_reference_waveform(&out);
}

#[test]
fn unreachable_hub_falls_back_to_the_cache() {
    let home = tempfile::tempdir().unwrap();
    cache_fixture(home.path(), "test-org/tiny-audioldm2");
    let out = home.path().join("clip.wav");
    let output = generate(home.path(), &[], "test-org/tiny-audioldm2", &out);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_reference_waveform(&out);
}

#[test]
fn uncached_models_fail_clearly_offline_and_online() {
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("clip.wav");
    let offline = generate(
        home.path(),
        &[("HF_HUB_OFFLINE", "1")],
        "test-org/absent",
        &out,
    );
    assert!(!offline.status.success());
    let message = stderr(&offline);
    assert!(
        message.contains("test-org/absent") && message.contains("HF_HUB_OFFLINE"),
        "{message}"
    );
    let online = generate(home.path(), &[], "test-org/absent", &out);
    assert!(!online.status.success());
    let message = stderr(&online);
    assert!(
        message.contains("not in the Hugging Face cache"),
        "{message}"
    );
    assert!(!message.contains("panicked") && !out.exists());
}

#[test]
fn broken_cached_files_are_named() {
    let home = tempfile::tempdir().unwrap();
    let snapshot = cache_fixture(home.path(), "test-org/tiny-audioldm2");
    let out = home.path().join("clip.wav");
    let offline = [("HF_HUB_OFFLINE", "1")];

    std::fs::remove_file(snapshot.join("vae/config.json")).unwrap();
    let output = generate(home.path(), &offline, "test-org/tiny-audioldm2", &out);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("vae/config.json"),
        "{}",
        stderr(&output)
    );
    std::fs::copy(
        model_dir("audioldm2-tiny").join("vae/config.json"),
        snapshot.join("vae/config.json"),
    )
    .unwrap();

    let weights = snapshot.join("vocoder/model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 3]).unwrap();
    let output = generate(home.path(), &offline, "test-org/tiny-audioldm2", &out);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("vocoder/model.safetensors") && message.contains("truncated"),
        "{message}"
    );
    assert!(!out.exists());
}

#[test]
fn models_lists_known_checkpoints_and_their_cache_state() {
    let home = tempfile::tempdir().unwrap();
    let snapshot = cache_fixture(home.path(), "cvssp/audioldm2");
    let output = foley(home.path(), &[], &["models", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let list: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let list = list.as_array().unwrap();
    assert!(list.len() >= 8);
    for repo in [
        "cvssp/audioldm2",
        "cvssp/audioldm-l-full",
        "ucsd-reach/musicldm",
    ] {
        assert!(
            list.iter().any(|entry| entry["repo"] == repo),
            "{repo} missing"
        );
    }
    let base = list
        .iter()
        .find(|entry| entry["repo"] == "cvssp/audioldm2")
        .unwrap();
    assert_eq!(base["cached"], snapshot.display().to_string());
    assert_eq!(base["license"], "cc-by-nc-sa-4.0");
    let music = list
        .iter()
        .find(|entry| entry["repo"] == "ucsd-reach/musicldm")
        .unwrap();
    assert!(music["cached"].is_null());
}

/// `refs/main` is data: a ref that climbs out of the cache does not load what it points at.
#[test]
fn a_ref_cannot_lead_out_of_the_cache() {
    let home = tempfile::tempdir().unwrap();
    // A complete model outside the cache, and a cached repo whose ref points at it.
    let outside = home.path().join("outside");
    common::copy_dir(&model_dir("audioldm2-tiny"), &outside.join("snap"));
    let folder = home.path().join("hub/models--test-org--escape");
    std::fs::create_dir_all(folder.join("refs")).unwrap();
    std::fs::create_dir_all(folder.join("snapshots")).unwrap();
    std::fs::write(folder.join("refs/main"), "../../../outside/snap").unwrap();
    let out = home.path().join("clip.wav");
    let output = generate(
        home.path(),
        &[("HF_HUB_OFFLINE", "1")],
        "test-org/escape",
        &out,
    );
    assert!(
        !output.status.success(),
        "loaded a model from outside the cache"
    );
    assert!(!stderr(&output).contains("panicked") && !out.exists());
}
