//! WAV export. Files are written to a temporary sibling and renamed into place, so a failed or
//! interrupted export never leaves a half-written file under the requested name.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use hound::{SampleFormat, WavSpec, WavWriter};

use crate::error::{FoleyError, Result};

/// Sample encoding of an exported WAV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WavFormat {
    /// IEEE float, the pipeline's samples unchanged.
    #[default]
    Float32,
    Pcm16,
    Pcm24,
}

impl std::str::FromStr for WavFormat {
    type Err = FoleyError;

    fn from_str(name: &str) -> Result<Self> {
        match name {
            "f32" => Ok(Self::Float32),
            "pcm16" => Ok(Self::Pcm16),
            "pcm24" => Ok(Self::Pcm24),
            other => Err(FoleyError::InvalidRequest(format!(
                "unknown WAV format '{other}' (f32, pcm16 or pcm24)"
            ))),
        }
    }
}

/// Writes mono `samples` at `sample_rate` to `path` atomically.
pub fn write_wav(path: &Path, samples: &[f32], sample_rate: u32, format: WavFormat) -> Result<()> {
    let failed = |reason: String| FoleyError::Output {
        path: path.to_path_buf(),
        reason,
    };
    let temporary = temporary_sibling(path);
    let result = (|| -> std::result::Result<(), String> {
        let (bits, sample_format) = match format {
            WavFormat::Float32 => (32, SampleFormat::Float),
            WavFormat::Pcm16 => (16, SampleFormat::Int),
            WavFormat::Pcm24 => (24, SampleFormat::Int),
        };
        let spec = WavSpec {
            channels: 1,
            sample_rate,
            bits_per_sample: bits,
            sample_format,
        };
        let file = File::create(&temporary).map_err(|error| error.to_string())?;
        let mut writer =
            WavWriter::new(BufWriter::new(file), spec).map_err(|error| error.to_string())?;
        for sample in samples {
            let written = match format {
                WavFormat::Float32 => writer.write_sample(*sample),
                WavFormat::Pcm16 => writer.write_sample(quantize(*sample, 16) as i16),
                WavFormat::Pcm24 => writer.write_sample(quantize(*sample, 24)),
            };
            written.map_err(|error| error.to_string())?;
        }
        writer.finalize().map_err(|error| error.to_string())?;
        File::open(&temporary)
            .and_then(|file| file.sync_all())
            .map_err(|error| error.to_string())?;
        std::fs::rename(&temporary, path).map_err(|error| error.to_string())
    })();
    if let Err(reason) = result {
        let _ = std::fs::remove_file(&temporary);
        return Err(failed(reason));
    }
    Ok(())
}

/// Rounds a [-1, 1] sample to a signed integer of `bits`, clipping out-of-range values.
fn quantize(sample: f32, bits: u32) -> i32 {
    let peak = ((1i64 << (bits - 1)) - 1) as f32;
    let sample = if sample.is_finite() { sample } else { 0.0 };
    (sample.clamp(-1.0, 1.0) * peak).round() as i32
}

fn temporary_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output.wav".into());
    path.with_file_name(format!(".{name}.{}.partial", std::process::id()))
}

/// Reads a mono WAV back as f32 samples in [-1, 1] and its sample rate.
pub fn read_wav(path: &Path) -> Result<(Vec<f32>, u32)> {
    let failed = |reason: String| FoleyError::BadFile {
        path: path.to_path_buf(),
        reason,
    };
    let mut reader = hound::WavReader::open(path).map_err(|error| failed(error.to_string()))?;
    let spec = reader.spec();
    let samples = match spec.sample_format {
        SampleFormat::Float => reader
            .samples::<f32>()
            .collect::<std::result::Result<Vec<_>, _>>(),
        SampleFormat::Int => {
            let peak = ((1i64 << (spec.bits_per_sample - 1)) - 1) as f32;
            reader
                .samples::<i32>()
                .map(|sample| sample.map(|value| value as f32 / peak))
                .collect()
        }
    }
    .map_err(|error| failed(error.to_string()))?;
    Ok((samples, spec.sample_rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_round_trip_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clip.wav");
        let samples = vec![0.0, 0.5, -0.25, 1e-7, -1.0];
        write_wav(&path, &samples, 16_000, WavFormat::Float32).unwrap();
        let (read, rate) = read_wav(&path).unwrap();
        assert_eq!(rate, 16_000);
        assert_eq!(read, samples);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temporary file left behind");
    }

    #[test]
    fn pcm_clips_and_rounds() {
        assert_eq!(quantize(2.0, 16), 32767);
        assert_eq!(quantize(-2.0, 16), -32767);
        assert_eq!(quantize(0.5, 24), 4_194_304);
        assert_eq!(quantize(f32::NAN, 16), 0);
    }

    #[test]
    fn unwritable_path_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-folder").join("clip.wav");
        let error = write_wav(&path, &[0.0], 16_000, WavFormat::Pcm16).unwrap_err();
        assert!(error.to_string().contains("clip.wav"), "{error}");
        assert!(!path.exists());
    }
}
