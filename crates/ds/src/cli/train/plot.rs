//! The loss curve as a PNG: loss per step (light) and its running mean (dark), the validation
//! loss (green, marked points), the corpus's unigram entropy as a dashed reference line,
//! labelled axes (a 5 x 7 bitmap font: plotters
//! draws text through system fonts or a bundled font file, which a fresh machine may lack),
//! encoded by the `png` crate.

use std::path::Path;

const W: usize = 800;
const H: usize = 500;
const LEFT: usize = 70;
const RIGHT: usize = 20;
const TOP: usize = 30;
const BOTTOM: usize = 50;

type Rgb = [u8; 3];
const WHITE: Rgb = [255, 255, 255];
const BLACK: Rgb = [0, 0, 0];
const GRID: Rgb = [225, 225, 225];
const RAW: Rgb = [160, 190, 235];
const MEAN: Rgb = [20, 60, 160];
const REF: Rgb = [200, 80, 40];
const VAL: Rgb = [30, 150, 60];

struct Canvas {
    px: Vec<u8>,
}

impl Canvas {
    fn new() -> Self {
        Canvas {
            px: WHITE.repeat(W * H),
        }
    }

    fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if (0..W as i64).contains(&x) && (0..H as i64).contains(&y) {
            let i = (y as usize * W + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb, dash: bool) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err, mut n) = (x0, y0, dx + dy, 0u32);
        loop {
            if !dash || (n / 6) % 2 == 0 {
                self.set(x, y, c);
            }
            n += 1;
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Draws `text` with its top-left corner at (x, y), 2x-scaled 5x7 glyphs.
    /// Joins consecutive points with solid lines.
    fn polyline(&mut self, points: impl Iterator<Item = (i64, i64)>, c: Rgb) {
        let mut last = None;
        for p in points {
            if let Some(q) = last {
                self.line(q, p, c, false);
            }
            last = Some(p);
        }
    }

    fn text(&mut self, x: i64, y: i64, text: &str, c: Rgb) {
        for (i, ch) in text.chars().enumerate() {
            let rows = glyph(ch);
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0b10000 >> col) != 0 {
                        let (gx, gy) = (x + (i as i64) * 12 + col * 2, y + r as i64 * 2);
                        for (ox, oy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                            self.set(gx + ox, gy + oy, c);
                        }
                    }
                }
            }
        }
    }
}

/// 5x7 glyphs for the characters the plot writes.
fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [14, 17, 19, 21, 25, 17, 14],
        '1' => [4, 12, 4, 4, 4, 4, 14],
        '2' => [14, 17, 1, 2, 4, 8, 31],
        '3' => [31, 2, 4, 2, 1, 17, 14],
        '4' => [2, 6, 10, 18, 31, 2, 2],
        '5' => [31, 16, 30, 1, 1, 17, 14],
        '6' => [6, 8, 16, 30, 17, 17, 14],
        '7' => [31, 1, 2, 4, 8, 8, 8],
        '8' => [14, 17, 17, 14, 17, 17, 14],
        '9' => [14, 17, 17, 15, 1, 2, 12],
        '.' => [0, 0, 0, 0, 0, 12, 12],
        '-' => [0, 0, 0, 31, 0, 0, 0],
        '(' => [2, 4, 8, 8, 8, 4, 2],
        ')' => [8, 4, 2, 2, 2, 4, 8],
        'a' => [0, 0, 14, 1, 15, 17, 15],
        'c' => [0, 0, 14, 16, 16, 17, 14],
        'e' => [0, 0, 14, 17, 31, 16, 14],
        'g' => [0, 15, 17, 17, 15, 1, 14],
        'i' => [4, 0, 12, 4, 4, 4, 14],
        'l' => [12, 4, 4, 4, 4, 4, 14],
        'm' => [0, 0, 26, 21, 21, 17, 17],
        'n' => [0, 0, 22, 25, 17, 17, 17],
        'o' => [0, 0, 14, 17, 17, 17, 14],
        'p' => [0, 0, 30, 17, 30, 16, 16],
        'r' => [0, 0, 22, 25, 16, 16, 16],
        's' => [0, 0, 14, 16, 14, 1, 30],
        't' => [8, 8, 28, 8, 8, 9, 6],
        'u' => [0, 0, 17, 17, 17, 19, 13],
        'y' => [0, 0, 17, 17, 15, 1, 14],
        'h' => [16, 16, 22, 25, 17, 17, 17],
        'k' => [16, 16, 18, 20, 24, 20, 18],
        'w' => [0, 0, 17, 17, 21, 21, 10],
        'v' => [0, 0, 17, 17, 17, 10, 4],
        'd' => [1, 1, 13, 19, 17, 17, 15],
        _ => [0; 7],
    }
}

fn label(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Writes the curve of `points` (step, loss) to `path`, with `reference` as a dashed line.
///
/// # Errors
/// A one-line message when the file cannot be written.
pub fn write_loss_png(
    path: &Path,
    points: &[(u64, f32)],
    validation: &[(u64, f32)],
    reference: Option<f64>,
) -> Result<(), String> {
    let mut c = Canvas::new();
    let finite_of = |pts: &[(u64, f32)]| -> Vec<(u64, f64)> {
        pts.iter()
            .filter(|(_, l)| l.is_finite())
            .map(|&(s, l)| (s, f64::from(l)))
            .collect()
    };
    let finite = finite_of(points);
    let val = finite_of(validation);
    let (x_min, x_max) = (
        finite.first().map_or(0, |p| p.0) as f64,
        finite.last().map_or(1, |p| p.0).max(1) as f64,
    );
    let mut y_max = finite
        .iter()
        .chain(&val)
        .map(|p| p.1)
        .fold(f64::MIN, f64::max);
    let mut y_min = finite
        .iter()
        .chain(&val)
        .map(|p| p.1)
        .fold(f64::MAX, f64::min);
    if let Some(r) = reference {
        y_max = y_max.max(r);
        y_min = y_min.min(r);
    }
    if finite.is_empty() {
        (y_min, y_max) = (0.0, 1.0);
    }
    y_min = (y_min - 0.05 * (y_max - y_min)).max(0.0).floor();
    y_max = y_max.ceil().max(y_min + 1.0);
    let (pw, ph) = ((W - LEFT - RIGHT) as f64, (H - TOP - BOTTOM) as f64);
    let to_px = |s: f64, l: f64| -> (i64, i64) {
        let x = LEFT as f64 + (s - x_min) / (x_max - x_min).max(1.0) * pw;
        let y = TOP as f64 + (y_max - l) / (y_max - y_min) * ph;
        (x.round() as i64, y.round() as i64)
    };
    for i in 0..=5 {
        let v = y_min + (y_max - y_min) * f64::from(i) / 5.0;
        let (_, y) = to_px(x_min, v);
        c.line((LEFT as i64, y), ((W - RIGHT) as i64, y), GRID, false);
        c.text(8, y - 7, &label(v), BLACK);
        let s = x_min + (x_max - x_min) * f64::from(i) / 5.0;
        let (x, _) = to_px(s, y_min);
        c.line((x, TOP as i64), (x, (H - BOTTOM) as i64), GRID, false);
        let text = label(s.round());
        c.text(
            x - 6 * text.len() as i64,
            (H - BOTTOM + 8) as i64,
            &text,
            BLACK,
        );
    }
    let origin = (LEFT as i64, (H - BOTTOM) as i64);
    c.line(
        origin,
        ((W - RIGHT) as i64, (H - BOTTOM) as i64),
        BLACK,
        false,
    );
    c.line(origin, (LEFT as i64, TOP as i64), BLACK, false);
    c.text((W / 2 - 24) as i64, (H - 18) as i64, "step", BLACK);
    c.text(8, 8, "loss (nats per token)", BLACK);
    if let Some(r) = reference {
        let (_, y) = to_px(x_min, r);
        c.line((LEFT as i64, y), ((W - RIGHT) as i64, y), REF, true);
        c.text((W - RIGHT - 190) as i64, y - 18, "unigram entropy", REF);
    }
    c.polyline(finite.iter().map(|&(s, l)| to_px(s as f64, l)), RAW);
    let span = (finite.len() / 50).max(1);
    let mean: Vec<(u64, f64)> = finite
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let lo = i.saturating_sub(span - 1);
            let m = finite[lo..=i].iter().map(|q| q.1).sum::<f64>() / (i - lo + 1) as f64;
            (p.0, m)
        })
        .collect();
    c.polyline(mean.iter().map(|&(s, l)| to_px(s as f64, l)), MEAN);
    // The validation loss: a line through its points, each marked with a small square.
    c.polyline(val.iter().map(|&(s, l)| to_px(s as f64, l)), VAL);
    for &(s, l) in &val {
        let (x, y) = to_px(s as f64, l);
        for dx in -2..=2 {
            for dy in -2..=2 {
                c.set(x + dx, y + dy, VAL);
            }
        }
    }
    if !val.is_empty() {
        c.text(
            (W - RIGHT - 170) as i64,
            TOP as i64 + 6,
            "validation loss",
            VAL,
        );
    }
    std::fs::write(path, encode_png(&c.px)?)
        .map_err(|e| format!("cannot write the plot {}: {e}", path.display()))
}

/// An 8-bit RGB PNG of the `W x H` pixels (the `png` crate: filtered and deflated, a tenth of
/// the stored blocks the hand-written encoder it replaced wrote).
fn encode_png(px: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, W as u32, H as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let fail = |e: png::EncodingError| format!("cannot encode the plot: {e}");
    let mut writer = encoder.write_header().map_err(fail)?;
    writer.write_image_data(px).map_err(fail)?;
    writer.finish().map_err(fail)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_character_the_plot_writes_has_a_glyph() {
        for text in [
            "loss (nats per token)",
            "step",
            "unigram entropy",
            "validation loss",
        ] {
            for ch in text.chars().filter(|c| *c != ' ') {
                assert_ne!(glyph(ch), [0; 7], "no glyph for {ch:?} in {text:?}");
            }
        }
    }

    #[test]
    fn the_png_decodes_to_the_canvas() {
        let mut c = Canvas::new();
        c.line((10, 10), (200, 120), MEAN, false);
        c.text(30, 40, "loss 1.25", BLACK);
        let bytes = encode_png(&c.px).expect("encode");
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .expect("a PNG");
        let mut back = vec![0; reader.output_buffer_size().expect("size")];
        let info = reader.next_frame(&mut back).expect("frame");
        assert_eq!((info.width, info.height), (W as u32, H as u32));
        assert_eq!(&back[..info.buffer_size()], &c.px[..]);
    }
}
