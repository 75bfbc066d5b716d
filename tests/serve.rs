//! `defed serve` end to end on loopback: every endpoint, every error case, auth, overload,
//! timeout, graceful shutdown, and a bounded load test.

use std::io::Cursor;
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::Duration;

use defed::attack::{Attack, AttackModel, Pgd};
use defed::data::embedded_mnist;
use defed::default_device;
use defed::defense::{Defender, thresholds_k_std};
use defed::model::embedded;
use defed::serve::client::{Client, LoadRequest, load_test};
use defed::serve::{ServeConfig, Server};

mod common;

const KEY: &str = "test-key-0123456789abcdef";

fn defender() -> Defender {
    static THRESHOLDS: OnceLock<Vec<f32>> = OnceLock::new();
    let device = default_device();
    let mut d = Defender::embedded(&device).unwrap();
    let t = THRESHOLDS.get_or_init(|| {
        let (_, val) = embedded_mnist().split(0.1, 0);
        let s = d
            .scores_batched(&val.images[..200 * 784], 100, &device)
            .unwrap();
        thresholds_k_std(&s, 2.0)
    });
    d.thresholds = Some(t.clone());
    d
}

struct Running {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<defed::Result<()>>>,
}

impl Running {
    fn client(&self, key: Option<&str>) -> Client {
        Client::new(&self.url, key.map(String::from), Duration::from_secs(60))
    }

    fn stop(&mut self) -> defed::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().expect("server thread"),
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn start(cfg: ServeConfig) -> Running {
    start_with(defender(), cfg)
}

fn start_with(d: Defender, mut cfg: ServeConfig) -> Running {
    cfg.addr = "127.0.0.1:0".parse().unwrap();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let server = Server::bind(d, default_device(), cfg).await?;
            addr_tx.send(server.local_addr()?).unwrap();
            server
                .run(async move {
                    let _ = stop_rx.await;
                })
                .await
        })
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("server started");
    Running {
        url: format!("http://{addr}"),
        stop: Some(stop_tx),
        thread: Some(thread),
    }
}

fn png_of(pixels: &[f32], w: u32, h: u32) -> Vec<u8> {
    let img = image::GrayImage::from_fn(w, h, |x, y| {
        image::Luma([(pixels[(y * w + x) as usize] * 255.0).round() as u8])
    });
    let mut v = Vec::new();
    image::DynamicImage::from(img)
        .write_to(&mut Cursor::new(&mut v), image::ImageFormat::Png)
        .unwrap();
    v
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn image_json(pixels: &[f32]) -> serde_json::Value {
    serde_json::json!({ "pixels": pixels, "shape": [1, 28, 28] })
}

fn multipart(parts: &[(&str, Vec<u8>)]) -> (String, Vec<u8>) {
    let boundary = "defedboundary7d1f";
    let mut body = Vec::new();
    for (i, (ct, bytes)) in parts.iter().enumerate() {
        body.extend(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{i}.png\"\r\nContent-Type: {ct}\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend(bytes);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[test]
fn endpoints_errors_and_auth() {
    let srv = start(ServeConfig {
        api_keys: vec![KEY.into()],
        body_limit: 64 << 10,
        max_images_per_request: 8,
        ..ServeConfig::default()
    });
    let c = srv.client(Some(KEY));
    let anon = srv.client(None);
    let wrong = srv.client(Some("wrong-key-0123456789abcdef"));
    let data = embedded_mnist().split(0.1, 0).1;

    // Probes are open.
    assert_eq!(anon.get("/healthz").unwrap().status, 200);
    assert_eq!(anon.get("/readyz").unwrap().status, 200);

    // Auth on everything else.
    for r in [
        anon.get("/v1/model").unwrap(),
        wrong.get("/v1/model").unwrap(),
        anon.get("/metrics").unwrap(),
        anon.post("/v1/classify", "image/png", &png_of(data.image(0), 28, 28))
            .unwrap(),
    ] {
        assert_eq!(r.status, 401, "{}", r.body);
        assert!(r.body.contains("API key"), "{}", r.body);
    }

    // Model description.
    let m = c.get("/v1/model").unwrap();
    assert_eq!(m.status, 200);
    let m = json(&m.body);
    assert_eq!(m["input_shape"], serde_json::json!([1, 28, 28]));
    assert_eq!(m["denoisers"].as_array().unwrap().len(), 3);
    assert!(m["denoisers"][0]["threshold"].as_f64().unwrap() > 0.0);

    // One image as PNG and as JSON: the same verdict, the digit's label.
    let mut labels_right = 0;
    for i in 0..5 {
        let png = c
            .post("/v1/classify", "image/png", &png_of(data.image(i), 28, 28))
            .unwrap();
        assert_eq!(png.status, 200, "{}", png.body);
        let png = json(&png.body);
        let js = c
            .post(
                "/v1/classify",
                "application/json",
                image_json(data.image(i)).to_string().as_bytes(),
            )
            .unwrap();
        assert_eq!(js.status, 200, "{}", js.body);
        let js = json(&js.body);
        for v in [&png, &js] {
            for key in [
                "label",
                "adversarial",
                "scores",
                "thresholds",
                "flagged_by",
                "latency_ms",
            ] {
                assert!(v.get(key).is_some(), "missing {key}: {v}");
            }
            assert_eq!(v["scores"].as_array().unwrap().len(), 3);
        }
        // PNG quantises to 8 bits, which the embedded digits already are.
        assert_eq!(png["label"], js["label"]);
        assert_eq!(png["scores"], js["scores"]);
        labels_right += usize::from(js["label"] == data.labels[i]);
    }
    assert!(labels_right >= 4, "{labels_right}/5 digits labelled right");

    // JPEG too (grayscale, as a camera gateway might send).
    let jpg = {
        let d = data.image(0);
        let img = image::GrayImage::from_fn(28, 28, |x, y| {
            image::Luma([(d[(y * 28 + x) as usize] * 255.0).round() as u8])
        });
        let mut v = Vec::new();
        image::DynamicImage::from(img)
            .write_to(&mut Cursor::new(&mut v), image::ImageFormat::Jpeg)
            .unwrap();
        v
    };
    let r = c.post("/v1/classify", "image/jpeg", &jpg).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(json(&r.body)["label"].is_u64(), "{}", r.body);

    // PGD-Linf 0.3 examples (white-box on the classifier) are flagged.
    let device = default_device();
    let (clf, _) = embedded::default_classifier(&device).unwrap();
    let model = AttackModel::new(&clf, &device);
    let adv = Pgd::linf(0.3)
        .perturb(&model, &data.images[..4 * 784], &data.labels[..4], None, 0)
        .unwrap();
    // The service's verdicts are the library's, image by image.
    let want = defender().defend(&adv, &device).unwrap();
    let mut flagged = 0;
    for (a, w) in adv.chunks(784).zip(&want) {
        let r = json(
            &c.post(
                "/v1/classify",
                "application/json",
                image_json(a).to_string().as_bytes(),
            )
            .unwrap()
            .body,
        );
        assert_eq!(r["label"], w.label, "{r}");
        assert_eq!(r["adversarial"], w.adversarial, "{r}");
        assert_eq!(r["classifier_label"], w.classifier_label, "{r}");
        let scores: Vec<f32> = serde_json::from_value(r["scores"].clone()).unwrap();
        assert_eq!(scores, w.scores, "{r}");
        assert_eq!(
            r["flagged_by"].as_array().unwrap().len(),
            w.flagged_by.len(),
            "{r}"
        );
        flagged += usize::from(w.adversarial);
    }
    assert!(
        flagged >= 1,
        "no PGD example flagged: the flagged path is untested"
    );
    let noise = &adv[..784];

    // Batches: JSON (both forms) and multipart.
    let batch = serde_json::json!({ "images": [image_json(data.image(0)), image_json(data.image(1)), image_json(noise)] });
    let r = c
        .post(
            "/v1/classify/batch",
            "application/json",
            batch.to_string().as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let r = json(&r.body);
    let results = r["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["label"], data.labels[0]);
    let list = serde_json::json!([image_json(data.image(0))]);
    assert_eq!(
        c.post(
            "/v1/classify/batch",
            "application/json",
            list.to_string().as_bytes()
        )
        .unwrap()
        .status,
        200
    );
    let (ct, body) = multipart(&[
        ("image/png", png_of(data.image(0), 28, 28)),
        ("image/png", png_of(data.image(1), 28, 28)),
    ]);
    let r = c.post("/v1/classify/batch", &ct, &body).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json(&r.body)["results"].as_array().unwrap().len(), 2);
    assert_eq!(
        json(&r.body)["results"][0]["label"],
        results[0]["label"],
        "multipart and JSON agree"
    );

    // Client errors: each a 400/413/415 with a message that says what is wrong.
    let rgb = {
        let mut v = Vec::new();
        image::DynamicImage::from(image::RgbImage::new(28, 28))
            .write_to(&mut Cursor::new(&mut v), image::ImageFormat::Png)
            .unwrap();
        v
    };
    let small = png_of(&[0.0; 16 * 16], 16, 16);
    let mut truncated = png_of(data.image(0), 28, 28);
    truncated.truncate(60);
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("/v1/classify", "image/png", rgb, 400, "colour channel"),
        ("/v1/classify", "image/png", small, 400, "16 wide"),
        ("/v1/classify", "image/png", truncated, 400, "decode"),
        (
            "/v1/classify",
            "image/png",
            b"garbage".to_vec(),
            400,
            "PNG or JPEG",
        ),
        (
            "/v1/classify",
            "application/json",
            br#"{"pixels": [0.5], "shape": [1, 1, 1]}"#.to_vec(),
            400,
            "does not match",
        ),
        (
            "/v1/classify",
            "application/json",
            serde_json::json!({"pixels": vec![0.5; 700], "shape": [1, 28, 28]})
                .to_string()
                .into_bytes(),
            400,
            "700 pixel values",
        ),
        (
            "/v1/classify",
            "application/json",
            serde_json::json!({"pixels": vec![1.5; 784], "shape": [1, 28, 28]})
                .to_string()
                .into_bytes(),
            400,
            "1.5",
        ),
        (
            "/v1/classify",
            "application/json",
            format!(
                r#"{{"pixels": [NaN{}], "shape": [1, 28, 28]}}"#,
                ", 0".repeat(783)
            )
            .into_bytes(),
            400,
            "bad JSON",
        ),
        (
            "/v1/classify",
            "text/plain",
            b"hello".to_vec(),
            415,
            "not accepted",
        ),
        (
            "/v1/classify",
            "application/json",
            vec![b' '; 70 << 10],
            413,
            "limit",
        ),
        (
            "/v1/classify/batch",
            "application/json",
            serde_json::json!({ "images": vec![image_json(data.image(0)); 9] })
                .to_string()
                .into_bytes(),
            400,
            "the limit is 8",
        ),
        (
            "/v1/classify/batch",
            "application/json",
            br#"{"images": []}"#.to_vec(),
            400,
            "no images",
        ),
        (
            "/v1/classify/batch",
            "image/png",
            png_of(data.image(0), 28, 28),
            415,
            "batch",
        ),
    ];
    for (path, ct, body, status, needle) in cases {
        let r = c.post(path, ct, &body).unwrap();
        assert_eq!(r.status, status, "{path} {ct}: {}", r.body);
        let msg = json(&r.body)["error"].as_str().unwrap().to_string();
        assert!(
            msg.contains(needle),
            "{path} {ct}: {msg:?} lacks {needle:?}"
        );
    }
    // Over the image limit (small PNGs fit the body limit).
    let nine: Vec<(&str, Vec<u8>)> = (0..9)
        .map(|i| ("image/png", png_of(data.image(i), 28, 28)))
        .collect();
    let (ct, body) = multipart(&nine);
    let r = c.post("/v1/classify/batch", &ct, &body).unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("more than 8 images"), "{}", r.body);

    // The service still answers after every error, and the counters saw it all.
    let m = c.get("/metrics").unwrap();
    assert_eq!(m.status, 200);
    let count = |needle: &str| -> u64 {
        m.body
            .lines()
            .find(|l| l.starts_with(needle))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {needle} in {}", m.body))
    };
    assert_eq!(
        count("defed_requests_total{endpoint=\"model\",outcome=\"unauthorized\"}"),
        2
    );
    assert_eq!(
        count("defed_requests_total{endpoint=\"classify\",outcome=\"unauthorized\"}"),
        1
    );
    assert_eq!(
        count("defed_requests_total{endpoint=\"classify\",outcome=\"ok\"}"),
        15
    );
    assert_eq!(
        count("defed_requests_total{endpoint=\"classify\",outcome=\"bad_request\"}"),
        8
    );
    assert_eq!(
        count("defed_requests_total{endpoint=\"classify\",outcome=\"payload_too_large\"}"),
        1
    );
    assert!(count("defed_adversarial_total") >= 2);
    assert!(count("defed_request_duration_seconds_count") >= 15);
}

fn batch_body(n: usize) -> Vec<u8> {
    let data = embedded_mnist();
    let images: Vec<_> = (0..n).map(|i| image_json(data.image(i))).collect();
    serde_json::json!({ "images": images })
        .to_string()
        .into_bytes()
}

#[test]
fn full_queue_gives_503_and_slow_inference_504() {
    let mut srv = start(ServeConfig {
        queue_capacity: 1,
        max_batch: 1,
        batch_window: Duration::ZERO,
        ..ServeConfig::default()
    });
    let body = batch_body(64);
    let statuses: Vec<(u16, String)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..10)
            .map(|_| {
                let c = srv.client(None);
                let body = &body;
                s.spawn(move || {
                    let r = c
                        .post("/v1/classify/batch", "application/json", body)
                        .expect("answered");
                    (r.status, r.body)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let full = statuses.iter().filter(|(s, _)| *s == 503).count();
    let ok = statuses.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(full + ok, 10, "{statuses:?}");
    assert!(full >= 1 && ok >= 1, "{full} refused, {ok} served");
    assert!(statuses.iter().any(|(_, b)| b.contains("queue is full")));
    srv.stop().unwrap();

    let srv = start(ServeConfig {
        timeout: Duration::from_millis(1),
        ..ServeConfig::default()
    });
    let r = srv
        .client(None)
        .post("/v1/classify/batch", "application/json", &batch_body(128))
        .unwrap();
    assert_eq!(r.status, 504, "{}", r.body);
    assert!(r.body.contains("timeout"), "{}", r.body);
    // The service is still there.
    assert_eq!(srv.client(None).get("/healthz").unwrap().status, 200);
}

#[test]
fn shutdown_finishes_requests_in_flight() {
    let mut srv = start(ServeConfig::default());
    let c = srv.client(None);
    let body = batch_body(128);
    let inflight =
        std::thread::spawn(move || c.post("/v1/classify/batch", "application/json", &body));
    // Let the request reach the inference thread, then ask the server to stop.
    std::thread::sleep(Duration::from_millis(300));
    let url = srv.url.clone();
    srv.stop().unwrap();
    let r = inflight
        .join()
        .unwrap()
        .expect("in-flight request answered");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json(&r.body)["results"].as_array().unwrap().len(), 128);
    // Stopped: new connections are refused.
    assert!(
        Client::new(&url, None, Duration::from_secs(2))
            .get("/healthz")
            .is_err()
    );
}

#[test]
fn bounded_load_has_no_errors() {
    let srv = start(ServeConfig::default());
    let data = embedded_mnist();
    let requests: Vec<LoadRequest> = (0..16)
        .map(|i| LoadRequest {
            path: "/v1/classify".into(),
            content_type: "image/png".into(),
            body: png_of(data.image(i), 28, 28),
        })
        .collect();
    let report = load_test(&srv.client(None), &requests, 8, Duration::from_secs(3));
    eprintln!(
        "load: {} requests in {:.1} s, {:.1} req/s, p50 {:.1} ms, p99 {:.1} ms (8 clients)",
        report.requests, report.seconds, report.requests_per_second, report.p50_ms, report.p99_ms
    );
    assert!(report.requests > 0);
    assert_eq!(report.ok, report.requests, "{report:?}");
    assert_eq!(report.server_errors + report.overloaded, 0, "{report:?}");
    assert_eq!(report.failed_connections, 0, "{report:?}");
}

#[test]
fn cli_serve_client_and_sigterm() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("defender.safetensors");
    defender().save(&bundle).unwrap();
    let keys = dir.path().join("keys.txt");
    std::fs::write(&keys, "# gateway keys\n\n").unwrap();
    let bin = env!("CARGO_BIN_EXE_defed");
    // A key file without keys would silently open the service: refused.
    let out = Command::new(bin)
        .args(["serve", "--bundle"])
        .arg(&bundle)
        .arg("--api-key-file")
        .arg(&keys)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no API key"));

    std::fs::write(&keys, format!("{KEY}\n")).unwrap();
    let mut child = Command::new(bin)
        .args(["serve", "--addr", "127.0.0.1:0", "--bundle"])
        .arg(&bundle)
        .arg("--api-key-file")
        .arg(&keys)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("server output").unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let png = dir.path().join("digit.png");
    std::fs::write(&png, png_of(embedded_mnist().image(0), 28, 28)).unwrap();
    let out = Command::new(bin)
        .args(["client", "classify", "--url", &url])
        .arg(&png)
        .env("DEFED_API_KEY", KEY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(v["label"], embedded_mnist().labels[0]);
    let out = Command::new(bin)
        .args(["client", "model", "--url", &url])
        .output()
        .unwrap();
    assert!(!out.status.success(), "no key: refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "SIGTERM ends the service cleanly: {exit:?}");
}

#[test]
fn reject_policy_withholds_the_label_of_flagged_inputs() {
    let mut d = defender();
    d.policy = defed::defense::Policy::Reject;
    let device = default_device();
    let data = embedded_mnist().split(0.1, 0).1;
    let (clf, _) = embedded::default_classifier(&device).unwrap();
    let adv = Pgd::linf(0.3)
        .perturb(
            &AttackModel::new(&clf, &device),
            &data.images[..8 * 784],
            &data.labels[..8],
            None,
            0,
        )
        .unwrap();
    let want = d.defend(&adv, &device).unwrap();
    let srv = start_with(d, ServeConfig::default());
    let c = srv.client(None);
    assert_eq!(json(&c.get("/v1/model").unwrap().body)["policy"], "reject");
    let body = serde_json::json!({
        "images": adv.chunks(784).map(image_json).collect::<Vec<_>>()
    });
    let r = json(
        &c.post(
            "/v1/classify/batch",
            "application/json",
            body.to_string().as_bytes(),
        )
        .unwrap()
        .body,
    );
    let results = r["results"].as_array().unwrap();
    assert!(want.iter().any(|v| v.adversarial), "nothing flagged");
    for (got, w) in results.iter().zip(&want) {
        assert_eq!(got["rejected"], w.adversarial, "{got}");
        if w.adversarial {
            assert!(got["label"].is_null(), "{got}");
        } else {
            assert_eq!(got["label"], w.label, "{got}");
        }
    }
}

/// A raw loopback connection, for clients that misbehave.
fn raw(url: &str) -> std::net::TcpStream {
    let addr = url.trim_start_matches("http://");
    let s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Reads until the server closes the connection (or the read times out); returns what came.
fn read_to_close(s: &mut std::net::TcpStream) -> (String, bool) {
    use std::io::Read;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&out).into(), true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (String::from_utf8_lossy(&out).into(), true);
            }
            Err(_) => return (String::from_utf8_lossy(&out).into(), false),
        }
    }
}

fn metric(c: &Client, needle: &str) -> u64 {
    let m = c.get("/metrics").unwrap();
    m.body
        .lines()
        .find(|l| l.starts_with(needle))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {needle} in {}", m.body))
}

#[test]
fn slow_clients_are_cut_off_and_cannot_starve_others() {
    use std::io::Write;
    let srv = start(ServeConfig {
        header_timeout: Duration::from_millis(400),
        body_timeout: Duration::from_millis(400),
        max_connections: 4,
        ..ServeConfig::default()
    });
    let t0 = std::time::Instant::now();
    // Half a header on every connection the service allows, and more.
    let mut stalled: Vec<_> = (0..8)
        .map(|_| {
            let mut s = raw(&srv.url);
            s.write_all(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    // A real request still gets through, once the header timeout has freed the slots.
    let r = srv.client(None).get("/healthz").unwrap();
    assert_eq!(r.status, 200);
    for s in &mut stalled {
        let (_, closed) = read_to_close(s);
        assert!(closed, "a stalled connection was kept open");
    }
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());

    // A whole head but half a body: 408, and the connection closes.
    let mut s = raw(&srv.url);
    s.write_all(
        b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"pixels\": [",
    )
    .unwrap();
    let (answer, closed) = read_to_close(&mut s);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive"), "{answer}");
    assert!(closed);
    assert_eq!(
        metric(
            &srv.client(None),
            "defed_requests_total{endpoint=\"classify\",outcome=\"body_timeout\"}"
        ),
        1
    );
}

#[test]
fn idle_connections_are_closed() {
    use std::io::Write;
    let srv = start(ServeConfig {
        header_timeout: Duration::from_secs(30),
        timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(800),
        ..ServeConfig::default()
    });
    let mut s = raw(&srv.url);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let t0 = std::time::Instant::now();
    let (answer, closed) = read_to_close(&mut s);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed, "the kept-alive connection was never closed");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
}

#[test]
fn shutdown_drops_stalled_connections_at_the_deadline() {
    use std::io::Write;
    let mut srv = start(ServeConfig {
        header_timeout: Duration::from_secs(60),
        body_timeout: Duration::from_secs(60),
        shutdown_deadline: Duration::from_millis(500),
        ..ServeConfig::default()
    });
    let mut s = raw(&srv.url);
    s.write_all(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let (tx, rx) = std::sync::mpsc::channel();
    let stop = srv.stop.take().unwrap();
    let thread = srv.thread.take().unwrap();
    std::thread::spawn(move || {
        let _ = stop.send(());
        let _ = tx.send(thread.join());
    });
    let stopped = rx.recv_timeout(Duration::from_secs(20));
    assert!(
        stopped.is_ok(),
        "the service did not stop with a stalled client"
    );
    let (_, closed) = read_to_close(&mut s);
    assert!(closed);
}

#[test]
fn large_batches_are_split_fairly_and_answered_in_order() {
    let srv = start(ServeConfig {
        max_batch: 16,
        ..ServeConfig::default()
    });
    let d = defender();
    let data = embedded_mnist();
    let n = 100;
    let want = d
        .defend(&data.images[..n * 784], &default_device())
        .unwrap();
    let c = srv.client(None);
    // The big batch and single images at the same time.
    let (batch, singles) = std::thread::scope(|s| {
        let b = s.spawn(|| {
            c.post("/v1/classify/batch", "application/json", &batch_body(n))
                .unwrap()
        });
        let singles: Vec<_> = (0..4)
            .map(|i| {
                let c = srv.client(None);
                let data = &data;
                s.spawn(move || {
                    c.post(
                        "/v1/classify",
                        "application/json",
                        image_json(data.image(i)).to_string().as_bytes(),
                    )
                    .unwrap()
                })
            })
            .collect();
        (
            b.join().unwrap(),
            singles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>(),
        )
    });
    assert_eq!(batch.status, 200, "{}", batch.body);
    let results = json(&batch.body)["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), n);
    for (i, (r, w)) in results.iter().zip(&want).enumerate() {
        assert_eq!(r["adversarial"], w.adversarial, "image {i}");
        let scores: Vec<f64> = r["scores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        for (a, b) in scores.iter().zip(&w.scores) {
            assert!((a - *b as f64).abs() < 1e-4, "image {i}: {a} vs {b}");
        }
    }
    for (i, r) in singles.iter().enumerate() {
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(json(&r.body)["adversarial"], want[i].adversarial);
    }
}

#[test]
fn unknown_routes_answer_json_and_every_outcome_is_counted() {
    use std::io::Write;
    let srv = start(ServeConfig {
        api_keys: vec![KEY.into()],
        timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(120),
        ..ServeConfig::default()
    });
    let c = srv.client(Some(KEY));
    let r = c.get("/nope").unwrap();
    assert_eq!(r.status, 404);
    assert!(json(&r.body)["error"].as_str().unwrap().contains("/nope"));
    let r = c.get("/v1/classify").unwrap();
    assert_eq!(r.status, 405);
    assert!(json(&r.body)["error"].as_str().unwrap().contains("GET"));
    // The scheme is case-insensitive.
    let mut s = raw(&srv.url);
    s.write_all(
        format!("GET /v1/model HTTP/1.1\r\nHost: x\r\nAuthorization: bearer {KEY}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let (answer, _) = read_to_close(&mut s);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Refused keys are counted (and logged at most every 10 s).
    let anon = srv.client(None);
    for _ in 0..20 {
        assert_eq!(anon.get("/v1/model").unwrap().status, 401);
    }
    assert_eq!(metric(&c, "defed_auth_failures_total"), 20);
    assert_eq!(
        metric(
            &c,
            "defed_requests_total{endpoint=\"other\",outcome=\"not_found\"}"
        ),
        2
    );
    assert_eq!(anon.get("/healthz").unwrap().status, 200);
    assert_eq!(
        metric(
            &c,
            "defed_requests_total{endpoint=\"probe\",outcome=\"ok\"}"
        ),
        1
    );
    // A client that leaves before its answer is counted as abandoned.
    for _ in 0..3 {
        let mut s = raw(&srv.url);
        let body = batch_body(256);
        s.write_all(
            format!(
                "POST /v1/classify/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
        s.write_all(&body).unwrap();
        drop(s);
    }
    // Every one is counted once; those whose departure the server saw before answering as
    // abandoned (a request answered before the server noticed counts as ok).
    let t0 = std::time::Instant::now();
    loop {
        let count = |o: &str| {
            metric(
                &c,
                &format!("defed_requests_total{{endpoint=\"classify_batch\",outcome=\"{o}\"}}"),
            )
        };
        let (abandoned, ok) = (count("abandoned"), count("ok"));
        let others: u64 = ["bad_request", "timeout", "internal_error", "overloaded"]
            .iter()
            .map(|o| count(o))
            .sum();
        if abandoned + ok + others == 3 {
            assert_eq!(others, 0, "{abandoned} abandoned, {ok} ok");
            assert!(abandoned >= 1, "no departure seen: {ok} answered");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{abandoned} + {ok} + {others}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A 3-channel bundle (the authors' SVHN classifier and SVHN Defed, from `../shared`) served
/// over HTTP: an RGB PNG is classified, a grayscale one is refused naming both shapes.
#[test]
fn colour_bundle_serves_rgb_png() {
    let Some(shared) = common::shared() else {
        return;
    };
    let ck = shared.join("reference/checkpoints/pytorch");
    let device = default_device();
    let (clf, _) = defed::model::load_classifier(ck.join("svhn-classifier.pth"), &device).unwrap();
    let (net, meta) = defed::model::load_denoiser(
        ck.join("svhn-laplacian-alpha=1-noise=40.pth"),
        &device,
        &Default::default(),
    )
    .unwrap();
    let mut d = Defender::new(
        clf,
        vec![defed::defense::DefenderDenoiser::new(net, meta)],
        1.0,
    )
    .unwrap();
    let set = common::colour_digits(40, 9);
    let s = d.scores_batched(&set.images, 20, &device).unwrap();
    d.thresholds = Some(thresholds_k_std(&s, 2.0));
    let srv = start_with(d, ServeConfig::default());
    let rgb = image::RgbImage::from_fn(32, 32, |x, y| {
        let p = |c: usize| (set.image(0)[c * 1024 + (y * 32 + x) as usize] * 255.0).round() as u8;
        image::Rgb([p(0), p(1), p(2)])
    });
    let mut png = Vec::new();
    image::DynamicImage::from(rgb)
        .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let r = srv
        .client(None)
        .post("/v1/classify", "image/png", &png)
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json(&r.body)["scores"].as_array().unwrap().len(), 1);
    let gray = png_of(&vec![0.5; 32 * 32], 32, 32);
    let r = srv
        .client(None)
        .post("/v1/classify", "image/png", &gray)
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("RGB"), "{}", r.body);
}
