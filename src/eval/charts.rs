//! Charts for reports and papers, drawn with `plotters`: line charts (ROC curves, figures over
//! eps, training curves), annotated heat-maps and labelled grids of images.
//!
//! A [`Figure`] is plain data (serialisable, so `defed report` redraws it without recomputing)
//! rendered to SVG (text stays text, for the HTML report) and to PNG (text drawn with the
//! embedded DejaVu Sans, see `assets/fonts/LICENSE-DejaVu.txt`).

use std::path::Path;
use std::sync::Once;

use base64::Engine;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::util::write_atomic;

/// The font family every chart uses.
const FONT: &str = "sans-serif";
static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Series colours, in drawing order (a colour-blind-safe qualitative palette).
const PALETTE: [RGBColor; 10] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(213, 94, 0),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(120, 120, 120),
    RGBColor(0, 0, 0),
    RGBColor(240, 228, 66),
    RGBColor(140, 86, 75),
];

/// One named curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Legend entry (empty: none).
    pub name: String,
    /// `(x, y)` points in drawing order.
    pub points: Vec<(f64, f64)>,
    /// Dashed instead of solid.
    #[serde(default)]
    pub dashed: bool,
    /// A dot at every point.
    #[serde(default)]
    pub markers: bool,
    /// Palette index (default: the series' position).
    #[serde(default)]
    pub colour: Option<usize>,
}

impl Series {
    /// A solid curve without markers.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points,
            dashed: false,
            markers: false,
            colour: None,
        }
    }

    /// The same curve with a dot at every point.
    pub(crate) fn with_markers(mut self) -> Self {
        self.markers = true;
        self
    }

    /// The same curve dashed.
    pub fn dashed(mut self) -> Self {
        self.dashed = true;
        self
    }

    /// The same curve in palette colour `i`.
    pub fn colour(mut self, i: usize) -> Self {
        self.colour = Some(i);
        self
    }
}

/// Where a legend sits inside the plot.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Legend {
    /// The corner with the fewest data points (the default).
    #[default]
    Auto,
    /// Upper right.
    UpperRight,
    /// Upper left.
    UpperLeft,
    /// Lower right.
    LowerRight,
    /// Lower left.
    LowerLeft,
}

/// A chart of curves with axes, ticks, labels, a title and a legend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineChart {
    /// Title above the plot.
    pub title: String,
    /// Label of the horizontal axis.
    pub x_label: String,
    /// Label of the vertical axis.
    pub y_label: String,
    /// The curves.
    pub series: Vec<Series>,
    /// Logarithmic horizontal axis (points with x <= 0 are left out).
    #[serde(default)]
    pub log_x: bool,
    /// Horizontal range (default: the data's).
    #[serde(default)]
    pub x_range: Option<(f64, f64)>,
    /// Vertical range (default: the data's).
    #[serde(default)]
    pub y_range: Option<(f64, f64)>,
    /// Labelled vertical lines (e.g. the selected epoch).
    #[serde(default)]
    pub marks: Vec<(String, f64)>,
    /// Legend position.
    #[serde(default)]
    pub legend: Legend,
}

impl LineChart {
    /// A chart with these labels and curves, ranges from the data, legend upper right.
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
        series: Vec<Series>,
    ) -> Self {
        LineChart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            series,
            log_x: false,
            x_range: None,
            y_range: None,
            marks: Vec::new(),
            legend: Legend::Auto,
        }
    }
}

/// A grid of values in `[0, 1]` with the value written in each cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeatMap {
    /// Title above the grid.
    pub title: String,
    /// What the columns are.
    pub x_label: String,
    /// What the rows are.
    pub y_label: String,
    /// Column names.
    pub columns: Vec<String>,
    /// Row names.
    pub rows: Vec<String>,
    /// `values[row][column]`; `None` cells stay blank.
    pub values: Vec<Vec<Option<f64>>>,
}

/// How the defender judged an image shown in an [`ImageGrid`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Frame {
    /// Passed unflagged (green frame).
    Pass,
    /// Flagged as adversarial (red frame).
    Flag,
}

/// One image of an [`ImageGrid`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageCell {
    /// `C x H x W` (C = 1 or 3).
    pub shape: [usize; 3],
    /// Pixels in `[0, 1]`, channel-major.
    pub pixels: Vec<f32>,
    /// Text under the image.
    pub caption: String,
    /// Verdict frame.
    #[serde(default)]
    pub frame: Option<Frame>,
}

/// One labelled row of an [`ImageGrid`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRow {
    /// Row heading.
    pub label: String,
    /// Images, one per column.
    pub cells: Vec<ImageCell>,
}

/// Images in rows and columns with headings, captions and verdict frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageGrid {
    /// Title above the grid.
    pub title: String,
    /// Column headings.
    pub columns: Vec<String>,
    /// The rows.
    pub rows: Vec<ImageRow>,
}

/// One chart of a figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Panel {
    /// Curves.
    Line(LineChart),
    /// Annotated heat-map.
    Heat(HeatMap),
    /// Images.
    Images(ImageGrid),
}

/// A figure: one or more panels side by side, written as `<name>.svg` and `<name>.png`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// File stem.
    pub name: String,
    /// A sentence saying what it shows (the report's caption and the PNG's alt text).
    pub caption: String,
    /// The panels, left to right.
    pub panels: Vec<Panel>,
}

type Drawn = std::result::Result<(), String>;

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// An image placed on the canvas: top-left corner, size in pixels, RGB bytes of that size.
struct Placed {
    at: (i32, i32),
    size: (u32, u32),
    rgb: Vec<u8>,
}

const LINE_SIZE: (u32, u32) = (720, 480);
const HEAT_CELL: (u32, u32) = (74, 30);
const IMAGE_SCALE: usize = 3;

impl Panel {
    fn size(&self) -> (u32, u32) {
        match self {
            Panel::Line(_) => LINE_SIZE,
            Panel::Heat(h) => {
                let (row_w, col_w) = heat_label_widths(h);
                (
                    (40 + row_w + 10 + col_w * h.columns.len() as u32 + 30).max(360),
                    90 + HEAT_CELL.1 * h.rows.len() as u32 + 60,
                )
            }
            Panel::Images(g) => {
                let (cw, ch) = g.cell_size();
                let label = g
                    .rows
                    .iter()
                    .map(|r| text_width(&r.label, 13.0))
                    .max()
                    .unwrap_or(0);
                (
                    (30 + label + cw * g.columns.len() as u32).max(360),
                    80 + ch * g.rows.len() as u32 + 30,
                )
            }
        }
    }

    fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<Vec<Placed>, String> {
        match self {
            Panel::Line(c) => draw_line(area, c).map(|_| Vec::new()),
            Panel::Heat(h) => draw_heat(area, h).map(|_| Vec::new()),
            Panel::Images(g) => draw_images(area, g),
        }
    }
}

impl Figure {
    /// A figure of one panel.
    pub fn single(name: impl Into<String>, caption: impl Into<String>, panel: Panel) -> Self {
        Figure {
            name: name.into(),
            caption: caption.into(),
            panels: vec![panel],
        }
    }

    /// Canvas size in pixels.
    pub fn size(&self) -> (u32, u32) {
        self.panels.iter().fold((0, 0), |(w, h), p| {
            let (pw, ph) = p.size();
            (w + pw, h.max(ph))
        })
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<Vec<Placed>, String> {
        root.fill(&WHITE).map_err(err)?;
        let mut placed = Vec::new();
        let mut x = 0i32;
        for p in &self.panels {
            let (w, h) = p.size();
            let area = root.clone().shrink((x, 0), (w, h));
            placed.extend(p.draw(&area)?);
            x += w as i32;
        }
        Ok(placed)
    }

    /// The figure as an SVG document (images embedded as PNG data URIs).
    pub fn to_svg(&self) -> Result<String> {
        if self.panels.is_empty() {
            return Err(Error::Invalid(format!(
                "figure {} has no panels",
                self.name
            )));
        }
        register_font();
        let size = self.size();
        let mut svg = String::new();
        let placed = {
            let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
            let placed = self.draw(&root).map_err(|e| self.error(e))?;
            root.present().map_err(|e| self.error(e))?;
            placed
        };
        if !placed.is_empty() {
            let mut images = String::new();
            for p in &placed {
                let png = encode_png(&p.rgb, p.size)?;
                images += &format!(
                    "<image x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" style=\"image-rendering:pixelated\" href=\"data:image/png;base64,{}\"/>\n",
                    p.at.0,
                    p.at.1,
                    p.size.0,
                    p.size.1,
                    base64::engine::general_purpose::STANDARD.encode(png)
                );
            }
            let end = svg
                .rfind("</svg>")
                .ok_or_else(|| self.error("the SVG backend wrote no closing tag"))?;
            svg.insert_str(end, &images);
        }
        Ok(svg)
    }

    /// The figure as PNG bytes.
    pub fn to_png(&self) -> Result<Vec<u8>> {
        if self.panels.is_empty() {
            return Err(Error::Invalid(format!(
                "figure {} has no panels",
                self.name
            )));
        }
        register_font();
        let (w, h) = self.size();
        let mut buf = vec![255u8; w as usize * h as usize * 3];
        {
            let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
            let placed = self.draw(&root).map_err(|e| self.error(e))?;
            for p in placed {
                let elem = BitMapElement::<(i32, i32)>::with_owned_buffer(p.at, p.size, p.rgb)
                    .ok_or_else(|| self.error("image buffer of the wrong size"))?;
                root.draw(&elem).map_err(|e| self.error(e))?;
            }
            root.present().map_err(|e| self.error(e))?;
        }
        encode_png(&buf, (w, h))
    }

    /// Writes `<dir>/<name>.svg` and `<dir>/<name>.png` (atomically).
    pub fn write(&self, dir: &Path) -> Result<()> {
        write_atomic(
            dir.join(format!("{}.svg", self.name)),
            self.to_svg()?.as_bytes(),
        )?;
        write_atomic(dir.join(format!("{}.png", self.name)), &self.to_png()?)
    }

    fn error(&self, e: impl std::fmt::Display) -> Error {
        Error::Invalid(format!("cannot draw figure {}: {e}", self.name))
    }
}

/// The file every report folder keeps its figures' data in, for `defed report`.
pub const FIGURES_FILE: &str = "figures.json";

/// Draws `figures` into `dir` (SVG and PNG each) and records their data in
/// `dir/figures.json`, so [`redraw`] can render them again without recomputing.
pub fn write_figures(dir: &Path, figures: &[Figure]) -> Result<()> {
    for f in figures {
        f.write(dir)?;
    }
    let json = serde_json::to_vec(figures)
        .map_err(|e| Error::Invalid(format!("cannot serialise the figures: {e}")))?;
    write_atomic(dir.join(FIGURES_FILE), &json)
}

/// Reads `dir/figures.json` (an empty list when absent).
pub fn read_figures(dir: &Path) -> Result<Vec<Figure>> {
    let path = dir.join(FIGURES_FILE);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let bytes = crate::util::read_file(&path)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::format(&path, format!("not a list of figures: {e}")))
}

/// Redraws every figure recorded in `dir/figures.json`; returns how many.
pub fn redraw(dir: &Path) -> Result<usize> {
    let figures = read_figures(dir)?;
    for f in &figures {
        f.write(dir)?;
    }
    Ok(figures.len())
}

/// The figures as a Markdown list: per figure its file, caption and the image.
pub fn markdown(figures: &[Figure]) -> String {
    figures
        .iter()
        .map(|f| {
            format!(
                "- `{n}.png` / `{n}.svg`: {}\n\n  ![{n}]({n}.png)\n\n",
                f.caption,
                n = f.name
            )
        })
        .collect()
}

/// Width in pixels of `text` in the charts' font at `size`, as it is drawn.
fn text_width(text: &str, size: f64) -> u32 {
    register_font();
    plotters::style::FontDesc::from((FONT, size))
        .box_size(text)
        .map(|(w, _)| w)
        .unwrap_or(text.chars().count() as u32 * 8)
}

/// A heat map's row-label width and column width (its widest name, or the minimum cell).
fn heat_label_widths(h: &HeatMap) -> (u32, u32) {
    let row_w = h
        .rows
        .iter()
        .map(|r| text_width(r, 13.0))
        .max()
        .unwrap_or(0);
    let col_w = h
        .columns
        .iter()
        .map(|c| text_width(c, 13.0) + 12)
        .max()
        .unwrap_or(0)
        .max(HEAT_CELL.0);
    (row_w, col_w)
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The embedded font parses; failing here would be a build defect, and text would
        // then be missing from PNGs rather than the program failing.
        if plotters::style::register_font(FONT, FontStyle::Normal, DEJAVU_SANS).is_err() {
            tracing::error!("the embedded DejaVu Sans font did not load");
        }
    });
}

fn encode_png(rgb: &[u8], (w, h): (u32, u32)) -> Result<Vec<u8>> {
    let img = image::RgbImage::from_raw(w, h, rgb.to_vec())
        .ok_or_else(|| Error::Invalid("image buffer of the wrong size".into()))?;
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| Error::Invalid(format!("cannot encode PNG: {e}")))?;
    Ok(out.into_inner())
}

/// A short number for ticks and cells: no trailing zeros, at most 3 significant digits.
pub(crate) fn short_number(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let digits = (2 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        // One value: a unit-wide window around it, not reaching below zero for a value that
        // is not negative (one eps budget must not draw an axis of negative budgets).
        let floor = if lo >= 0.0 { 0.0 } else { f64::NEG_INFINITY };
        return ((lo - 0.5).max(floor), hi + 0.5);
    }
    let pad = 0.04 * (hi - lo);
    (lo - pad, hi + pad)
}

/// The marks of a chart as `(label, x, text row)`: marks at the same x share one label (a
/// first word they all share written once: "best val_total, val_class"), and a label goes to the
/// first row whose previous label is far enough away in x not to overlap it.
fn mark_rows(
    marks: &[(String, f64)],
    tx: &dyn Fn(f64) -> f64,
    width: f64,
) -> Vec<(String, f64, usize)> {
    let mut sorted: Vec<(String, f64)> = marks
        .iter()
        .map(|(l, x)| (l.trim().to_string(), tx(*x)))
        .filter(|(_, x)| x.is_finite())
        .collect();
    sorted.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut groups: Vec<(Vec<String>, f64)> = Vec::new();
    for (label, x) in sorted {
        match groups.last_mut() {
            Some((labels, gx)) if *gx == x => labels.push(label),
            _ => groups.push((vec![label], x)),
        }
    }
    const ROWS: usize = 4;
    let gap = 0.2 * width.abs();
    let mut last_x: [Option<f64>; ROWS] = [None; ROWS];
    groups
        .into_iter()
        .enumerate()
        .map(|(i, (labels, x))| {
            let first_word = labels[0].split(' ').next().unwrap_or("").to_string();
            let shared = labels.len() > 1
                && labels
                    .iter()
                    .all(|l| l.starts_with(&format!("{first_word} ")));
            let label = if shared {
                let rest: Vec<&str> = labels.iter().map(|l| &l[first_word.len() + 1..]).collect();
                format!("{first_word} {}", rest.join(", "))
            } else {
                labels.join(", ")
            };
            let row = (0..ROWS)
                .find(|&r| last_x[r].is_none_or(|p| x - p > gap))
                .unwrap_or(i % ROWS);
            last_x[row] = Some(x);
            (label, x, row)
        })
        .collect()
}

fn draw_line<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, c: &LineChart) -> Drawn {
    let tx = |x: f64| if c.log_x { x.log10() } else { x };
    let keep = |x: f64| !c.log_x || x > 0.0;
    let curves: Vec<Vec<(f64, f64)>> = c
        .series
        .iter()
        .map(|s| {
            s.points
                .iter()
                .filter(|(x, y)| keep(*x) && x.is_finite() && y.is_finite())
                .map(|&(x, y)| (tx(x), y))
                .collect()
        })
        .collect();
    let all = || curves.iter().flatten();
    let (x0, x1) = match c.x_range {
        Some((a, b)) if keep(a) && keep(b) && a < b => (tx(a), tx(b)),
        _ => range(all().map(|p| p.0).chain(c.marks.iter().map(|m| tx(m.1)))),
    };
    let (y0, y1) = match c.y_range {
        Some((a, b)) if a < b => (a, b),
        _ => range(all().map(|p| p.1)),
    };
    let log_x = c.log_x;
    let x_fmt = move |v: &f64| short_number(if log_x { 10f64.powf(*v) } else { *v });
    let y_fmt = |v: &f64| short_number(*v);
    let mut chart = ChartBuilder::on(area)
        .caption(&c.title, (FONT, 20))
        .margin(14)
        .x_label_area_size(52)
        .y_label_area_size(68)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    let decades = (x1.floor() - x0.ceil()) as usize + 1;
    // Whole-number x values (epochs) get whole-number ticks.
    let whole = !log_x && all().all(|p| p.0.fract() == 0.0) && x1 - x0 <= 12.0;
    let x_ticks = if log_x {
        decades.clamp(2, 12)
    } else if whole {
        ((x1 - x0).round() as usize + 1).clamp(2, 13)
    } else {
        10
    };
    chart
        .configure_mesh()
        .x_desc(c.x_label.as_str())
        .y_desc(c.y_label.as_str())
        .axis_desc_style((FONT, 16))
        .label_style((FONT, 13))
        .x_labels(x_ticks)
        .y_labels(10)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()
        .map_err(err)?;
    let mut named = false;
    for (i, (s, pts)) in c.series.iter().zip(&curves).enumerate() {
        let colour = PALETTE[s.colour.unwrap_or(i) % PALETTE.len()];
        let style = colour.stroke_width(2);
        if s.dashed {
            let drawn = chart
                .draw_series(DashedLineSeries::new(pts.clone(), 7, 5, style))
                .map_err(err)?;
            if !s.name.is_empty() {
                drawn.label(s.name.as_str()).legend(move |(x, y)| {
                    plotters::element::DashedPathElement::new(
                        vec![(x, y), (x + 22, y)],
                        5,
                        3,
                        colour.stroke_width(2),
                    )
                });
            }
        } else {
            let drawn = chart
                .draw_series(LineSeries::new(pts.clone(), style))
                .map_err(err)?;
            if !s.name.is_empty() {
                drawn.label(s.name.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 22, y)], colour.stroke_width(2))
                });
            }
        }
        named |= !s.name.is_empty();
        if s.markers {
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                .map_err(err)?;
        }
    }
    for (label, x, row) in mark_rows(&c.marks, &tx, x1 - x0) {
        let y_text = y1 - row as f64 * 0.07 * (y1 - y0);
        chart
            .draw_series(DashedLineSeries::new(
                vec![(x, y0), (x, y1)],
                4,
                4,
                BLACK.stroke_width(1),
            ))
            .map_err(err)?;
        // Text on the side of the line with more room.
        let right_half = x > x0 + 0.5 * (x1 - x0);
        let (text, h) = if right_half {
            (format!("{} ", label.trim()), HPos::Right)
        } else {
            (format!(" {}", label.trim()), HPos::Left)
        };
        chart
            .draw_series(std::iter::once(Text::new(
                text,
                (x, y_text),
                TextStyle::from((FONT, 13)).pos(Pos::new(h, VPos::Top)),
            )))
            .map_err(err)?;
    }
    if named {
        chart
            .configure_series_labels()
            .position(match c.legend {
                Legend::Auto => emptiest_corner(&curves, (x0, x1), (y0, y1)),
                Legend::UpperRight => SeriesLabelPosition::UpperRight,
                Legend::UpperLeft => SeriesLabelPosition::UpperLeft,
                Legend::LowerRight => SeriesLabelPosition::LowerRight,
                Legend::LowerLeft => SeriesLabelPosition::LowerLeft,
            })
            .label_font((FONT, 13))
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(160, 160, 160))
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

/// The plot corner (a 45% x 40% box) holding the fewest data points, for the legend.
fn emptiest_corner(
    curves: &[Vec<(f64, f64)>],
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
) -> SeriesLabelPosition {
    let count = |right: bool, upper: bool| {
        curves
            .iter()
            .flatten()
            .filter(|(x, y)| {
                let fx = (x - x0) / (x1 - x0).max(1e-12);
                let fy = (y - y0) / (y1 - y0).max(1e-12);
                (if right { fx > 0.55 } else { fx < 0.45 })
                    && (if upper { fy > 0.6 } else { fy < 0.4 })
            })
            .count()
    };
    [
        (SeriesLabelPosition::UpperRight, count(true, true)),
        (SeriesLabelPosition::LowerRight, count(true, false)),
        (SeriesLabelPosition::UpperLeft, count(false, true)),
        (SeriesLabelPosition::LowerLeft, count(false, false)),
    ]
    .into_iter()
    .min_by_key(|(_, n)| *n)
    .map(|(p, _)| p)
    .unwrap_or(SeriesLabelPosition::UpperRight)
}

/// Viridis-like colour for `v` in `[0, 1]` and whether text on it should be white.
fn heat_colour(v: f64) -> (RGBColor, bool) {
    use plotters::style::colors::colormaps::{ColorMap, ViridisRGB};
    let v = v.clamp(0.0, 1.0);
    (ViridisRGB.get_color(v), v < 0.55)
}

fn draw_heat<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, h: &HeatMap) -> Drawn {
    let (w, _) = area.dim_in_pixel();
    let label_style = TextStyle::from((FONT, 13));
    let title = TextStyle::from((FONT, 20)).pos(Pos::new(HPos::Center, VPos::Top));
    area.draw(&Text::new(h.title.clone(), (w as i32 / 2, 10), title))
        .map_err(err)?;
    let (row_w, col_w) = heat_label_widths(h);
    let (row_w, col_w) = (row_w as i32, col_w as i32);
    let cell_h = HEAT_CELL.1 as i32;
    let (left, top) = (40 + row_w + 10, 70);
    // Column names above the grid, row names to its left.
    for (j, c) in h.columns.iter().enumerate() {
        area.draw(&Text::new(
            c.clone(),
            (left + j as i32 * col_w + col_w / 2, top - 6),
            label_style.pos(Pos::new(HPos::Center, VPos::Bottom)),
        ))
        .map_err(err)?;
    }
    for (i, r) in h.rows.iter().enumerate() {
        area.draw(&Text::new(
            r.clone(),
            (left - 8, top + i as i32 * cell_h + cell_h / 2),
            label_style.pos(Pos::new(HPos::Right, VPos::Center)),
        ))
        .map_err(err)?;
    }
    for (i, row) in h.values.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            let (x, y) = (left + j as i32 * col_w, top + i as i32 * cell_h);
            let Some(v) = v else { continue };
            let (fill, white) = heat_colour(*v);
            area.draw(&Rectangle::new(
                [(x + 1, y + 1), (x + col_w - 1, y + cell_h - 1)],
                fill.filled(),
            ))
            .map_err(err)?;
            area.draw(&Text::new(
                format!("{:.1}", 100.0 * v),
                (x + col_w / 2, y + cell_h / 2),
                TextStyle::from((FONT, 13))
                    .color(if white { &WHITE } else { &BLACK })
                    .pos(Pos::new(HPos::Center, VPos::Center)),
            ))
            .map_err(err)?;
        }
    }
    let bottom = top + cell_h * h.rows.len() as i32;
    let grid_w = col_w * h.columns.len() as i32;
    area.draw(&Text::new(
        format!("{} (values in %)", h.x_label),
        (left + grid_w / 2, 36),
        TextStyle::from((FONT, 15)).pos(Pos::new(HPos::Center, VPos::Top)),
    ))
    .map_err(err)?;
    area.draw(&Text::new(
        h.y_label.clone(),
        (14, top + (bottom - top) / 2),
        TextStyle::from((FONT, 15))
            .transform(FontTransform::Rotate270)
            .pos(Pos::new(HPos::Center, VPos::Center)),
    ))
    .map_err(err)?;
    // Colour scale under the grid.
    let (sx, sy, sw) = (left, bottom + 18, grid_w.min(300));
    for k in 0..sw {
        let (c, _) = heat_colour(k as f64 / (sw - 1).max(1) as f64);
        area.draw(&Rectangle::new(
            [(sx + k, sy), (sx + k + 1, sy + 10)],
            c.filled(),
        ))
        .map_err(err)?;
    }
    for (t, x) in [("0%", sx), ("100%", sx + sw)] {
        area.draw(&Text::new(
            t,
            (x, sy + 13),
            label_style.pos(Pos::new(HPos::Center, VPos::Top)),
        ))
        .map_err(err)?;
    }
    Ok(())
}

impl ImageGrid {
    fn image_side(&self) -> (usize, usize) {
        self.rows
            .iter()
            .flat_map(|r| &r.cells)
            .map(|c| (c.shape[2], c.shape[1]))
            .fold((0, 0), |(w, h), (cw, ch)| (w.max(cw), h.max(ch)))
    }

    fn cell_size(&self) -> (u32, u32) {
        let (w, h) = self.image_side();
        let caption = self
            .rows
            .iter()
            .flat_map(|r| &r.cells)
            .map(|c| c.caption.chars().count())
            .chain(self.columns.iter().map(|c| c.chars().count()))
            .max()
            .unwrap_or(0) as u32;
        (
            ((w * IMAGE_SCALE) as u32 + 16).max(caption * 7 + 10),
            (h * IMAGE_SCALE) as u32 + 34,
        )
    }
}

fn draw_images<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    g: &ImageGrid,
) -> std::result::Result<Vec<Placed>, String> {
    let (w, _) = area.dim_in_pixel();
    let (base_x, base_y) = area.get_base_pixel();
    let label_style = TextStyle::from((FONT, 13));
    area.draw(&Text::new(
        g.title.clone(),
        (w as i32 / 2, 10),
        TextStyle::from((FONT, 20)).pos(Pos::new(HPos::Center, VPos::Top)),
    ))
    .map_err(err)?;
    let row_w = g
        .rows
        .iter()
        .map(|r| {
            area.estimate_text_size(&r.label, &label_style)
                .map(|s| s.0)
                .unwrap_or(0)
        })
        .max()
        .unwrap_or(0) as i32;
    let (cw, ch) = g.cell_size();
    let (cw, ch) = (cw as i32, ch as i32);
    let (left, top) = (20 + row_w, 70);
    for (j, c) in g.columns.iter().enumerate() {
        area.draw(&Text::new(
            c.clone(),
            (left + j as i32 * cw + cw / 2, top - 8),
            label_style.pos(Pos::new(HPos::Center, VPos::Bottom)),
        ))
        .map_err(err)?;
    }
    let mut placed = Vec::new();
    for (i, row) in g.rows.iter().enumerate() {
        let y = top + i as i32 * ch;
        area.draw(&Text::new(
            row.label.clone(),
            (left - 10, y + ch / 2 - 8),
            label_style.pos(Pos::new(HPos::Right, VPos::Center)),
        ))
        .map_err(err)?;
        for (j, cell) in row.cells.iter().enumerate() {
            let [c, h, iw] = cell.shape;
            if !(c == 1 || c == 3) || cell.pixels.len() != c * h * iw {
                return Err(format!(
                    "image of shape {:?} with {} values",
                    cell.shape,
                    cell.pixels.len()
                ));
            }
            let (sw, sh) = (iw * IMAGE_SCALE, h * IMAGE_SCALE);
            let x = left + j as i32 * cw + (cw - sw as i32) / 2;
            if let Some(frame) = cell.frame {
                let colour = match frame {
                    Frame::Pass => RGBColor(0, 158, 115),
                    Frame::Flag => RGBColor(213, 40, 40),
                };
                area.draw(&Rectangle::new(
                    [(x - 4, y), (x + sw as i32 + 3, y + sh as i32 + 7)],
                    colour.filled(),
                ))
                .map_err(err)?;
            }
            let mut rgb = Vec::with_capacity(sw * sh * 3);
            for py in 0..sh {
                for px in 0..sw {
                    let (sx, sy) = (px / IMAGE_SCALE, py / IMAGE_SCALE);
                    for k in 0..3 {
                        let ch_i = if c == 1 { 0 } else { k };
                        let v = cell.pixels[ch_i * h * iw + sy * iw + sx];
                        rgb.push((v.clamp(0.0, 1.0) * 255.0).round() as u8);
                    }
                }
            }
            placed.push(Placed {
                at: (base_x + x, base_y + y + 4),
                size: (sw as u32, sh as u32),
                rgb,
            });
            area.draw(&Text::new(
                cell.caption.clone(),
                (left + j as i32 * cw + cw / 2, y + sh as i32 + 10),
                TextStyle::from((FONT, 12)).pos(Pos::new(HPos::Center, VPos::Top)),
            ))
            .map_err(err)?;
        }
    }
    let bottom = top + ch * g.rows.len() as i32;
    if g.rows
        .iter()
        .flat_map(|r| &r.cells)
        .any(|c| c.frame.is_some())
    {
        area.draw(&Text::new(
            "green frame: passed unflagged; red frame: flagged as adversarial",
            (left, bottom + 6),
            label_style.pos(Pos::new(HPos::Left, VPos::Top)),
        ))
        .map_err(err)?;
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_marks_share_labels_and_do_not_overlap() {
        let marks: Vec<(String, f64)> = [
            ("best val_total", 5.0),
            ("best val_class", 5.0),
            ("best val_detect", 6.0),
            ("best val_vision", 9.0),
        ]
        .iter()
        .map(|(l, x)| (l.to_string(), *x))
        .collect();
        let rows = mark_rows(&marks, &|x| x, 9.0);
        let got: Vec<(&str, f64, usize)> =
            rows.iter().map(|(l, x, r)| (l.as_str(), *x, *r)).collect();
        assert_eq!(
            got,
            vec![
                ("best val_total, val_class", 5.0, 0),
                ("best val_detect", 6.0, 1),
                ("best val_vision", 9.0, 0),
            ]
        );
        // Labels without a shared first word are joined whole.
        let mixed = [("a x".to_string(), 1.0), ("b y".to_string(), 1.0)];
        assert_eq!(mark_rows(&mixed, &|x| x, 1.0)[0].0, "a x, b y");
    }

    #[test]
    fn one_value_axis_stays_at_or_above_zero() {
        assert_eq!(range([0.3].into_iter()), (0.0, 0.8));
        assert_eq!(range([2.0, 2.0].into_iter()), (1.5, 2.5));
        assert_eq!(range([-1.0].into_iter()), (-1.5, -0.5));
    }

    fn roc() -> Figure {
        let mut c = LineChart::new(
            "ROC",
            "false-positive rate",
            "detection rate",
            vec![
                Series::new("FGSM (AUC 0.91)", vec![(0.0, 0.0), (0.1, 0.8), (1.0, 1.0)]),
                Series::new("chance", vec![(0.0, 0.0), (1.0, 1.0)]).dashed(),
            ],
        );
        c.legend = Legend::LowerRight;
        Figure::single("roc", "ROC curves", Panel::Line(c))
    }

    #[test]
    fn svg_has_the_text() {
        let svg = roc().to_svg().unwrap();
        for t in [
            "ROC",
            "false-positive rate",
            "detection rate",
            "FGSM (AUC 0.91)",
            "chance",
        ] {
            assert!(svg.contains(t), "{t} missing");
        }
        assert!(roc().to_png().unwrap().starts_with(b"\x89PNG"));
    }

    #[test]
    fn short_numbers() {
        assert_eq!(short_number(0.5), "0.5");
        assert_eq!(short_number(0.001), "0.001");
        assert_eq!(short_number(100.0), "100");
        assert_eq!(short_number(0.30000001), "0.3");
    }

    #[test]
    fn bad_image_is_an_error() {
        let g = ImageGrid {
            title: "x".into(),
            columns: vec!["a".into()],
            rows: vec![ImageRow {
                label: "r".into(),
                cells: vec![ImageCell {
                    shape: [1, 2, 2],
                    pixels: vec![0.0; 3],
                    caption: String::new(),
                    frame: None,
                }],
            }],
        };
        let f = Figure::single("g", "", Panel::Images(g));
        assert!(f.to_svg().is_err());
        assert!(f.to_png().is_err());
    }
}
