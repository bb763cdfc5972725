//! Copies of short runs whose usual length is known: a group of Winograd tiles, a run of
//! bf16 pairs.
//!
//! `copy_from_slice` of a length known only at run time is a `memcpy` call, which for 64 bytes
//! costs more than the copy; the transforms and packers that made one per run spent 2–3 % of a
//! bf16 UNet step in it.

/// `src` into the start of `dst`. When `src` holds exactly `N` values the copy has a fixed
/// size and compiles to vector moves; a shorter one (a last, partial run) is copied out of
/// line, so that the compiler cannot fold both into one `memcpy` of unknown length.
#[inline(always)]
pub fn copy_run<T: Copy, const N: usize>(dst: &mut [T], src: &[T]) {
    let dst = &mut dst[..src.len()];
    match <&[T; N]>::try_from(src) {
        Ok(whole) => *<&mut [T; N]>::try_from(dst).expect("as long as `src`") = *whole,
        Err(_) => copy_part(dst, src),
    }
}

#[inline(never)]
fn copy_part<T: Copy>(dst: &mut [T], src: &[T]) {
    dst.copy_from_slice(src);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whole and partial runs land at the start of `dst`, and nothing past them is touched.
    #[test]
    fn runs_land_whole_or_partial() {
        let source: Vec<u16> = (1..=4).collect();
        for len in 0..=4 {
            let mut dst = [9u16; 6];
            copy_run::<u16, 4>(&mut dst, &source[..len]);
            assert_eq!(dst[..len], source[..len], "{len} values");
            assert!(dst[len..].iter().all(|&value| value == 9), "{len} values");
        }
    }
}
