//! `foley plot`: a PNG with a clip's spectrogram above its waveform, drawn with plotters and the
//! DejaVu Sans font shipped in `assets/` (so nothing depends on system fonts).

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use super::colormap::magma;
use crate::engine::dsp::fft::Fft;
use crate::error::{FoleyError, Result};

const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const WINDOW: usize = 1024;
const HOP: usize = 256;
/// Dynamic range shown, below the loudest bin.
const RANGE_DB: f64 = 80.0;

/// Power spectrogram in dB: (frames, WINDOW/2 + 1 bins), Hann-windowed, hop `HOP`.
fn spectrogram_db(samples: &[f32]) -> Vec<Vec<f64>> {
    let fft = Fft::new(WINDOW);
    let window: Vec<f64> = (0..WINDOW)
        .map(|n| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / WINDOW as f64).cos())
        .collect();
    let frames = samples.len().div_ceil(HOP).max(1);
    (0..frames)
        .map(|frame| {
            let mut buffer: Vec<(f64, f64)> = (0..WINDOW)
                .map(|n| {
                    let index = (frame * HOP + n) as isize - (WINDOW / 2) as isize;
                    let value = usize::try_from(index)
                        .ok()
                        .and_then(|index| samples.get(index))
                        .copied()
                        .unwrap_or(0.0);
                    (value as f64 * window[n], 0.0)
                })
                .collect();
            fft.forward(&mut buffer);
            buffer[..=WINDOW / 2]
                .iter()
                .map(|(re, im)| 10.0 * (re * re + im * im).max(1e-12).log10())
                .collect()
        })
        .collect()
}

/// Renders `samples` (mono, `sample_rate`) to a `width`×`height` PNG at `out`.
pub fn render_plot(
    samples: &[f32],
    sample_rate: u32,
    title: &str,
    out: &Path,
    (width, height): (u32, u32),
) -> Result<()> {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // The font is compiled in; registration only fails for a malformed font.
        let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    });
    let failed = |reason: String| FoleyError::Output {
        path: out.to_path_buf(),
        reason,
    };
    if sample_rate == 0 {
        return Err(failed("sample rate 0 Hz".into()));
    }
    // Drawn into a temporary sibling and renamed, like every other output: an interrupted
    // render never leaves half a picture, and only a replaceable file is replaced.
    crate::atomic_file::check_replaceable(out)?;
    let name = out
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = out.with_file_name(format!(".{name}.{}.partial.png", std::process::id()));
    let result = draw(
        &temporary,
        samples,
        sample_rate,
        title,
        (width, height),
        &failed,
    )
    .and_then(|()| std::fs::rename(&temporary, out).map_err(|e| failed(e.to_string())));
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

fn draw(
    out: &Path,
    samples: &[f32],
    sample_rate: u32,
    title: &str,
    (width, height): (u32, u32),
    failed: &dyn Fn(String) -> FoleyError,
) -> Result<()> {
    let seconds = samples.len() as f64 / sample_rate as f64;
    let nyquist_khz = sample_rate as f64 / 2000.0;
    let spectrogram = spectrogram_db(samples);
    let loudest = spectrogram
        .iter()
        .flatten()
        .fold(f64::NEG_INFINITY, |a, b| a.max(*b));
    let root = BitMapBackend::new(out, (width, height)).into_drawing_area();
    root.fill(&RGBColor(24, 24, 24))
        .map_err(|e| failed(e.to_string()))?;
    let root = root
        .titled(title, ("sans-serif", 18).into_font().color(&WHITE))
        .map_err(|e| failed(e.to_string()))?;
    let (upper, lower) = root.split_vertically((height as f32 * 0.62) as u32);
    let axis_style = ("sans-serif", 13).into_font().color(&WHITE);

    let mut chart = ChartBuilder::on(&upper)
        .margin(8)
        .x_label_area_size(24)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..seconds.max(1e-3), 0.0..nyquist_khz)
        .map_err(|e| failed(e.to_string()))?;
    chart
        .configure_mesh()
        .disable_mesh()
        .y_desc("kHz")
        .label_style(axis_style.clone())
        .axis_style(WHITE.mix(0.5))
        .draw()
        .map_err(|e| failed(e.to_string()))?;
    let area = chart.plotting_area();
    let (pixels_x, pixels_y) = area.dim_in_pixel();
    let (frames, bins) = (spectrogram.len(), WINDOW / 2 + 1);
    for px in 0..pixels_x {
        let frame = (px as usize * frames / pixels_x.max(1) as usize).min(frames - 1);
        for py in 0..pixels_y {
            let bin =
                ((pixels_y - 1 - py) as usize * bins / pixels_y.max(1) as usize).min(bins - 1);
            let level = ((spectrogram[frame][bin] - loudest + RANGE_DB) / RANGE_DB) as f32;
            let [r, g, b] = magma(level);
            let x = seconds * px as f64 / pixels_x as f64;
            let y = nyquist_khz * (pixels_y - 1 - py) as f64 / pixels_y as f64;
            area.draw_pixel((x, y), &RGBColor(r, g, b))
                .map_err(|e| failed(e.to_string()))?;
        }
    }

    let mut wave = ChartBuilder::on(&lower)
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..seconds.max(1e-3), -1.0f64..1.0)
        .map_err(|e| failed(e.to_string()))?;
    wave.configure_mesh()
        .disable_mesh()
        .x_desc("seconds")
        .label_style(axis_style)
        .axis_style(WHITE.mix(0.5))
        .draw()
        .map_err(|e| failed(e.to_string()))?;
    let columns = wave.plotting_area().dim_in_pixel().0.max(1) as usize;
    let peaks = super::peaks::peaks(samples, columns.min(samples.len().max(1)));
    let step = seconds / peaks.len().max(1) as f64;
    wave.draw_series(peaks.iter().enumerate().map(|(column, (low, high))| {
        let x = column as f64 * step;
        PathElement::new(
            vec![(x, *low as f64), (x, *high as f64)],
            RGBColor(250, 180, 120),
        )
    }))
    .map_err(|e| failed(e.to_string()))?;
    root.present().map_err(|e| failed(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tone_is_drawn_into_a_png() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("tone.png");
        let tone: Vec<f32> = (0..16_000).map(|n| 0.5 * (n as f32 * 0.3).sin()).collect();
        render_plot(&tone, 16_000, "tone", &out, (640, 400)).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert!(bytes.len() > 2000);
    }

    #[test]
    fn the_loudest_bin_of_a_tone_is_its_frequency() {
        // 0.3 rad/sample at 16 kHz = 764 Hz = bin 764 / (16000 / 1024) ≈ 48.9.
        let tone: Vec<f32> = (0..8_000).map(|n| (n as f32 * 0.3).sin()).collect();
        let frame = &spectrogram_db(&tone)[10];
        let loudest = (0..frame.len())
            .max_by(|a, b| frame[*a].total_cmp(&frame[*b]))
            .unwrap();
        assert!((48..=50).contains(&loudest), "{loudest}");
    }
}
