//! Reading the sounds a user edits: WAV at any rate, mono or stereo, 16/24-bit PCM or 32-bit
//! float. PCM is scaled by 2^(bits−1) like `torchaudio.load`; anything else is refused with a
//! line that names the file and what is wrong with it.

use std::path::Path;

use hound::SampleFormat;

use crate::engine::pipeline::{InputAudio, MAX_DURATION_SECONDS};
use crate::error::{FoleyError, Result};

pub use crate::engine::dsp::MAX_SAMPLE_RATE;

/// Reads `path` into per-channel samples, checking the header before any sample is read.
pub fn read_input_audio(path: &Path) -> Result<InputAudio> {
    let bad = |reason: String| FoleyError::BadFile {
        path: path.to_path_buf(),
        reason,
    };
    if !path.is_file() {
        return Err(FoleyError::MissingFile {
            path: path.to_path_buf(),
        });
    }
    let mut reader = hound::WavReader::open(path)
        .map_err(|error| bad(format!("not a readable WAV file ({error})")))?;
    let spec = reader.spec();
    let channels = spec.channels as usize;
    if !(1..=2).contains(&channels) {
        return Err(bad(format!(
            "{channels} channels; Foley reads mono or stereo WAV files"
        )));
    }
    if spec.sample_rate == 0 || spec.sample_rate > MAX_SAMPLE_RATE {
        return Err(bad(format!(
            "sample rate {} Hz is outside 1–{MAX_SAMPLE_RATE} Hz",
            spec.sample_rate
        )));
    }
    let frames = reader.duration() as usize;
    if frames == 0 {
        return Err(bad("the file holds no samples".into()));
    }
    let seconds = frames as f64 / spec.sample_rate as f64;
    if seconds > MAX_DURATION_SECONDS {
        return Err(bad(format!(
            "{seconds:.1} s is longer than the {MAX_DURATION_SECONDS} s limit"
        )));
    }
    let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (SampleFormat::Float, 32) => reader
            .samples::<f32>()
            .collect::<std::result::Result<_, _>>(),
        (SampleFormat::Int, bits @ (16 | 24)) => {
            let scale = (1i64 << (bits - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|sample| sample.map(|value| value as f32 / scale))
                .collect()
        }
        (format, bits) => {
            let kind = match format {
                SampleFormat::Float => "float",
                SampleFormat::Int => "PCM",
            };
            return Err(bad(format!(
                "{bits}-bit {kind} samples; Foley reads 16/24-bit PCM or 32-bit float"
            )));
        }
    }
    .map_err(|error| bad(format!("truncated or corrupt sample data ({error})")))?;
    if interleaved.len() != frames * channels {
        return Err(bad(format!(
            "truncated: the header promises {frames} frames, the file holds {}",
            interleaved.len() / channels
        )));
    }
    if interleaved.iter().all(|sample| !sample.is_finite()) {
        return Err(bad("every sample is NaN or infinite".into()));
    }
    if interleaved.iter().any(|sample| !sample.is_finite()) {
        return Err(bad("some samples are NaN or infinite".into()));
    }
    let split = crate::engine::dsp::deinterleave(&interleaved, channels);
    let name = path.display().to_string();
    Ok(InputAudio::new(split, spec.sample_rate, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hound::{WavSpec, WavWriter};

    fn write(path: &Path, channels: u16, bits: u16, format: SampleFormat, frames: usize) {
        write_at(path, 22_050, channels, bits, format, frames);
    }

    fn write_at(
        path: &Path,
        rate: u32,
        channels: u16,
        bits: u16,
        format: SampleFormat,
        frames: usize,
    ) {
        let spec = WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: format,
        };
        let mut writer = WavWriter::create(path, spec).unwrap();
        for index in 0..frames * channels as usize {
            let value = ((index % 50) as f32 / 50.0) - 0.5;
            match format {
                SampleFormat::Float => writer.write_sample(value).unwrap(),
                SampleFormat::Int => {
                    let scale = (1i32 << (bits - 1)) as f32;
                    writer.write_sample((value * scale) as i32).unwrap()
                }
            }
        }
        writer.finalize().unwrap();
    }

    #[test]
    fn reads_pcm_and_float_mono_and_stereo() {
        let dir = tempfile::tempdir().unwrap();
        for (channels, bits, format) in [
            (1, 16, SampleFormat::Int),
            (2, 24, SampleFormat::Int),
            (2, 32, SampleFormat::Float),
        ] {
            let path = dir.path().join(format!("{channels}-{bits}.wav"));
            write(&path, channels, bits, format, 500);
            let audio = read_input_audio(&path).unwrap();
            assert_eq!(audio.channels.len(), channels as usize);
            assert_eq!(audio.frames(), 500);
            assert_eq!(audio.sample_rate, 22_050);
            // Frame 1 of channel 0 is interleaved sample `channels`.
            let expected = channels as f32 / 50.0 - 0.5;
            assert!((audio.channels[0][1] - expected).abs() < 1e-4);
        }
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let dir = tempfile::tempdir().unwrap();
        let eight = dir.path().join("eight.wav");
        write(&eight, 1, 8, SampleFormat::Int, 200);
        let error = read_input_audio(&eight).unwrap_err().to_string();
        assert!(
            error.contains("8-bit") && error.contains("eight.wav"),
            "{error}"
        );

        let surround = dir.path().join("surround.wav");
        write(&surround, 6, 16, SampleFormat::Int, 200);
        assert!(
            read_input_audio(&surround)
                .unwrap_err()
                .to_string()
                .contains("6 channels")
        );

        let text = dir.path().join("notes.wav");
        std::fs::write(&text, "not audio").unwrap();
        assert!(
            read_input_audio(&text)
                .unwrap_err()
                .to_string()
                .contains("not a readable WAV")
        );

        let empty = dir.path().join("empty.wav");
        write(&empty, 1, 16, SampleFormat::Int, 0);
        assert!(
            read_input_audio(&empty)
                .unwrap_err()
                .to_string()
                .contains("no samples")
        );

        let full = dir.path().join("full.wav");
        write(&full, 1, 16, SampleFormat::Int, 1000);
        let bytes = std::fs::read(&full).unwrap();
        let cut = dir.path().join("cut.wav");
        std::fs::write(&cut, &bytes[..bytes.len() - 700]).unwrap();
        assert!(
            read_input_audio(&cut)
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );

        // 301 s at 1 kHz: refused from the header, before the samples are read.
        let long = dir.path().join("long.wav");
        write_at(&long, 1000, 1, 16, SampleFormat::Int, 301_000);
        assert!(
            read_input_audio(&long)
                .unwrap_err()
                .to_string()
                .contains("longer than")
        );

        let missing = dir.path().join("missing.wav");
        assert!(
            read_input_audio(&missing)
                .unwrap_err()
                .to_string()
                .contains("missing")
        );
    }
}
