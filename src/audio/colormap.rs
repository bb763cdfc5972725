//! A perceptually uniform dark-to-bright colour map (magma-like) for spectrograms.

/// Anchor colours at evenly spaced positions of the magma map.
const MAGMA: [[u8; 3]; 9] = [
    [0, 0, 4],
    [28, 16, 68],
    [79, 18, 123],
    [129, 37, 129],
    [181, 54, 122],
    [229, 80, 100],
    [251, 135, 97],
    [254, 194, 135],
    [252, 253, 191],
];

/// Colour of `value` in [0, 1] (clamped), interpolating between the anchors.
pub fn magma(value: f32) -> [u8; 3] {
    let value = if value.is_nan() { 0.0 } else { value };
    let position = value.clamp(0.0, 1.0) * (MAGMA.len() - 1) as f32;
    let index = (position.floor() as usize).min(MAGMA.len() - 2);
    let fraction = position - index as f32;
    let (low, high) = (MAGMA[index], MAGMA[index + 1]);
    std::array::from_fn(|channel| {
        (low[channel] as f32 + (high[channel] as f32 - low[channel] as f32) * fraction).round()
            as u8
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_and_clamping() {
        assert_eq!(magma(0.0), MAGMA[0]);
        assert_eq!(magma(1.0), MAGMA[8]);
        assert_eq!(magma(-3.0), MAGMA[0]);
        assert_eq!(magma(f32::NAN), MAGMA[0]);
    }
}
