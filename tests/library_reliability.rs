//! The clip library against outside data, several writers and crashes
//! (research/reliability_bugs.md, bugs 3, 5, 9 and 10): crafted or copied sidecars must not let
//! Keep or Delete reach another clip or a file outside the folder, corrupt sample rates are
//! reported, two studios saving the same prompt and seed both keep their clip, and a save
//! killed at any point leaves a library that opens consistent and clean.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use foley::library::{ClipRecord, Library, QUARANTINE};
use serde_json::json;

fn record(prompt: &str, seed: u64) -> ClipRecord {
    ClipRecord {
        id: String::new(),
        prompt: prompt.into(),
        negative_prompt: None,
        seed,
        steps: 4,
        guidance: 3.5,
        scheduler: "ddim".into(),
        model: "tiny".into(),
        duration: 0.016,
        sample_rate: 16_000,
        channels: 1,
        timings: vec![],
        score: None,
        starred: false,
        rating: 0,
        tags: Vec::new(),
        mel_bins: None,
        created: 1,
        task: None,
        batch_job: None,
    }
}

/// A sidecar as a crafted or copied file would have it, with `id` and `sample_rate` chosen.
fn sidecar(id: &str, sample_rate: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id, "prompt": format!("crafted {id}"), "seed": 1, "steps": 2, "guidance": 3.5,
        "scheduler": "ddim", "model": "x", "duration": 0.016, "sample_rate": sample_rate,
        "created": 1, "mel_bins": 2,
    }))
    .unwrap()
}

/// Every file under `root` with its bytes.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap().flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                folders.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// Plants `<base>.wav`, `<base>.mel` and `<base>.json`, the files a crafted id would aim at.
fn plant_victim(base: &Path, wav: &[u8]) {
    std::fs::create_dir_all(base.parent().unwrap()).unwrap();
    for (extension, bytes) in [
        ("wav", wav),
        ("mel", b"my notes".as_slice()),
        ("json", b"{}"),
    ] {
        std::fs::write(base.with_extension(extension), bytes).unwrap();
    }
}

#[test]
fn crafted_sidecar_ids_cannot_reach_outside_their_own_file_names() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("library");
    let outside = root.path().join("outside");
    let mut library = Library::open(&dir).unwrap();
    let real = library
        .add(record("real clip", 1), &[0.5; 64], None)
        .unwrap();
    let wav = std::fs::read(library.wav_path(&real)).unwrap();

    let absolute = outside.join("abs");
    plant_victim(&root.path().join("victim"), &wav);
    plant_victim(&absolute, &wav);
    plant_victim(&dir.join("a").join("b"), &wav);
    let crafted = [
        ("up", "../victim".to_string()),
        ("absolute", absolute.display().to_string()),
        ("root", "/abs/path".to_string()),
        ("nested", "a/b".to_string()),
        ("empty", String::new()),
    ];
    for (stem, id) in &crafted {
        std::fs::write(dir.join(format!("{stem}.json")), sidecar(id, 16_000)).unwrap();
        std::fs::write(dir.join(format!("{stem}.wav")), &wav).unwrap();
        std::fs::write(dir.join(format!("{stem}.mel")), [0u8; 8]).unwrap();
    }
    // A crafted sidecar without a WAV of its own is listed nowhere, whatever its id says.
    std::fs::write(dir.join("lonely.json"), sidecar("../victim", 16_000)).unwrap();
    let victims: BTreeMap<_, _> = snapshot(root.path())
        .into_iter()
        .filter(|(path, _)| {
            path.parent() != Some(dir.as_path())
                || path
                    .file_stem()
                    .is_some_and(|stem| stem == real.id.as_str())
        })
        .collect();

    let mut library = Library::open(&dir).unwrap();
    let mut ids: Vec<&str> = library.records().iter().map(|r| r.id.as_str()).collect();
    ids.sort();
    assert_eq!(
        ids,
        ["absolute", "empty", "nested", "real-clip_s1", "root", "up"]
    );
    for (stem, _) in &crafted {
        assert!(
            library
                .problems
                .iter()
                .any(|p| p.contains(&format!("{stem}.json")) && p.contains("differs")),
            "{stem}: {:?}",
            library.problems
        );
    }
    assert!(library.problems.iter().any(|p| p.contains("lonely.json")));
    assert!(library.clip_path("../victim", "wav").is_err());
    assert!(library.clip_path("/abs/path", "json").is_err());

    // Keep and Delete by the ids the sidecars claim: nothing is listed under them.
    for (_, id) in &crafted {
        library.set_starred(id, true).unwrap();
        library.delete(id).unwrap();
    }
    // Keep by the listed ids rewrites only the clip's own sidecar, with the id corrected.
    for (stem, _) in &crafted {
        library.set_starred(stem, true).unwrap();
        let text = std::fs::read_to_string(dir.join(format!("{stem}.json"))).unwrap();
        let saved: ClipRecord = serde_json::from_str(&text).unwrap();
        assert_eq!((saved.id.as_str(), saved.starred), (*stem, true));
    }
    for (stem, _) in &crafted {
        library.delete(stem).unwrap();
        for extension in ["json", "wav", "mel"] {
            assert!(!dir.join(format!("{stem}.{extension}")).exists());
        }
    }
    let after = snapshot(root.path());
    for (path, bytes) in &victims {
        assert_eq!(
            after.get(path),
            Some(bytes),
            "{} was changed",
            path.display()
        );
    }
    assert_eq!(Library::open(&dir).unwrap().records(), &[real]);
}

#[test]
fn a_copied_sidecar_cannot_overwrite_or_delete_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let mut library = Library::open(dir.path()).unwrap();
    let original = library
        .add(record("rain", 1), &[0.25; 32], Some((&[1.0; 4], 2)))
        .unwrap();
    let copy = format!("{} (copy)", original.id);
    for extension in ["json", "wav"] {
        std::fs::copy(
            dir.path().join(format!("{}.{extension}", original.id)),
            dir.path().join(format!("{copy}.{extension}")),
        )
        .unwrap();
    }
    // A duplicate of the sidecar alone: its WAV would be the original's if ids came from content.
    std::fs::copy(
        dir.path().join(format!("{}.json", original.id)),
        dir.path().join("dup.json"),
    )
    .unwrap();
    let originals: BTreeMap<_, _> = snapshot(dir.path())
        .into_iter()
        .filter(|(path, _)| path.file_stem().is_some_and(|s| s == original.id.as_str()))
        .collect();
    assert_eq!(originals.len(), 3);

    let mut library = Library::open(dir.path()).unwrap();
    let listed: HashSet<&str> = library.records().iter().map(|r| r.id.as_str()).collect();
    assert_eq!(listed, HashSet::from([original.id.as_str(), copy.as_str()]));
    assert!(library.problems.iter().any(|p| p.contains("dup.json")));
    library.set_starred(&copy, true).unwrap();
    library.set_starred("dup", true).unwrap();
    library.delete(&copy).unwrap();
    library.delete("dup").unwrap();
    for (path, bytes) in &originals {
        assert_eq!(&std::fs::read(path).unwrap(), bytes, "{}", path.display());
    }
    assert!(
        dir.path().join("dup.json").exists(),
        "an unlisted sidecar is never deleted"
    );
    let reopened = Library::open(dir.path()).unwrap();
    assert_eq!(reopened.records(), std::slice::from_ref(&original));
    assert_eq!(reopened.load_clip(&original).unwrap().0, vec![0.25; 32]);
}

/// A mono float WAV header claiming `rate`, with `frames` zero samples.
fn wav_with_rate(rate: u32, frames: u32) -> Vec<u8> {
    let data = frames * 4;
    let mut bytes = b"RIFF".to_vec();
    bytes.extend((36 + data).to_le_bytes());
    bytes.extend(b"WAVEfmt ");
    bytes.extend(16u32.to_le_bytes());
    bytes.extend(3u16.to_le_bytes()); // IEEE float
    bytes.extend(1u16.to_le_bytes());
    bytes.extend(rate.to_le_bytes());
    bytes.extend(rate.wrapping_mul(4).to_le_bytes());
    bytes.extend(4u16.to_le_bytes());
    bytes.extend(32u16.to_le_bytes());
    bytes.extend(b"data");
    bytes.extend(data.to_le_bytes());
    bytes.extend(vec![0u8; data as usize]);
    bytes
}

#[test]
fn corrupt_sample_rates_are_reported_and_never_listed() {
    let dir = tempfile::tempdir().unwrap();
    let mut library = Library::open(dir.path()).unwrap();
    let good = library.add(record("good", 1), &[0.1; 16], None).unwrap();
    let cases: [(&str, u64, u32); 7] = [
        ("zero", 0, 16_000),
        ("huge", 4_294_967_295, 16_000),
        ("too-low", 999, 16_000),
        ("too-high", 384_001, 16_000),
        ("mismatch", 44_100, 16_000),
        ("header-zero", 16_000, 0),
        ("both-zero", 0, 0),
    ];
    for (stem, sidecar_rate, header_rate) in cases {
        std::fs::write(
            dir.path().join(format!("{stem}.json")),
            sidecar(stem, sidecar_rate),
        )
        .unwrap();
        std::fs::write(
            dir.path().join(format!("{stem}.wav")),
            wav_with_rate(header_rate, 8),
        )
        .unwrap();
    }
    // A sidecar_rate beyond u32 does not parse at all: reported as well.
    std::fs::write(
        dir.path().join("overflow.json"),
        sidecar("overflow", 1 << 40),
    )
    .unwrap();
    std::fs::write(dir.path().join("overflow.wav"), wav_with_rate(16_000, 8)).unwrap();

    let mut library = Library::open(dir.path()).unwrap();
    assert_eq!(library.records(), std::slice::from_ref(&good));
    for (stem, ..) in cases.iter().chain([&("overflow", 0, 0)]) {
        assert!(
            library
                .problems
                .iter()
                .any(|p| p.contains(&format!("{stem}.json"))),
            "{stem} not reported: {:?}",
            library.problems
        );
    }
    // The WAV header decides: a record whose rate disagrees is refused, never played wrong.
    let loaded = library.load(&good).unwrap();
    assert_eq!(loaded.sample_rate, 16_000);
    let mut wrong = good.clone();
    wrong.sample_rate = 48_000;
    assert!(library.load_clip(&wrong).is_err());
    // Replaced behind the library's back with a rate-0 WAV: load fails cleanly.
    std::fs::write(library.wav_path(&good), wav_with_rate(0, 8)).unwrap();
    assert!(library.load(&good).is_err());
    assert!(library.load_clip(&good).is_err());
    // A clip is never saved with a rate the rest of Foley cannot handle.
    let before = snapshot(dir.path());
    let mut bad = record("bad rate", 1);
    bad.sample_rate = 0;
    assert!(library.add(bad, &[0.0; 4], None).is_err());
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn two_libraries_saving_the_same_prompt_and_seed_keep_every_clip() {
    const THREADS: usize = 4;
    const CLIPS: usize = 25;
    let dir = tempfile::tempdir().unwrap();
    let start = std::sync::Barrier::new(THREADS);
    let saved: Vec<(ClipRecord, Vec<f32>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|thread| {
                let (dir, start) = (dir.path(), &start);
                std::thread::Builder::new()
                    .name(format!("studio-{thread}"))
                    .spawn_scoped(scope, move || {
                        // One Library per thread: separate studios sharing the folder.
                        let mut library = Library::open(dir).unwrap();
                        start.wait();
                        (0..CLIPS)
                            .map(|clip| {
                                // Long enough that writes overlap; tagged with who wrote it.
                                let mut samples = vec![0.0f32; 20_000];
                                samples[0] = thread as f32;
                                samples[1] = clip as f32;
                                let saved = library
                                    .add(record("same prompt", 7), &samples, None)
                                    .unwrap();
                                (saved, samples)
                            })
                            .collect::<Vec<_>>()
                    })
                    .unwrap()
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().unwrap())
            .collect()
    });
    let ids: HashSet<&str> = saved.iter().map(|(r, _)| r.id.as_str()).collect();
    assert_eq!(ids.len(), THREADS * CLIPS, "two saves got the same id");
    let library = Library::open(dir.path()).unwrap();
    assert!(library.problems.is_empty(), "{:?}", library.problems);
    assert_eq!(library.records().len(), THREADS * CLIPS);
    for (record, samples) in &saved {
        let (read, _) = library.load_clip(record).unwrap();
        assert_eq!(&read, samples, "{} was overwritten", record.id);
    }
    let hidden: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with('.'))
        .map(|entry| entry.file_name())
        .collect();
    assert!(hidden.is_empty(), "locks or temporaries left: {hidden:?}");
}

#[test]
fn refresh_notices_another_studios_changes() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Library::open(dir.path()).unwrap();
    let mut second = Library::open(dir.path()).unwrap();
    assert!(!second.refresh().unwrap());
    let clip = first.add(record("door slam", 3), &[0.0; 8], None).unwrap();
    assert!(second.refresh().unwrap());
    assert_eq!(second.records(), std::slice::from_ref(&clip));
    assert!(!second.refresh().unwrap());
    first.set_starred(&clip.id, true).unwrap();
    assert!(second.refresh().unwrap());
    assert!(second.records()[0].starred);

    // Deleted in one studio, starred in the other before it refreshed: no sidecar comes back
    // without its WAV.
    first.delete(&clip.id).unwrap();
    assert!(second.set_starred(&clip.id, false).is_err());
    assert!(second.records().is_empty());
    assert!(!dir.path().join(format!("{}.json", clip.id)).exists());
    second.refresh().unwrap();
    assert!(second.records().is_empty() && second.problems.is_empty());
}

fn set_age(path: &Path, age: Duration) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - age)
        .unwrap();
}

#[test]
fn crash_leftovers_are_cleaned_and_reported_and_clips_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut library = Library::open(dir.path()).unwrap();
    let clip = library
        .add(record("kept", 1), &[0.5; 16], Some((&[1.0; 4], 2)))
        .unwrap();
    let live = std::process::id();
    // Above Linux's largest pid_max, so never a live process.
    let dead = 4_000_000_000u32;
    let hour = Duration::from_secs(3600);
    let write = |name: &str, age: Option<Duration>| {
        let path = dir.path().join(name);
        std::fs::write(&path, b"x").unwrap();
        if let Some(age) = age {
            set_age(&path, age);
        }
    };
    write(&format!(".a.wav.{live}.partial"), Some(hour));
    write(&format!(".b.json.{live}.f00d.partial"), Some(hour));
    write(&format!(".c.mel.{live}.partial"), None);
    write("old-orphan.wav", Some(hour));
    write("old-orphan.mel", Some(hour));
    write("fresh-orphan.wav", None);
    write("sidecar-only.json", None);
    // Saving now in this process: its lock and WAV are left alone.
    std::fs::write(dir.path().join(".saving_s1.lock"), format!("{live}\n")).unwrap();
    write("saving_s1.wav", None);
    // Already in quarantine under the same name: numbered, not replaced.
    std::fs::create_dir_all(dir.path().join(QUARANTINE)).unwrap();
    std::fs::write(
        dir.path().join(QUARANTINE).join("old-orphan.wav"),
        b"earlier",
    )
    .unwrap();
    let linux = cfg!(target_os = "linux");
    if linux {
        write(&format!(".d.wav.{dead}.partial"), None);
        write(&format!(".e.wav.{dead}.9f8e7d.partial"), None);
        std::fs::write(dir.path().join(".crashed_s1.lock"), format!("{dead}\n")).unwrap();
        write("crashed_s1.wav", None);
        write("crashed_s1.mel", None);
    }
    let clip_files: BTreeMap<_, _> = snapshot(dir.path())
        .into_iter()
        .filter(|(path, _)| path.file_stem().is_some_and(|s| s == clip.id.as_str()))
        .collect();

    let reopened = Library::open(dir.path()).unwrap();
    assert_eq!(reopened.records(), std::slice::from_ref(&clip));
    let exists = |name: &str| dir.path().join(name).exists();
    let quarantined = |name: &str| dir.path().join(QUARANTINE).join(name).exists();
    assert!(!exists(&format!(".a.wav.{live}.partial")));
    assert!(!exists(&format!(".b.json.{live}.f00d.partial")));
    assert!(exists(&format!(".c.mel.{live}.partial")));
    assert!(quarantined("old-orphan-2.wav") && quarantined("old-orphan.mel"));
    assert_eq!(
        std::fs::read(dir.path().join(QUARANTINE).join("old-orphan.wav")).unwrap(),
        b"earlier"
    );
    assert!(exists("fresh-orphan.wav") && exists("sidecar-only.json"));
    assert!(exists(".saving_s1.lock") && exists("saving_s1.wav"));
    let mut expected = 4;
    if linux {
        assert!(!exists(&format!(".d.wav.{dead}.partial")));
        assert!(!exists(&format!(".e.wav.{dead}.9f8e7d.partial")));
        assert!(!exists(".crashed_s1.lock"));
        assert!(quarantined("crashed_s1.wav") && quarantined("crashed_s1.mel"));
        expected += 5;
    }
    assert_eq!(
        reopened.recovered.len(),
        expected,
        "{:?}",
        reopened.recovered
    );
    for line in &reopened.recovered {
        assert!(reopened.problems.contains(line));
    }
    for (path, bytes) in &clip_files {
        assert_eq!(&std::fs::read(path).unwrap(), bytes);
    }
    assert!(reopened.load_clip(&clip).unwrap().1.is_some());
    // A second open finds nothing more to do.
    assert!(Library::open(dir.path()).unwrap().recovered.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Crash consistency: a child process (this test binary, re-run on `crash_child`) saves a clip
// and is killed at each fsync, rename, unlink and open in turn (strace's fault injection); the
// library must then open with the clip either whole or absent and every leftover cleaned up.

const CHILD_DIR: &str = "FOLEY_LIBRARY_CRASH_CHILD_DIR";
const CHILD_LOOP: &str = "FOLEY_LIBRARY_CRASH_CHILD_LOOP";

fn crash_samples() -> Vec<f32> {
    (0..4000).map(|i| (i as f32 * 0.01).sin()).collect()
}

/// Not a test on its own: the child side of the crash tests, a no-op unless they start it.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let mut library = Library::open(Path::new(&dir)).unwrap();
    let mel = [0.5f32; 64];
    loop {
        library
            .add(record("crash test", 7), &crash_samples(), Some((&mel, 8)))
            .unwrap();
        if std::env::var_os(CHILD_LOOP).is_none() {
            break;
        }
    }
}

fn child(dir: &Path, repeat: bool) -> std::process::Command {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command
        .args(["crash_child", "--exact", "--test-threads=1", "--quiet"])
        .env(CHILD_DIR, dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if repeat {
        command.env(CHILD_LOOP, "1");
    }
    command
}

/// The library after a crash: every listed clip whole, nothing half-there, nothing left over.
fn assert_consistent(dir: &Path, when: &str) {
    let library = Library::open(dir).unwrap();
    assert_eq!(
        library.problems.len(),
        library.recovered.len(),
        "{when}: {:?}",
        library.problems
    );
    for record in library.records() {
        let (samples, mel) = library
            .load_clip(record)
            .unwrap_or_else(|error| panic!("{when}: {error}"));
        assert_eq!(samples, crash_samples(), "{when}");
        assert_eq!(mel.map(|(_, bins)| bins), Some(8), "{when}");
    }
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().unwrap().is_dir() {
            continue;
        }
        assert!(!name.starts_with('.'), "{when}: {name} left behind");
        if let Some(stem) = name.strip_suffix(".wav").or(name.strip_suffix(".mel")) {
            assert!(
                dir.join(format!("{stem}.json")).exists(),
                "{when}: orphan {name} left in the library"
            );
        }
    }
    assert!(
        Library::open(dir).unwrap().recovered.is_empty(),
        "{when}: cleanup is not done in one open"
    );
}

#[cfg(unix)]
fn killed(status: std::process::ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(9) || status.code() == Some(128 + 9)
}

#[cfg(unix)]
#[test]
fn a_save_killed_at_each_sync_point_leaves_a_consistent_library() {
    let strace_works = std::process::Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "true"])
        .status()
        .is_ok_and(|status| status.success());
    if !strace_works {
        eprintln!("strace is missing or not permitted: only the timed kills run");
        return;
    }
    let mut kills = 0;
    for syscalls in [
        "fsync,fdatasync",
        "rename,renameat,renameat2",
        "unlink,unlinkat",
        "link,linkat",
        "openat",
    ] {
        let mut finished = false;
        for n in 1..=200 {
            let dir = tempfile::tempdir().unwrap();
            let mut command = std::process::Command::new("strace");
            command
                .args(["-f", "-qq", "-o", "/dev/null", "-e"])
                .arg(format!("inject={syscalls}:signal=KILL:when={n}"))
                .arg(std::env::current_exe().unwrap())
                .args(child(dir.path(), false).get_args())
                .env(CHILD_DIR, dir.path())
                // cargo's search path makes the loader try hundreds of opens before main.
                .env_remove("LD_LIBRARY_PATH")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            let status = command.status().unwrap();
            let when = format!("killed at {syscalls} #{n}");
            if status.success() {
                // Past the last such call: the save ran to the end.
                assert_consistent(dir.path(), &when);
                assert_eq!(Library::open(dir.path()).unwrap().records().len(), 1);
                finished = true;
                break;
            }
            assert!(killed(status), "{when}: the child failed with {status}");
            kills += 1;
            assert_consistent(dir.path(), &when);
        }
        assert!(finished, "{syscalls}: the child never finished");
    }
    // Three file fsyncs, a directory fsync, three renames and the lock's removal at least.
    assert!(kills >= 8, "only {kills} crash points were reached");
}

#[cfg(unix)]
#[test]
fn a_studio_killed_while_saving_in_a_loop_leaves_a_consistent_library() {
    // Spread over the first save and the ones after it; strace-free, so it runs everywhere.
    for delay_ms in (0..24u64).map(|i| 1 + i * 7 % 60) {
        let dir = tempfile::tempdir().unwrap();
        let mut running = child(dir.path(), true).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        running.kill().unwrap();
        running.wait().unwrap();
        assert_consistent(dir.path(), &format!("killed after {delay_ms} ms"));
    }
}
