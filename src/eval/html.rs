//! The HTML report: one self-contained `index.html` per report folder (inline SVG charts and
//! CSS; no scripts, no network) rendered from the folder's Markdown report and figure files,
//! so it can be rebuilt at any time without recomputing (`defed report DIR`).

use std::path::{Path, PathBuf};

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

use crate::error::{Error, Result};
use crate::util::write_atomic;

/// The HTML report's file name.
pub const INDEX: &str = "index.html";

/// Markdown reports a folder may hold, in order of preference.
const MARKDOWN: [&str; 3] = ["report.md", "adaptive.md", "merged.md"];

const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#fafafa;color:#1b1b1b;line-height:1.5}\
main{max-width:1500px;margin:0 auto;padding:1.5rem 2rem;background:#fff}\
h1{font-size:1.6rem;border-bottom:2px solid #ddd;padding-bottom:.3rem}h2{font-size:1.3rem;margin-top:2rem}\
table{border-collapse:collapse;margin:1rem 0;font-size:.85rem;display:block;overflow-x:auto}\
th,td{border:1px solid #d0d0d0;padding:.25rem .5rem;text-align:right;white-space:nowrap}\
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}tr:nth-child(even) td{background:#fafafa}\
code{background:#f3f3f3;padding:0 .2rem;border-radius:3px}\
.chart{display:block;margin:1rem 0;overflow-x:auto}.chart svg{max-width:100%;height:auto}\
section.sub{border-top:3px solid #ccc;margin-top:3rem}";

/// The Markdown report of a folder: the first of `report.md` / `adaptive.md` / `merged.md` it
/// holds.
fn markdown_file(dir: &Path) -> Option<PathBuf> {
    MARKDOWN.iter().map(|m| dir.join(m)).find(|p| p.is_file())
}

/// Renders `dir`'s report (and, as further sections, those of its sub-folders holding one,
/// such as the pipeline's `robust/`) as one HTML page.
pub fn render(dir: &Path) -> Result<String> {
    let md_path = markdown_file(dir).ok_or_else(|| {
        Error::Invalid(format!(
            "{} holds no report.md, adaptive.md or merged.md to render",
            dir.display()
        ))
    })?;
    let md = read_text(&md_path)?;
    let title = md
        .lines()
        .find_map(|l| l.strip_prefix("# "))
        .unwrap_or("defed report")
        .to_string();
    let mut body = section(dir, &md)?;
    let mut subs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && markdown_file(p).is_some())
        .collect();
    subs.sort();
    for sub in subs {
        if let Some(p) = markdown_file(&sub) {
            body += "<section class=\"sub\">\n";
            body += &section(&sub, &read_text(&p)?)?;
            body += "</section>\n";
        }
    }
    Ok(format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n{body}</main>\n</body>\n</html>\n",
        escape(&title)
    ))
}

/// Writes `dir/index.html` (see [`render`]) and returns its path.
pub fn write_report(dir: &Path) -> Result<PathBuf> {
    let html = render(dir)?;
    let path = dir.join(INDEX);
    write_atomic(&path, html.as_bytes())?;
    Ok(path)
}

/// Redraws the figures of `dir` and of its report sub-folders from their `figures.json`, then
/// writes `dir/index.html`; returns the page's path and how many figures were drawn.
pub fn rebuild(dir: &Path) -> Result<(PathBuf, usize)> {
    let mut drawn = crate::eval::charts::redraw(dir)?;
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let p = entry.map_err(|e| Error::io(dir, e))?.path();
        if p.is_dir() && markdown_file(&p).is_some() {
            drawn += crate::eval::charts::redraw(&p)?;
        }
    }
    Ok((write_report(dir)?, drawn))
}

fn read_text(path: &Path) -> Result<String> {
    String::from_utf8(crate::util::read_file(path)?)
        .map_err(|_| Error::format(path, "is not UTF-8 text"))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One folder's Markdown as HTML, each image `X.png` whose `X.svg` lies beside it replaced by
/// that SVG inline (other images keep their link).
fn section(dir: &Path, md: &str) -> Result<String> {
    let mut events = Vec::new();
    let mut in_image = false;
    for ev in Parser::new_ext(md, Options::ENABLE_TABLES) {
        if in_image {
            // The alt text of an inlined image goes with it.
            in_image = !matches!(ev, Event::End(TagEnd::Image));
            continue;
        }
        if let Event::Start(Tag::Image { dest_url, .. }) = &ev
            && let Some(p) = dest_url
                .strip_suffix(".png")
                .filter(|stem| !stem.contains("..") && !stem.contains(':'))
                .map(|stem| dir.join(format!("{stem}.svg")))
                .filter(|p| p.is_file())
        {
            let svg = read_text(&p)?;
            let start = svg
                .find("<svg")
                .ok_or_else(|| Error::format(&p, "holds no <svg> element"))?;
            events.push(Event::Html(
                format!(
                    "<span class=\"chart\" data-figure=\"{}\">{}</span>",
                    escape(dest_url),
                    &svg[start..]
                )
                .into(),
            ));
            in_image = true;
            continue;
        }
        events.push(ev);
    }
    let mut out = String::new();
    pulldown_cmark::html::push_html(&mut out, events.into_iter());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inlines_svg_and_renders_tables() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("report.md"),
            "# Title & co\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n![roc](roc.png)\n\n![other](missing.png)\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("roc.svg"),
            "<?xml version=\"1.0\"?><svg width=\"1\"><text>ROC</text></svg>",
        )
        .unwrap();
        let html = render(dir.path()).unwrap();
        assert!(html.contains("<title>Title &amp; co</title>"));
        assert!(html.contains("<table>"));
        assert!(html.contains("<svg width=\"1\"><text>ROC</text></svg>"));
        assert!(!html.contains("<?xml"));
        assert!(html.contains("src=\"missing.png\""));
        assert!(!html.contains("<script"));
    }

    #[test]
    fn folder_without_report_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = render(dir.path()).unwrap_err().to_string();
        assert!(e.contains("no report.md"), "{e}");
    }
}
