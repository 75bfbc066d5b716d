//! Downloading the standard data sets into a local cache, SHA-256 checked, and finding them
//! again (cache, Debian's `dataset-fashion-mnist` package, or the embedded digits).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{ImageSet, embedded_mnist, read_cifar10, read_idx_pair, read_svhn};
use crate::error::{Error, Result};

/// The published checksum of a file, lower-case hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// SHA-256.
    Sha256(&'static str),
    /// MD5, where the data set's publisher gives nothing stronger (SVHN).
    Md5(&'static str),
}

impl Checksum {
    fn name(self) -> &'static str {
        match self {
            Checksum::Sha256(_) => "SHA-256",
            Checksum::Md5(_) => "MD5",
        }
    }

    fn hex(self) -> &'static str {
        match self {
            Checksum::Sha256(h) | Checksum::Md5(h) => h,
        }
    }
}

/// A running checksum over a download.
enum Hasher {
    Sha256(Sha256),
    Md5(md5::Md5),
}

impl Hasher {
    fn new(c: Checksum) -> Self {
        match c {
            Checksum::Sha256(_) => Hasher::Sha256(Sha256::new()),
            Checksum::Md5(_) => Hasher::Md5(md5::Md5::new()),
        }
    }

    fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(b),
            Hasher::Md5(h) => h.update(b),
        }
    }

    fn hex(self) -> String {
        let bytes: Vec<u8> = match self {
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Md5(h) => h.finalize().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// One file of a data set: its name and checksum.
#[derive(Debug, Clone, Copy)]
pub struct RemoteFile {
    /// File name, appended to a mirror's base address.
    pub name: &'static str,
    /// Its published checksum.
    pub checksum: Checksum,
    /// Largest size accepted, in bytes (a server sending more is cut off).
    pub max_bytes: u64,
    /// Downloaded only when asked for (SVHN's 1.3 GB `extra` split).
    pub optional: bool,
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
            checksum: Checksum::Sha256(
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            ),
            max_bytes: 1 << 30,
            optional: false,
        },
        RemoteFile {
            name: "train-labels-idx1-ubyte.gz",
            checksum: Checksum::Sha256(
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            ),
            max_bytes: 1 << 30,
            optional: false,
        },
        RemoteFile {
            name: "t10k-images-idx3-ubyte.gz",
            checksum: Checksum::Sha256(
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            ),
            max_bytes: 1 << 30,
            optional: false,
        },
        RemoteFile {
            name: "t10k-labels-idx1-ubyte.gz",
            checksum: Checksum::Sha256(
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            ),
            max_bytes: 1 << 30,
            optional: false,
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
            checksum: Checksum::Sha256(
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            ),
            max_bytes: 1 << 30,
            optional: false,
        },
        RemoteFile {
            name: "train-labels-idx1-ubyte.gz",
            checksum: Checksum::Sha256(
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            ),
            max_bytes: 1 << 30,
            optional: false,
        },
        RemoteFile {
            name: "t10k-images-idx3-ubyte.gz",
            checksum: Checksum::Sha256(
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            ),
            max_bytes: 1 << 30,
            optional: false,
        },
        RemoteFile {
            name: "t10k-labels-idx1-ubyte.gz",
            checksum: Checksum::Sha256(
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            ),
            max_bytes: 1 << 30,
            optional: false,
        },
    ],
};

/// CIFAR-10, binary version (one tar.gz, unpacked after download).
pub const CIFAR10: Source = Source {
    name: "cifar10",
    mirrors: &["https://www.cs.toronto.edu/~kriz/"],
    files: &[RemoteFile {
        name: "cifar-10-binary.tar.gz",
        checksum: Checksum::Sha256(
            "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
        ),
        max_bytes: 1 << 30,
        optional: false,
    }],
};

/// SVHN's cropped digits (format 2): 73,257 training, 26,032 test and 531,131 extra 32 x 32
/// RGB digits, MAT-files, with the MD5 sums of the data set's page.
pub const SVHN: Source = Source {
    name: "svhn",
    mirrors: &["http://ufldl.stanford.edu/housenumbers/"],
    files: &[
        RemoteFile {
            name: "train_32x32.mat",
            checksum: Checksum::Md5("e26dedcc434d2e4c54c9b2d4a06d8373"),
            max_bytes: 1 << 30,
            optional: false,
        },
        RemoteFile {
            name: "test_32x32.mat",
            checksum: Checksum::Md5("eb5a983be6a315427106f1b164d9cef3"),
            max_bytes: 1 << 30,
            optional: false,
        },
        RemoteFile {
            name: "extra_32x32.mat",
            checksum: Checksum::Md5("a93ce644f1a588dc4d68dda5feec44a7"),
            max_bytes: 4 << 30,
            optional: true,
        },
    ],
};

/// The source of a data set name.
pub fn source(name: &str) -> Result<Source> {
    match name {
        "mnist" => Ok(MNIST),
        "fashion-mnist" | "fashion" => Ok(FASHION_MNIST),
        "cifar10" | "cifar-10" => Ok(CIFAR10),
        "svhn" => Ok(SVHN),
        other => Err(Error::Invalid(format!(
            "unknown data set {other:?} (downloadable: mnist, fashion-mnist, cifar10, svhn)"
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

/// The checksum of a file on disk, streamed.
fn file_checksum(path: &Path, kind: Checksum) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Hasher::new(kind);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.hex());
        }
        h.update(&buf[..n]);
    }
}

/// Streams `url` into `tmp`, hashing as it goes; returns the checksum and the size.
fn fetch(url: &str, tmp: &Path, file: &RemoteFile) -> Result<(String, u64)> {
    let err = |msg: String| Error::Download {
        url: url.to_string(),
        msg,
    };
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(3600)))
        .build()
        .new_agent();
    let response = agent.get(url).call().map_err(|e| err(e.to_string()))?;
    let mut reader = response.into_body().into_reader().take(file.max_bytes + 1);
    let mut out = std::fs::File::create(tmp).map_err(|e| Error::io(tmp, e))?;
    let mut h = Hasher::new(file.checksum);
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| err(format!("reading the body: {e}")))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > file.max_bytes {
            return Err(err(format!(
                "more than the {} bytes expected of {}",
                file.max_bytes, file.name
            )));
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| Error::io(tmp, e))?;
    }
    out.sync_all().map_err(|e| Error::io(tmp, e))?;
    Ok((h.hex(), total))
}

/// Downloads every file of `source` that is not already in `cache_dir/<name>/` with the right
/// checksum (optional files only with `optional`), from `mirror` if given, else from the
/// source's mirrors in turn. Each file is streamed to a temporary file and checked against its
/// checksum before it is moved into place, so the cache never holds a partial or wrong file.
/// Returns the data set's folder.
pub fn download(source: &Source, cache_dir: &Path, mirror: Option<&str>) -> Result<PathBuf> {
    download_with(source, cache_dir, mirror, false)
}

/// [`download`], including the optional files when `optional` is set.
pub fn download_with(
    source: &Source,
    cache_dir: &Path,
    mirror: Option<&str>,
    optional: bool,
) -> Result<PathBuf> {
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
    for file in source.files.iter().filter(|f| optional || !f.optional) {
        let target = dir.join(file.name);
        if target.exists()
            && file_checksum(&target, file.checksum).ok().as_deref() == Some(file.checksum.hex())
        {
            tracing::info!(file = %target.display(), "already downloaded");
            continue;
        }
        let tmp = dir.join(format!(".{}.part-{}", file.name, std::process::id()));
        let mut last_error = None;
        for base in &mirrors {
            let url = format!("{base}{}", file.name);
            tracing::info!(%url, "downloading");
            match fetch(&url, &tmp, file) {
                Ok((got, size)) => {
                    if got != file.checksum.hex() {
                        last_error = Some(Error::Download {
                            url,
                            msg: format!(
                                "{} mismatch: expected {}, got {got} ({size} bytes); the file was not kept",
                                file.checksum.name(),
                                file.checksum.hex(),
                            ),
                        });
                        continue;
                    }
                    std::fs::rename(&tmp, &target).map_err(|e| Error::io(&target, e))?;
                    last_error = None;
                    break;
                }
                Err(e) => last_error = Some(e),
            }
        }
        let _ = std::fs::remove_file(&tmp);
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
    /// SVHN's extra training digits.
    Extra,
}

/// Loads a named data set split: `mnist-embedded` (the compiled-in 10,000 training digits,
/// train only), `mnist`, `fashion-mnist` (also found in Debian's `dataset-fashion-mnist`),
/// `cifar10`. The others must have been downloaded (`defed data download NAME`) into
/// `cache_dir`.
pub fn load_named(name: &str, split: Split, cache_dir: &Path) -> Result<ImageSet> {
    let (img, lab) = match split {
        Split::Test => ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
        _ => ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    };
    if split == Split::Extra && name != "svhn" {
        return Err(Error::Invalid(format!(
            "{name} has no extra split (only svhn:extra)"
        )));
    }
    match name {
        "mnist-embedded" | "embedded" => match split {
            Split::Train => Ok(embedded_mnist()),
            _ => Err(Error::Invalid(
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
                Split::Test => vec![d.join("test_batch.bin")],
                _ => (1..=5)
                    .map(|i| d.join(format!("data_batch_{i}.bin")))
                    .collect(),
            };
            if !files[0].exists() {
                return Err(Error::Invalid(format!(
                    "cifar10 is not downloaded (looked in {}); run `defed data download cifar10`",
                    d.display()
                )));
            }
            read_cifar10(&files)
        }
        "svhn" => {
            let d = cache_dir.join("svhn");
            let (file, how) = match split {
                Split::Train => ("train_32x32.mat", "`defed data download svhn`"),
                Split::Test => ("test_32x32.mat", "`defed data download svhn`"),
                Split::Extra => ("extra_32x32.mat", "`defed data download svhn --extra`"),
            };
            let p = d.join(file);
            if !p.exists() {
                return Err(Error::Invalid(format!(
                    "svhn is not downloaded ({} is missing); run {how}",
                    p.display()
                )));
            }
            read_svhn(&p)
        }
        other => Err(Error::Invalid(format!(
            "unknown data set {other:?} (known: mnist-embedded, mnist, fashion-mnist, cifar10, svhn, or a folder)"
        ))),
    }
}
