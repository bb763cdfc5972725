//! Waveform overview: the (min, max) envelope a waveform view or picture draws per column.

/// (min, max) of the samples falling in each of `columns` equal slices (each slice also
/// includes the sample before it).
pub fn peaks(samples: &[f32], columns: usize) -> Vec<(f32, f32)> {
    if samples.is_empty() || columns == 0 {
        return Vec::new();
    }
    (0..columns)
        .map(|column| {
            let start = column * samples.len() / columns;
            let end = ((column + 1) * samples.len() / columns)
                .max(start + 1)
                .min(samples.len());
            // Starting one sample early joins neighbouring columns into a continuous trace.
            samples[start.min(samples.len() - 1).saturating_sub(1)..end]
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(low, high), value| {
                    (low.min(*value), high.max(*value))
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_cover_every_sample() {
        let samples = [0.0, 1.0, -1.0, 0.5];
        assert_eq!(peaks(&samples, 2), vec![(0.0, 1.0), (-1.0, 1.0)]);
        assert_eq!(peaks(&samples, 8).len(), 8);
        assert!(peaks(&[], 4).is_empty());
    }
}
