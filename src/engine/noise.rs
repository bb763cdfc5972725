//! Random numbers that equal `torch.Generator("cpu").manual_seed(seed)` bit for bit.
//!
//! Seeds must reproduce diffusers results, so this follows torch 2.15's CPU path exactly
//! (spec: `shared/research/torch_randn.md`): MT19937 seeded with the low 32 bits, float32
//! uniforms from 24 bits of one draw, and Box-Muller over blocks of 16 using the Cephes
//! polynomials and FMA sites of torch's AVX2 kernel. Tensors with fewer than 16 elements take
//! torch's scalar double path, which keeps a spare normal inside the generator.

const STATE_WORDS: usize = 624;
const SHIFT_WORDS: usize = 397;
const MATRIX_A: u32 = 0x9908_B0DF;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7FFF_FFFF;

/// A CPU generator with torch's state: Mersenne Twister plus the cached spare normal.
#[derive(Clone, Debug)]
pub struct TorchGenerator {
    state: [u32; STATE_WORDS],
    /// Index of the next word to hand out; `STATE_WORDS` means a twist is due.
    next: usize,
    /// The second Box-Muller output of the scalar double path, kept for the next call.
    spare_normal: Option<f64>,
}

impl TorchGenerator {
    /// Equivalent of `torch.Generator("cpu").manual_seed(seed)`; torch keeps only the low 32 bits.
    pub fn new(seed: u64) -> Self {
        let mut state = [0u32; STATE_WORDS];
        state[0] = seed as u32;
        for index in 1..STATE_WORDS {
            let previous = state[index - 1];
            state[index] = 1_812_433_253u32
                .wrapping_mul(previous ^ (previous >> 30))
                .wrapping_add(index as u32);
        }
        Self {
            state,
            next: STATE_WORDS,
            spare_normal: None,
        }
    }

    fn twist(&mut self) {
        for index in 0..STATE_WORDS {
            let y = (self.state[index] & UPPER_MASK)
                | (self.state[(index + 1) % STATE_WORDS] & LOWER_MASK);
            let mut value = self.state[(index + SHIFT_WORDS) % STATE_WORDS] ^ (y >> 1);
            if y & 1 != 0 {
                value ^= MATRIX_A;
            }
            self.state[index] = value;
        }
        self.next = 0;
    }

    /// One tempered 32-bit output (`random()` in torch).
    pub fn next_u32(&mut self) -> u32 {
        if self.next >= STATE_WORDS {
            self.twist();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9D2C_5680;
        y ^= (y << 15) & 0xEFC6_0000;
        y ^= y >> 18;
        y
    }

    fn uniform_f32(&mut self) -> f32 {
        (self.next_u32() & 0x00FF_FFFF) as f32 * (1.0 / 16_777_216.0)
    }

    fn uniform_f64(&mut self) -> f64 {
        let high = self.next_u32() as u64;
        let low = self.next_u32() as u64;
        (((high << 32) | low) & 0x001F_FFFF_FFFF_FFFF) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// `torch.randn(numel, generator=self)` in float32, continuing the stream.
    pub fn randn_f32(&mut self, numel: usize) -> Vec<f32> {
        if numel < 16 {
            return (0..numel).map(|_| self.scalar_normal() as f32).collect();
        }
        let mut data: Vec<f32> = (0..numel).map(|_| self.uniform_f32()).collect();
        for block in data.chunks_exact_mut(16) {
            box_muller_block_f32(block);
        }
        if !numel.is_multiple_of(16) {
            // torch redraws the last 16 values, overwriting some finished outputs.
            let tail = &mut data[numel - 16..];
            for value in tail.iter_mut() {
                *value = self.uniform_f32();
            }
            box_muller_block_f32(tail);
        }
        data
    }

    /// `torch.randn(numel, dtype=float64, generator=self)`, continuing the stream.
    pub fn randn_f64(&mut self, numel: usize) -> Vec<f64> {
        if numel < 16 {
            return (0..numel).map(|_| self.scalar_normal()).collect();
        }
        let mut data: Vec<f64> = (0..numel).map(|_| self.uniform_f64()).collect();
        for block in data.chunks_exact_mut(16) {
            box_muller_block_f64(block);
        }
        if !numel.is_multiple_of(16) {
            let tail = &mut data[numel - 16..];
            for value in tail.iter_mut() {
                *value = self.uniform_f64();
            }
            box_muller_block_f64(tail);
        }
        data
    }

    /// torch's `normal_distribution<double>` with the generator-held spare.
    fn scalar_normal(&mut self) -> f64 {
        if let Some(spare) = self.spare_normal.take() {
            return spare;
        }
        let angle_uniform = self.uniform_f64();
        let radius_uniform = self.uniform_f64();
        let radius = (-2.0 * (-radius_uniform).ln_1p()).sqrt();
        let angle = 2.0 * std::f64::consts::PI * angle_uniform;
        self.spare_normal = Some(radius * angle.sin());
        radius * angle.cos()
    }
}

fn box_muller_block_f64(block: &mut [f64]) {
    for lane in 0..8 {
        let u1 = 1.0 - block[lane];
        let u2 = block[lane + 8];
        let radius = (-2.0 * u1.ln()).sqrt();
        let angle = 2.0 * std::f64::consts::PI * u2;
        block[lane] = (radius * angle.cos()).mul_add(1.0, 0.0);
        block[lane + 8] = (radius * angle.sin()).mul_add(1.0, 0.0);
    }
}

/// One 16-value block of torch's AVX2 `NormalFill16<float>`; lanes are independent.
fn box_muller_block_f32(block: &mut [f32]) {
    for lane in 0..8 {
        let radius = cephes_radius(1.0 - block[lane]);
        let (sin, cos) = cephes_sincos(TWO_PI * block[lane + 8]);
        // `+ 0.0` is torch's `fma(.., std, mean)`: it turns -0.0 into +0.0.
        block[lane] = (radius * cos).mul_add(1.0, 0.0);
        block[lane + 8] = (radius * sin).mul_add(1.0, 0.0);
    }
}

const TWO_PI: f32 = f32::from_bits(0x40C9_0FDB);
const SQRT_HALF: f32 = f32::from_bits(0x3F35_04F3);
const LOG_POLY: [u32; 9] = [
    0x3D90_21BB,
    0xBDEB_D1B8,
    0x3DEF_251A,
    0xBDFE_5D4F,
    0x3E11_E9BF,
    0xBE2A_AE50,
    0x3E4C_CEAC,
    0xBE7F_FFFC,
    0x3EAA_AAAA,
];
const LOG_Q1: f32 = f32::from_bits(0xB95E_8083);
const LOG_Q2: f32 = f32::from_bits(0x3F31_8000);

/// `sqrt(-2 ln u)` with Cephes `log256_ps`, FMAs exactly where the compiled kernel has them.
fn cephes_radius(u: f32) -> f32 {
    let x = u.max(f32::from_bits(0x0080_0000));
    let exponent_bits = ((x.to_bits() >> 23) as i32) - 127;
    let mut x = f32::from_bits((x.to_bits() & 0x807F_FFFF) | 0x3F00_0000);
    let mut exponent = exponent_bits as f32 + 1.0;
    let below_sqrt_half = x < SQRT_HALF;
    let correction = if below_sqrt_half { x } else { 0.0 };
    x -= 1.0;
    exponent -= if below_sqrt_half { 1.0 } else { 0.0 };
    x += correction;
    let z = x * x;
    let mut y = f32::from_bits(LOG_POLY[0]).mul_add(x, f32::from_bits(LOG_POLY[1]));
    for coefficient in &LOG_POLY[2..] {
        y = y.mul_add(x, f32::from_bits(*coefficient));
    }
    y *= x;
    y = y.mul_add(z, exponent * LOG_Q1);
    y = z.mul_add(-0.5, y);
    x += y;
    let log = exponent.mul_add(LOG_Q2, x);
    (log * -2.0).sqrt()
}

const FOUR_OVER_PI: f32 = f32::from_bits(0x3FA2_F983);
const MINUS_DP: [u32; 3] = [0xBF49_0000, 0xB97D_A000, 0xB322_2169];
const COS_POLY: [u32; 3] = [0x37CC_F5CE, 0xBAB6_061A, 0x3D2A_AAA5];
const SIN_POLY: [u32; 3] = [0xB94C_A1F9, 0x3C08_839E, 0xBE2A_AAA3];

/// Cephes `sincos256_ps` for one lane; returns (sin, cos).
fn cephes_sincos(theta: f32) -> (f32, f32) {
    let mut sin_sign = theta.to_bits() & 0x8000_0000;
    let mut x = theta.abs();
    let mut octant = (x * FOUR_OVER_PI) as i32;
    octant = (octant + 1) & !1;
    let octant_f = octant as f32;
    let swap_sign = ((octant & 4) as u32) << 29;
    let use_sin_poly_for_sin = (octant & 2) == 0;
    for reduction in MINUS_DP {
        x = octant_f.mul_add(f32::from_bits(reduction), x);
    }
    let cos_sign = ((!(octant - 2) & 4) as u32) << 29;
    sin_sign ^= swap_sign;
    let z = x * x;
    let half_z = z * 0.5;
    let mut cos_poly = f32::from_bits(COS_POLY[0]).mul_add(z, f32::from_bits(COS_POLY[1]));
    cos_poly = cos_poly.mul_add(z, f32::from_bits(COS_POLY[2]));
    cos_poly *= z;
    cos_poly = z.mul_add(cos_poly, -half_z);
    cos_poly += 1.0;
    let mut sin_poly = f32::from_bits(SIN_POLY[0]).mul_add(z, f32::from_bits(SIN_POLY[1]));
    sin_poly = sin_poly.mul_add(z, f32::from_bits(SIN_POLY[2]));
    sin_poly *= z;
    sin_poly = sin_poly.mul_add(x, x);
    let (sin_part, cos_part) = if use_sin_poly_for_sin {
        (sin_poly, 0.0f32)
    } else {
        (0.0f32, cos_poly)
    };
    let sin_rest = sin_poly - sin_part;
    let cos_rest = cos_poly - cos_part;
    let sin = f32::from_bits((cos_part + sin_part).to_bits() ^ sin_sign);
    let cos = f32::from_bits((sin_rest + cos_rest).to_bits() ^ cos_sign);
    (sin, cos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_matches_torch_test_vectors() {
        let mut generator = TorchGenerator::new(42);
        let words: Vec<u32> = (0..4).map(|_| generator.next_u32()).collect();
        assert_eq!(words, [0x5fe1dc66, 0xcbea3db3, 0xf362035c, 0x2ef5950e]);
        let mut generator = TorchGenerator::new(0);
        assert_eq!(generator.next_u32(), 0x8c7f0aac);
    }

    #[test]
    fn only_low_32_bits_of_the_seed_count() {
        let a = TorchGenerator::new((1 << 32) + 5).randn_f32(40);
        let b = TorchGenerator::new(5).randn_f32(40);
        assert_eq!(a, b);
    }

    #[test]
    fn randn_matches_published_values() {
        let values = TorchGenerator::new(42).randn_f32(16);
        let bits: Vec<u32> = values[..4].iter().map(|v| v.to_bits()).collect();
        assert_eq!(bits, [0x3FF6A529, 0x3FBE5F53, 0x3F669567, 0xC006C0DB]);
        let single = TorchGenerator::new(42).randn_f32(1);
        assert_eq!(single[0].to_bits(), 0x3EAC62AE);
    }
}
