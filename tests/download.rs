//! `defed data download` against a local HTTP server (no test touches the internet).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use defed::data::download::{Checksum, RemoteFile, Source, download, download_with};
use sha2::{Digest, Sha256};

/// Serves `files` (path -> body) on a loopback port until the test process ends; counts requests.
fn serve(files: HashMap<String, Vec<u8>>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let files = Arc::new(Mutex::new(files));
    let c = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(100) {
            let Ok(mut stream) = stream else { continue };
            c.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                    break;
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let body = files.lock().unwrap().get(&path).cloned();
            let response = match body {
                Some(b) => {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        b.len()
                    )
                    .into_bytes();
                    r.extend(b);
                    r
                }
                None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_vec(),
            };
            let _ = stream.write_all(&response);
        }
    });
    (format!("http://{addr}/data/"), count)
}

fn hex(b: &[u8]) -> &'static str {
    let s: String = Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect();
    Box::leak(s.into_boxed_str())
}

#[test]
fn downloads_verifies_and_caches() {
    let a = b"first file".to_vec();
    let b = b"second file, a bit longer".to_vec();
    let mut files = HashMap::new();
    files.insert("/data/a.gz".to_string(), a.clone());
    files.insert("/data/b.gz".to_string(), b.clone());
    files.insert("/data/bad.gz".to_string(), b"tampered".to_vec());
    let (base, count) = serve(files);
    let source = Source {
        name: "fixture",
        mirrors: &[],
        files: Box::leak(Box::new([
            RemoteFile {
                name: "a.gz",
                checksum: Checksum::Sha256(hex(&a)),
                max_bytes: 1 << 20,
                optional: false,
            },
            RemoteFile {
                name: "b.gz",
                checksum: Checksum::Sha256(hex(&b)),
                max_bytes: 1 << 20,
                optional: false,
            },
        ])),
    };
    let cache = tempfile::tempdir().unwrap();
    let dir = download(&source, cache.path(), Some(&base)).unwrap();
    assert_eq!(std::fs::read(dir.join("a.gz")).unwrap(), a);
    assert_eq!(std::fs::read(dir.join("b.gz")).unwrap(), b);
    let served = count.load(Ordering::SeqCst);
    assert_eq!(served, 2);
    // Cached: no new request.
    download(&source, cache.path(), Some(&base)).unwrap();
    assert_eq!(count.load(Ordering::SeqCst), served);

    // A file whose checksum does not match is refused and not kept.
    let bad = Source {
        name: "bad",
        mirrors: &[],
        files: Box::leak(Box::new([RemoteFile {
            name: "bad.gz",
            checksum: Checksum::Sha256(hex(b"expected")),
            max_bytes: 1 << 20,
            optional: false,
        }])),
    };
    let e = download(&bad, cache.path(), Some(&base))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("SHA-256 mismatch") && e.contains("bad.gz"),
        "{e}"
    );
    assert!(!cache.path().join("bad").join("bad.gz").exists());

    // A missing file: the error names the address.
    let missing = Source {
        name: "missing",
        mirrors: &[],
        files: Box::leak(Box::new([RemoteFile {
            name: "nope.gz",
            checksum: Checksum::Sha256(hex(b"x")),
            max_bytes: 1 << 20,
            optional: false,
        }])),
    };
    let e = download(&missing, cache.path(), Some(&base))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope.gz") && e.contains("404"), "{e}");
}

#[test]
fn cli_download_refuses_wrong_checksum() {
    let mut files = HashMap::new();
    for f in [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ] {
        files.insert(format!("/data/{f}"), b"not the real MNIST".to_vec());
    }
    let (base, _) = serve(files);
    let cache = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_defed"))
        .args([
            "data",
            "download",
            "mnist",
            "--mirror",
            &base,
            "--cache-dir",
        ])
        .arg(cache.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SHA-256 mismatch"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn svhn_downloads_with_md5_and_reads() {
    let plain = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/svhn/svhn-plain.mat"
    ))
    .unwrap();
    let md5 = |b: &[u8]| -> &'static str {
        use md5::Digest;
        let s: String = md5::Md5::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect();
        Box::leak(s.into_boxed_str())
    };
    let mut files = HashMap::new();
    files.insert("/data/train_32x32.mat".to_string(), plain.clone());
    files.insert("/data/test_32x32.mat".to_string(), plain.clone());
    files.insert("/data/extra_32x32.mat".to_string(), b"tampered".to_vec());
    let (base, count) = serve(files);
    let file = |name, sum, optional| RemoteFile {
        name,
        checksum: Checksum::Md5(sum),
        max_bytes: 1 << 20,
        optional,
    };
    let source = Source {
        name: "svhn",
        mirrors: &[],
        files: Box::leak(Box::new([
            file("train_32x32.mat", md5(&plain), false),
            file("test_32x32.mat", md5(&plain), false),
            file("extra_32x32.mat", md5(&plain), true),
        ])),
    };
    let cache = tempfile::tempdir().unwrap();
    // Without --extra the optional file is not fetched.
    download(&source, cache.path(), Some(&base)).unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 2);
    let set =
        defed::data::download::load_named("svhn", defed::data::download::Split::Test, cache.path())
            .unwrap();
    assert_eq!(set.labels, vec![0, 1, 9]);
    // With it, the tampered file is refused by its MD5 and not kept.
    let e = download_with(&source, cache.path(), Some(&base), true)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("MD5 mismatch") && e.contains("extra_32x32.mat"),
        "{e}"
    );
    assert!(!cache.path().join("svhn/extra_32x32.mat").exists());
    let leftovers: Vec<_> = std::fs::read_dir(cache.path().join("svhn"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".part"))
        .collect();
    assert!(leftovers.is_empty());
    // The extra split says how to get it.
    let e = defed::data::download::load_named(
        "svhn",
        defed::data::download::Split::Extra,
        cache.path(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("download svhn --extra"), "{e}");
}
