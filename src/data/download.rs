//! Downloading the standard data sets into a local cache, SHA-256 checked, and finding them
//! again (cache, Debian's `dataset-fashion-mnist` package, or the embedded digits).

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{ImageSet, embedded_mnist, read_cifar10, read_idx_pair};
use crate::error::{Error, Result};
use crate::util::write_atomic;

/// One file of a data set: its name and SHA-256.
#[derive(Debug, Clone, Copy)]
pub struct RemoteFile {
    /// File name, appended to a mirror's base address.
    pub name: &'static str,
    /// Lower-case hex SHA-256 of the file.
    pub sha256: &'static str,
}

/// A downloadable data set.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    /// Its name (`mnist`, `fashion-mnist`, `cifar10`).
    pub name: &'static str,
    /// Base addresses tried in order; each file is `base + name`.
    pub mirrors: &'static [&'static str],
    /// The files.
    pub files: &'static [RemoteFile],
}

/// MNIST (60,000 + 10,000 digits).
pub const MNIST: Source = Source {
    name: "mnist",
    mirrors: &[
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ],
    files: &[
        RemoteFile {
            name: "train-images-idx3-ubyte.gz",
            sha256: "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        },
        RemoteFile {
            name: "train-labels-idx1-ubyte.gz",
            sha256: "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        },
        RemoteFile {
            name: "t10k-images-idx3-ubyte.gz",
            sha256: "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        },
        RemoteFile {
            name: "t10k-labels-idx1-ubyte.gz",
            sha256: "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
    ],
};

/// Fashion-MNIST (60,000 + 10,000 clothing pictures).
pub const FASHION_MNIST: Source = Source {
    name: "fashion-mnist",
    mirrors: &["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
    files: &[
        RemoteFile {
            name: "train-images-idx3-ubyte.gz",
            sha256: "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        },
        RemoteFile {
            name: "train-labels-idx1-ubyte.gz",
            sha256: "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        },
        RemoteFile {
            name: "t10k-images-idx3-ubyte.gz",
            sha256: "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        },
        RemoteFile {
            name: "t10k-labels-idx1-ubyte.gz",
            sha256: "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
    ],
};

/// CIFAR-10, binary version (one tar.gz, unpacked after download).
pub const CIFAR10: Source = Source {
    name: "cifar10",
    mirrors: &["https://www.cs.toronto.edu/~kriz/"],
    files: &[RemoteFile {
        name: "cifar-10-binary.tar.gz",
        sha256: "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
    }],
};

/// The source of a data set name.
pub fn source(name: &str) -> Result<Source> {
    match name {
        "mnist" => Ok(MNIST),
        "fashion-mnist" | "fashion" => Ok(FASHION_MNIST),
        "cifar10" | "cifar-10" => Ok(CIFAR10),
        other => Err(Error::Invalid(format!(
            "unknown data set {other:?} (downloadable: mnist, fashion-mnist, cifar10)"
        ))),
    }
}

/// The cache folder: `$DEFED_CACHE_DIR`, else the user's cache directory + `defed`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DEFED_CACHE_DIR") {
        return PathBuf::from(d);
    }
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("defed")
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn fetch(url: &str, max_bytes: u64) -> Result<Vec<u8>> {
    let err = |msg: String| Error::Download {
        url: url.to_string(),
        msg,
    };
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(600)))
        .build()
        .new_agent();
    let response = agent.get(url).call().map_err(|e| err(e.to_string()))?;
    let mut body = Vec::new();
    response
        .into_body()
        .into_reader()
        .take(max_bytes)
        .read_to_end(&mut body)
        .map_err(|e| err(format!("reading the body: {e}")))?;
    Ok(body)
}

/// Downloads every file of `source` that is not already in `cache_dir/<name>/` with the right
/// checksum, from `mirror` if given, else from the source's mirrors in turn. Each file is
/// checked against its SHA-256 before it is moved into place, so the cache never holds a
/// partial or wrong file. Returns the data set's folder.
pub fn download(source: &Source, cache_dir: &Path, mirror: Option<&str>) -> Result<PathBuf> {
    let dir = cache_dir.join(source.name);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let mirrors: Vec<String> = match mirror {
        Some(m) => vec![if m.ends_with('/') {
            m.to_string()
        } else {
            format!("{m}/")
        }],
        None => source.mirrors.iter().map(|s| s.to_string()).collect(),
    };
    for file in source.files {
        let target = dir.join(file.name);
        if let Ok(existing) = std::fs::read(&target)
            && sha256_hex(&existing) == file.sha256
        {
            tracing::info!(file = %target.display(), "already downloaded");
            continue;
        }
        let mut last_error = None;
        for base in &mirrors {
            let url = format!("{base}{}", file.name);
            tracing::info!(%url, "downloading");
            match fetch(&url, 1 << 30) {
                Ok(bytes) => {
                    let got = sha256_hex(&bytes);
                    if got != file.sha256 {
                        last_error = Some(Error::Download {
                            url,
                            msg: format!(
                                "SHA-256 mismatch: expected {}, got {got} ({} bytes); the file was not kept",
                                file.sha256,
                                bytes.len()
                            ),
                        });
                        continue;
                    }
                    write_atomic(&target, &bytes)?;
                    last_error = None;
                    break;
                }
                Err(e) => last_error = Some(e),
            }
        }
        if let Some(e) = last_error {
            return Err(e);
        }
    }
    if source.name == CIFAR10.name {
        unpack_cifar(&dir)?;
    }
    Ok(dir)
}

fn unpack_cifar(dir: &Path) -> Result<()> {
    let archive = dir.join(CIFAR10.files[0].name);
    if dir
        .join("cifar-10-batches-bin")
        .join("test_batch.bin")
        .exists()
    {
        return Ok(());
    }
    let file = std::fs::File::open(&archive).map_err(|e| Error::io(&archive, e))?;
    tar::Archive::new(flate2::read::GzDecoder::new(file))
        .unpack(dir)
        .map_err(|e| Error::format(&archive, format!("cannot unpack: {e}")))
}

/// Which part of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The training split.
    Train,
    /// The test split.
    Test,
}

/// Loads a named data set split: `mnist-embedded` (the compiled-in 10,000 training digits,
/// train only), `mnist`, `fashion-mnist` (also found in Debian's `dataset-fashion-mnist`),
/// `cifar10`. The others must have been downloaded (`defed data download NAME`) into
/// `cache_dir`.
pub fn load_named(name: &str, split: Split, cache_dir: &Path) -> Result<ImageSet> {
    let (img, lab) = match split {
        Split::Train => ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        Split::Test => ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    };
    match name {
        "mnist-embedded" | "embedded" => match split {
            Split::Train => Ok(embedded_mnist()),
            Split::Test => Err(Error::Invalid(
                "the embedded MNIST digits are training digits only; carve a validation split from them, or download the test split with `defed data download mnist`".into(),
            )),
        },
        "mnist" | "fashion-mnist" | "fashion" => {
            let src = source(name)?;
            let mut dirs = vec![cache_dir.join(src.name)];
            if src.name == "fashion-mnist" {
                dirs.push(PathBuf::from("/usr/share/datasets/fashion-mnist"));
            }
            for d in &dirs {
                if d.join(img).exists() && d.join(lab).exists() {
                    return read_idx_pair(d.join(img), d.join(lab));
                }
            }
            Err(Error::Invalid(format!(
                "{name} is not downloaded (looked in {}); run `defed data download {}`",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                src.name
            )))
        }
        "cifar10" | "cifar-10" => {
            let d = cache_dir.join("cifar10").join("cifar-10-batches-bin");
            let files: Vec<PathBuf> = match split {
                Split::Train => (1..=5)
                    .map(|i| d.join(format!("data_batch_{i}.bin")))
                    .collect(),
                Split::Test => vec![d.join("test_batch.bin")],
            };
            if !files[0].exists() {
                return Err(Error::Invalid(format!(
                    "cifar10 is not downloaded (looked in {}); run `defed data download cifar10`",
                    d.display()
                )));
            }
            read_cifar10(&files)
        }
        other => Err(Error::Invalid(format!(
            "unknown data set {other:?} (known: mnist-embedded, mnist, fashion-mnist, cifar10, or a folder)"
        ))),
    }
}
