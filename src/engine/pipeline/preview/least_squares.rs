//! Ridge least squares for the preview fit: centred normal equations solved by Cholesky in f64,
//! the ridge picked by exact leave-one-out error. Systems are (latent channels)² — at most
//! 256×256 (Stable Audio 3's SAME) — so everything is dense and direct.

use crate::error::{FoleyError, Result};

/// Ridge candidates relative to the mean diagonal of the centred `XᵀX`. Leave-one-out picks a
/// small one for plentiful, well-spread data and a larger one when the probes excite some latent
/// directions only faintly or have fewer frames than the latents have channels.
pub(crate) const RIDGES: [f64; 6] = [1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0];

/// An affine map `y = Wᵀx + b`.
pub(crate) struct LinearFit {
    /// (inputs × outputs) row-major.
    pub weights: Vec<f64>,
    pub bias: Vec<f64>,
}

/// Fits `targets` (rows × outputs) on `inputs` (rows × width), both row-major, minimising
/// `‖Y − XW − b‖² + λ‖W‖²` (the bias is not penalised), with `λ = r ·` the mean diagonal of the
/// centred `XᵀX`, for the `r` in `ridges` of least leave-one-out error (any one when alone).
pub(crate) fn least_squares(
    inputs: &[f64],
    targets: &[f64],
    width: usize,
    outputs: usize,
    ridges: &[f64],
) -> Result<LinearFit> {
    let rows = inputs.len().checked_div(width).unwrap_or(0);
    if rows == 0
        || outputs == 0
        || inputs.len() != rows * width
        || targets.len() != rows * outputs
        || ridges.is_empty()
    {
        return Err(FoleyError::Unsupported(format!(
            "step preview: cannot fit {} inputs of width {width} to {} targets of width {outputs}",
            inputs.len(),
            targets.len()
        )));
    }
    let (input_mean, x) = centred(inputs, width);
    let (target_mean, y) = centred(targets, outputs);
    let mut gram = vec![0f64; width * width];
    let mut cross = vec![0f64; width * outputs];
    for (input, target) in x.chunks_exact(width).zip(y.chunks_exact(outputs)) {
        for (i, &xi) in input.iter().enumerate() {
            for (slot, &xj) in gram[i * width..(i + 1) * width].iter_mut().zip(input) {
                *slot += xi * xj;
            }
            for (slot, &yo) in cross[i * outputs..(i + 1) * outputs].iter_mut().zip(target) {
                *slot += xi * yo;
            }
        }
    }
    let scale = (0..width).map(|i| gram[i * width + i]).sum::<f64>() / width as f64;
    let mut best: Option<(f64, Vec<f64>)> = None;
    for &ridge in ridges {
        // A tiny floor keeps constant inputs (zero variance) solvable: their weights come out 0.
        let lambda = (ridge * scale).max(1e-12);
        let mut system = gram.clone();
        for i in 0..width {
            system[i * width + i] += lambda;
        }
        let factor = Cholesky::new(system, width)?;
        let mut weights = cross.clone();
        factor.solve(&mut weights, outputs);
        let error = if ridges.len() == 1 {
            0.0
        } else {
            leave_one_out_error(&factor, &weights, &x, &y, width, outputs)
        };
        if best.as_ref().is_none_or(|(least, _)| error < *least) {
            best = Some((error, weights));
        }
    }
    let (_, weights) = best.ok_or_else(|| FoleyError::Unsupported("no ridge to try".into()))?;
    let bias = (0..outputs)
        .map(|o| {
            target_mean[o]
                - (0..width)
                    .map(|i| weights[i * outputs + o] * input_mean[i])
                    .sum::<f64>()
        })
        .collect();
    Ok(LinearFit { weights, bias })
}

/// Column means of a (rows × columns) matrix and the matrix minus them.
fn centred(values: &[f64], columns: usize) -> (Vec<f64>, Vec<f64>) {
    let rows = values.len() / columns;
    let mut means = vec![0f64; columns];
    for row in values.chunks_exact(columns) {
        means.iter_mut().zip(row).for_each(|(mean, &v)| *mean += v);
    }
    means.iter_mut().for_each(|mean| *mean /= rows as f64);
    let centred = values
        .chunks_exact(columns)
        .flat_map(|row| row.iter().zip(&means).map(|(&v, &m)| v - m))
        .collect();
    (means, centred)
}

/// PRESS: the sum of squared residuals each row would have had if left out of the fit,
/// `rᵢ / (1 − hᵢ)` with leverage `hᵢ = xᵢᵀ(XᵀX + λI)⁻¹xᵢ + 1/rows` (the mean is fitted too).
fn leave_one_out_error(
    factor: &Cholesky,
    weights: &[f64],
    x: &[f64],
    y: &[f64],
    width: usize,
    outputs: usize,
) -> f64 {
    let rows = x.len() / width;
    let mut solved = vec![0f64; width];
    let mut total = 0.0;
    for (input, target) in x.chunks_exact(width).zip(y.chunks_exact(outputs)) {
        solved.copy_from_slice(input);
        factor.solve(&mut solved, 1);
        let leverage =
            input.iter().zip(&solved).map(|(a, b)| a * b).sum::<f64>() + 1.0 / rows as f64;
        // A row that alone determines the fit (leverage 1) cannot be predicted without itself.
        let keep = (1.0 - leverage).max(1e-9);
        for (o, &wanted) in target.iter().enumerate() {
            let predicted: f64 = (0..width)
                .map(|i| input[i] * weights[i * outputs + o])
                .sum();
            total += ((wanted - predicted) / keep).powi(2);
        }
    }
    total
}

/// The lower-triangular `L` of a symmetric positive definite `A = LLᵀ` (n × n, row-major).
struct Cholesky {
    lower: Vec<f64>,
    n: usize,
}

impl Cholesky {
    fn new(mut a: Vec<f64>, n: usize) -> Result<Self> {
        for j in 0..n {
            let diagonal = a[j * n + j] - (0..j).map(|k| a[j * n + k].powi(2)).sum::<f64>();
            if !(diagonal > 0.0 && diagonal.is_finite()) {
                return Err(FoleyError::NonFinite(
                    "step preview: the probes' latents are degenerate (the fit's normal \
                     equations are not positive definite)"
                        .into(),
                ));
            }
            let root = diagonal.sqrt();
            a[j * n + j] = root;
            for i in j + 1..n {
                // Reads the upper triangle of A (still unfactored) and the finished rows of L.
                let value = a[j * n + i] - (0..j).map(|k| a[i * n + k] * a[j * n + k]).sum::<f64>();
                a[i * n + j] = value / root;
            }
        }
        Ok(Self { lower: a, n })
    }

    /// Overwrites `b` (n × m, row-major) with `A⁻¹b`: `Ly = b`, then `Lᵀx = y`.
    fn solve(&self, b: &mut [f64], m: usize) {
        let (lower, n) = (&self.lower, self.n);
        for column in 0..m {
            for i in 0..n {
                let value = b[i * m + column]
                    - (0..i)
                        .map(|k| lower[i * n + k] * b[k * m + column])
                        .sum::<f64>();
                b[i * m + column] = value / lower[i * n + i];
            }
            for i in (0..n).rev() {
                let value = b[i * m + column]
                    - (i + 1..n)
                        .map(|k| lower[k * n + i] * b[k * m + column])
                        .sum::<f64>();
                b[i * m + column] = value / lower[i * n + i];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Uniform numbers in [−1, 1) from a fixed seed.
    fn numbers(seed: u64) -> impl FnMut() -> f64 {
        let mut state = seed;
        move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        }
    }

    /// Inputs, the targets of a known affine map of them, and that map (weights, then bias).
    fn affine(rows: usize, width: usize, outputs: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let mut next = numbers(12345);
        let weights: Vec<f64> = (0..width * outputs).map(|_| next() * 3.0).collect();
        let bias: Vec<f64> = (0..outputs).map(|o| o as f64 - 2.0).collect();
        let inputs: Vec<f64> = (0..rows * width).map(|_| next() * 5.0 + 1.0).collect();
        let targets = inputs
            .chunks_exact(width)
            .flat_map(|x| {
                (0..outputs).map(|o| {
                    bias[o]
                        + (0..width)
                            .map(|i| x[i] * weights[i * outputs + o])
                            .sum::<f64>()
                })
            })
            .collect();
        let mut truth = weights;
        truth.extend(bias);
        (inputs, targets, truth)
    }

    fn worst_error(fit: &LinearFit, truth: &[f64]) -> f64 {
        fit.weights
            .iter()
            .chain(&fit.bias)
            .zip(truth)
            .map(|(a, b)| (a - b).abs())
            .fold(0f64, f64::max)
    }

    #[test]
    fn recovers_a_known_affine_map() {
        let (width, outputs) = (8, 16);
        let (inputs, targets, truth) = affine(200, width, outputs);
        let exact = least_squares(&inputs, &targets, width, outputs, &[0.0]).unwrap();
        assert!(worst_error(&exact, &truth) < 1e-9);
        // Noise-free data: leave-one-out picks the smallest ridge, which barely moves the map.
        let chosen = least_squares(&inputs, &targets, width, outputs, &RIDGES).unwrap();
        assert!(worst_error(&chosen, &truth) < 1e-4);
    }

    #[test]
    fn leave_one_out_damps_directions_the_data_barely_excites() {
        // 40 channels that mix 3 underlying factors plus faint channel noise, 50 noisy rows,
        // the target one of the factors (like latents, whose channels are far from
        // independent): the least ridge fits the noise through the faint directions; the
        // chosen one predicts fresh rows much better.
        let (width, factors) = (40, 3);
        let mut next = numbers(7);
        let mixing: Vec<f64> = (0..factors * width).map(|_| next()).collect();
        let mut sample = |rows: usize| {
            let (mut inputs, mut targets) = (Vec::new(), Vec::new());
            for _ in 0..rows {
                let z: Vec<f64> = (0..factors).map(|_| next()).collect();
                for channel in 0..width {
                    let mixed: f64 = (0..factors)
                        .map(|f| z[f] * mixing[f * width + channel])
                        .sum();
                    inputs.push(mixed + 0.01 * next());
                }
                targets.push(z[0] + 0.3 * next());
            }
            (inputs, targets)
        };
        let (inputs, targets) = sample(50);
        let (fresh_inputs, fresh_targets) = sample(500);
        let error = |fit: &LinearFit| -> f64 {
            fresh_inputs
                .chunks_exact(width)
                .zip(&fresh_targets)
                .map(|(x, y)| {
                    let predicted =
                        fit.bias[0] + x.iter().zip(&fit.weights).map(|(a, w)| a * w).sum::<f64>();
                    (y - predicted).powi(2)
                })
                .sum()
        };
        let least = least_squares(&inputs, &targets, width, 1, &RIDGES[..1]).unwrap();
        let chosen = least_squares(&inputs, &targets, width, 1, &RIDGES).unwrap();
        assert!(
            error(&chosen) < 0.5 * error(&least),
            "{} vs {}",
            error(&chosen),
            error(&least)
        );
    }

    #[test]
    fn constant_channels_get_no_weight_and_bad_shapes_are_refused() {
        // Channel 1 never varies: its weight is 0 and the bias absorbs it.
        let inputs: Vec<f64> = (0..50).flat_map(|n| [n as f64, 7.0]).collect();
        let targets: Vec<f64> = (0..50).map(|n| 2.0 * n as f64 + 1.0).collect();
        let fit = least_squares(&inputs, &targets, 2, 1, &[0.0]).unwrap();
        assert!((fit.weights[0] - 2.0).abs() < 1e-9 && fit.weights[1].abs() < 1e-9);
        assert!((fit.bias[0] - 1.0).abs() < 1e-9);
        assert!(least_squares(&inputs, &targets[..49], 2, 1, &[0.0]).is_err());
        assert!(least_squares(&[], &[], 2, 1, &[0.0]).is_err());
        assert!(least_squares(&inputs, &targets, 2, 1, &[]).is_err());
    }
}
