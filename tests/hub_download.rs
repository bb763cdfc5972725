//! Downloading a model from a hub: a local HTTP server speaks the parts of the Hugging Face API
//! hf-hub uses (repository info, ranged file requests with etag/commit headers) and serves the
//! tiny fixture. Checks the files land in the Hugging Face cache layout, progress is reported
//! per file, a second resolve is served from the cache, and cancelling stops between files.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use foley::engine::hub::{DownloadReport, resolve_model_reporting};
use foley::engine::pipeline::CancelFlag;
use foley::error::FoleyError;

const REPO: &str = "test-org/served-tiny";
const COMMIT: &str = "feedfacecafebeef0123456789abcdef01234567";
/// A gated repository in Stability's own layout (Stable Audio 3) and the token it accepts.
const GATED: &str = "test-org/gated-sa3";
const TOKEN: &str = "hf_test_token";

fn files_under(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(root, &path, out);
        } else {
            out.push(
                path.strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/"),
            );
        }
    }
}

/// One repository the server holds: its id, folder and the token it demands (a gated repo).
#[derive(Clone)]
struct Served {
    repo: &'static str,
    root: PathBuf,
    token: Option<&'static str>,
}

/// Serves each repository; counts file body requests. A gated repository answers 401 unless
/// the request carries its token.
fn serve(repos: Vec<Served>, downloads: Arc<AtomicUsize>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let repos = repos.clone();
            let downloads = downloads.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                let _ = reader.read_line(&mut request);
                // (start, end) of a `Range: bytes=start-end` header; end is absent for "start-".
                let mut range: Option<(usize, Option<usize>)> = None;
                let mut authorization = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    if let Some(value) = line
                        .strip_prefix("authorization: ")
                        .or_else(|| line.strip_prefix("Authorization: "))
                    {
                        authorization = Some(value.trim().to_string());
                    }
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                        let mut parts = value.trim().split('-');
                        let start = parts
                            .next()
                            .and_then(|start| start.parse().ok())
                            .unwrap_or(0);
                        let end = parts.next().and_then(|end| end.parse().ok());
                        range = Some((start, end));
                    }
                }
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
                let mut stream = stream;
                let Some(served) = repos.iter().find(|served| {
                    path.starts_with(&format!("/api/models/{}/", served.repo))
                        || path.starts_with(&format!("/{}/resolve/", served.repo))
                }) else {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    return;
                };
                if let Some(token) = served.token
                    && authorization.as_deref() != Some(&format!("Bearer {token}"))
                {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    return;
                }
                let root = &served.root;
                let info_path = format!("/api/models/{}/revision/main", served.repo);
                let file_prefix = format!("/{}/resolve/main/", served.repo);
                if path == info_path {
                    let mut files = Vec::new();
                    files_under(root, root, &mut files);
                    let siblings: Vec<_> = files
                        .iter()
                        .map(|f| serde_json::json!({ "rfilename": f }))
                        .collect();
                    let body =
                        serde_json::json!({ "siblings": siblings, "sha": COMMIT }).to_string();
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                } else if let Some(file) = path.strip_prefix(&file_prefix) {
                    let Ok(bytes) = std::fs::read(root.join(file)) else {
                        let _ = write!(
                            stream,
                            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        );
                        return;
                    };
                    let (start, end) = range.unwrap_or((0, None));
                    let start = start.min(bytes.len());
                    // hf-hub probes with bytes=0-0 for the size and headers, then asks for bytes=N-.
                    let probe = end == Some(0);
                    let body = if probe {
                        &bytes[..1.min(bytes.len())]
                    } else {
                        &bytes[start..]
                    };
                    if !probe {
                        downloads.fetch_add(1, Ordering::SeqCst);
                    }
                    let end = start + body.len().saturating_sub(1);
                    let _ = write!(
                        stream,
                        "HTTP/1.1 206 Partial Content\r\nETag: \"etag-{}\"\r\nX-Repo-Commit: {COMMIT}\r\nContent-Range: bytes {start}-{end}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        file.replace('/', "-"),
                        bytes.len(),
                        body.len()
                    );
                    let _ = stream.write_all(body);
                } else {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                }
            });
        }
    });
    address
}

#[derive(Default)]
struct Recorder {
    files: Vec<(String, usize)>,
    bytes: usize,
}

impl DownloadReport for Recorder {
    fn started(&mut self, file: &str, bytes: usize) {
        self.files.push((file.to_string(), bytes));
    }
    fn advanced(&mut self, bytes: usize) {
        self.bytes += bytes;
    }
}

#[test]
fn downloads_into_the_cache_with_progress_then_reuses_it() {
    let home = tempfile::tempdir().unwrap();
    let downloads = Arc::new(AtomicUsize::new(0));
    let endpoint = serve(
        vec![
            Served {
                repo: REPO,
                root: common::model_dir("audioldm2-tiny"),
                token: None,
            },
            Served {
                repo: GATED,
                root: common::model_dir("sa3-tiny-official"),
                token: Some(TOKEN),
            },
        ],
        downloads.clone(),
    );
    // SAFETY: this test binary runs this single test; nothing else reads the environment.
    unsafe {
        std::env::set_var("HF_HOME", home.path());
        std::env::set_var("HF_ENDPOINT", &endpoint);
        std::env::remove_var("HF_HUB_OFFLINE");
        std::env::remove_var("HF_TOKEN");
    }

    // Cancelled before it starts: nothing is fetched.
    let cancel = CancelFlag::new();
    cancel.cancel();
    let result = resolve_model_reporting(REPO, Some(&mut Recorder::default()), Some(&cancel));
    assert!(matches!(result, Err(FoleyError::Cancelled)), "{result:?}");
    assert_eq!(downloads.load(Ordering::SeqCst), 0);

    let mut recorder = Recorder::default();
    let root =
        resolve_model_reporting(REPO, Some(&mut recorder), Some(&CancelFlag::new())).unwrap();
    assert!(
        root.starts_with(home.path().join("hub")),
        "{}",
        root.display()
    );
    assert!(
        root.join("unet/diffusion_pytorch_model.safetensors")
            .is_file()
    );
    let fetched = downloads.load(Ordering::SeqCst);
    assert!(fetched >= 10, "{fetched} files downloaded");
    // hf-hub announces each file twice (before and after its size probe): count distinct ones.
    let distinct: std::collections::BTreeMap<&str, usize> = recorder
        .files
        .iter()
        .map(|(file, bytes)| (file.as_str(), *bytes))
        .collect();
    assert_eq!(distinct.len(), fetched, "every downloaded file is reported");
    let total: usize = distinct.values().sum();
    assert_eq!(recorder.bytes, total, "progress adds up to the file sizes");

    // The pipeline loads from the cache and matches diffusers.
    let pipeline = foley::engine::pipeline::Pipeline::load(
        &root,
        &candle_core::Device::Cpu,
        candle_core::DType::F32,
    )
    .unwrap();
    assert_eq!(pipeline.name(), "AudioLDM 2");

    // A second resolve finds everything cached and downloads nothing.
    let again = resolve_model_reporting(REPO, Some(&mut Recorder::default()), None).unwrap();
    assert_eq!(again, root);
    assert_eq!(downloads.load(Ordering::SeqCst), fetched);

    // A gated repository: refused without a token, with a message that says what to do…
    let refused = resolve_model_reporting(GATED, Some(&mut Recorder::default()), None);
    let Err(FoleyError::Download { reason, .. }) = &refused else {
        panic!("{refused:?}");
    };
    assert!(
        reason.contains("gated") && reason.contains("HF_TOKEN"),
        "{reason}"
    );
    // …and fetched in Stability's layout (config, weights, text-encoder subfolder) with it.
    // SAFETY: as above, the only test of this binary.
    unsafe { std::env::set_var("HF_TOKEN", TOKEN) };
    let root = resolve_model_reporting(GATED, Some(&mut Recorder::default()), None).unwrap();
    assert!(root.join("model_config.json").is_file());
    assert!(root.join("t5gemma-b-b-ul2/tokenizer.json").is_file());
    assert!(
        !root.join("LAYOUT.md").exists(),
        "only the files a pipeline needs"
    );
    let pipeline = foley::engine::pipeline::Pipeline::load(
        &root,
        &candle_core::Device::Cpu,
        candle_core::DType::F32,
    )
    .unwrap();
    assert_eq!(pipeline.name(), "Stable Audio 3");
    assert_eq!(pipeline.channels(), 2);
}
