//! A log-mel spectrogram as an image for the clip view.

use eframe::egui::{Color32, ColorImage};

use crate::audio::colormap::magma;

/// A log-mel (frames × bins) as an image: time left to right, low bins at the bottom, the
/// value range mapped onto the colour map. Neither side exceeds `max_side` pixels: each pixel
/// then shows the loudest value of the frames and bins it covers, so short clicks stay visible.
pub fn spectrogram_image(mel: &[f32], bins: usize, max_side: usize) -> Option<ColorImage> {
    if bins == 0 || mel.len() < bins || max_side == 0 {
        return None;
    }
    let frames = mel.len() / bins;
    let finite = mel.iter().copied().filter(|value| value.is_finite());
    let (low, high) = finite.fold((f32::INFINITY, f32::NEG_INFINITY), |(low, high), value| {
        (low.min(value), high.max(value))
    });
    let span = (high - low).max(1e-6);
    let (width, height) = (frames.min(max_side), bins.min(max_side));
    // Pixel `index` of `pixels` covers source items [start, end) of `items`.
    let span_of = |index: usize, pixels: usize, items: usize| {
        (index * items / pixels)..((index + 1) * items / pixels)
    };
    let mut pixels = Vec::with_capacity(width * height);
    for row in 0..height {
        // Row 0 is the top: the highest bins.
        let bin_range = span_of(height - 1 - row, height, bins);
        for column in 0..width {
            // NaN as the start: `max` skips NaN, so a block that is all NaN stays NaN.
            let value = span_of(column, width, frames)
                .flat_map(|frame| {
                    &mel[frame * bins + bin_range.start..frame * bins + bin_range.end]
                })
                .fold(f32::NAN, |loudest, value| loudest.max(*value));
            let [r, g, b] = magma((value - low) / span);
            pixels.push(Color32::from_rgb(r, g, b));
        }
    }
    Some(ColorImage::new([width, height], pixels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spectrogram_puts_low_bins_at_the_bottom() {
        // 2 frames × 2 bins: bin 0 quiet, bin 1 loud.
        let image = spectrogram_image(&[0.0, 1.0, 0.0, 1.0], 2, 2048).unwrap();
        assert_eq!(image.size, [2, 2]);
        let top = image.pixels[0];
        let bottom = image.pixels[2];
        assert!(top.r() > bottom.r(), "loud bin 1 should be on top");
    }

    #[test]
    fn a_long_spectrogram_fits_the_largest_texture_and_keeps_its_peaks() {
        let (frames, bins) = (20_000, 8);
        let mut mel = vec![0.0; frames * bins];
        // One loud frame, in the top bin, in the middle of the clip.
        mel[12_345 * bins + bins - 1] = 1.0;
        let image = spectrogram_image(&mel, bins, 16_384).unwrap();
        assert_eq!(image.size, [16_384, bins]);
        let loud = magma(1.0);
        let top_row = &image.pixels[..16_384];
        let marked: Vec<usize> = (0..16_384)
            .filter(|&column| top_row[column] == Color32::from_rgb(loud[0], loud[1], loud[2]))
            .collect();
        assert_eq!(marked.len(), 1, "the click shows in exactly one column");
        let expected = 12_345 * 16_384 / frames;
        assert!(
            marked[0].abs_diff(expected) <= 1,
            "{marked:?} vs {expected}"
        );
    }

    #[test]
    fn both_sides_are_capped() {
        let image = spectrogram_image(&vec![0.5; 300 * 40], 40, 16).unwrap();
        assert_eq!(image.size, [16, 16]);
        assert_eq!(image.pixels.len(), 16 * 16);
    }
}
