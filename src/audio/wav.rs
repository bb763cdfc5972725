//! WAV files. They are encoded in memory and written atomically (temporary sibling, fsync,
//! rename), so a failed or interrupted export never leaves a half-written file; exports can
//! carry the prompt and settings as BWF `bext` and RIFF INFO metadata.

use std::io::Cursor;
use std::path::Path;

use hound::{SampleFormat, WavSpec, WavWriter};

use crate::atomic_file::write_atomic;
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

/// Text embedded in an exported WAV: a BWF `bext` chunk (EBU Tech 3285) and a RIFF
/// `LIST/INFO` chunk, which DAWs and file browsers show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WavMetadata {
    /// `bext` Description (≤ 256 ASCII bytes; longer text is cut).
    pub description: String,
    /// `bext` Originator (≤ 32).
    pub originator: String,
    /// `bext` OriginationDate, `yyyy-mm-dd`.
    pub date: String,
    /// `bext` OriginationTime, `hh:mm:ss`.
    pub time: String,
    /// INFO `INAM`.
    pub title: String,
    /// INFO `ICMT`: the full prompt and settings.
    pub comment: String,
    /// INFO `ISFT`.
    pub software: String,
    /// The `bext` version 2 loudness fields, when measured.
    pub loudness: Option<BextLoudness>,
}

/// EBU Tech 3285 version 2 loudness fields, in hundredths (LUFS, LU, dBTP) as the chunk stores
/// them; `UNSET` where a measure is undefined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BextLoudness {
    pub loudness_value: i16,
    pub loudness_range: i16,
    pub max_true_peak_level: i16,
    pub max_momentary_loudness: i16,
    pub max_short_term_loudness: i16,
}

impl BextLoudness {
    /// The value the specification gives a field that was not measured.
    pub const UNSET: i16 = 0x7fff;

    fn fields(&self) -> [i16; 5] {
        [
            self.loudness_value,
            self.loudness_range,
            self.max_true_peak_level,
            self.max_momentary_loudness,
            self.max_short_term_loudness,
        ]
    }
}

impl From<&crate::audio::loudness::Loudness> for BextLoudness {
    fn from(loudness: &crate::audio::loudness::Loudness) -> Self {
        let hundredths = |value: Option<f64>| {
            value.map_or(Self::UNSET, |value| {
                (value * 100.0).round().clamp(-32_768.0, 32_766.0) as i16
            })
        };
        Self {
            loudness_value: hundredths(loudness.integrated_lufs),
            loudness_range: hundredths(loudness.range_lu),
            max_true_peak_level: hundredths(loudness.true_peak_dbtp),
            max_momentary_loudness: hundredths(loudness.momentary_max_lufs),
            max_short_term_loudness: hundredths(loudness.short_term_max_lufs),
        }
    }
}

/// Writes mono `samples` at `sample_rate` to `path` atomically.
pub fn write_wav(path: &Path, samples: &[f32], sample_rate: u32, format: WavFormat) -> Result<()> {
    write_wav_with_metadata(path, samples, 1, sample_rate, format, None)
}

/// Writes `samples` (frames of `channels` interleaved samples) with optional metadata
/// chunks, atomically.
pub fn write_wav_with_metadata(
    path: &Path,
    samples: &[f32],
    channels: u16,
    sample_rate: u32,
    format: WavFormat,
    metadata: Option<&WavMetadata>,
) -> Result<()> {
    let bytes = encode_wav(samples, channels, sample_rate, format, metadata).map_err(|reason| {
        FoleyError::Output {
            path: path.to_path_buf(),
            reason,
        }
    })?;
    write_atomic(path, &bytes)
}

/// The whole WAV file in memory: hound's RIFF/fmt/data, plus `bext` before the data and
/// `LIST/INFO` after it when metadata is given.
fn encode_wav(
    samples: &[f32],
    channels: u16,
    sample_rate: u32,
    format: WavFormat,
    metadata: Option<&WavMetadata>,
) -> std::result::Result<Vec<u8>, String> {
    let (bits, sample_format) = match format {
        WavFormat::Float32 => (32, SampleFormat::Float),
        WavFormat::Pcm16 => (16, SampleFormat::Int),
        WavFormat::Pcm24 => (24, SampleFormat::Int),
    };
    if channels == 0 || !samples.len().is_multiple_of(channels as usize) {
        return Err(format!(
            "{} samples do not make whole frames of {channels} channels",
            samples.len()
        ));
    }
    let spec = WavSpec {
        channels,
        sample_rate,
        bits_per_sample: bits,
        sample_format,
    };
    let mut cursor = Cursor::new(Vec::new());
    {
        let mut writer = WavWriter::new(&mut cursor, spec).map_err(|error| error.to_string())?;
        for sample in samples {
            let written = match format {
                WavFormat::Float32 => writer.write_sample(*sample),
                WavFormat::Pcm16 => writer.write_sample(quantize(*sample, 16) as i16),
                WavFormat::Pcm24 => writer.write_sample(quantize(*sample, 24)),
            };
            written.map_err(|error| error.to_string())?;
        }
        writer.finalize().map_err(|error| error.to_string())?;
    }
    let plain = cursor.into_inner();
    let Some(metadata) = metadata else {
        return Ok(plain);
    };
    let chunks = split_chunks(&plain)?;
    let mut body = b"WAVE".to_vec();
    for (id, data) in &chunks {
        if id == b"data" {
            push_chunk(&mut body, b"bext", &bext_chunk(metadata));
        }
        push_chunk(&mut body, id, data);
    }
    push_chunk(&mut body, b"LIST", &info_chunk(metadata));
    let mut file = b"RIFF".to_vec();
    file.extend_from_slice(&(body.len() as u32).to_le_bytes());
    file.extend_from_slice(&body);
    Ok(file)
}

/// A RIFF chunk: four-character id and data.
type Chunk = ([u8; 4], Vec<u8>);

/// The (id, data) chunks of a RIFF/WAVE file.
fn split_chunks(file: &[u8]) -> std::result::Result<Vec<Chunk>, String> {
    if file.len() < 12 || &file[..4] != b"RIFF" || &file[8..12] != b"WAVE" {
        return Err("not a RIFF/WAVE file".into());
    }
    let mut chunks = Vec::new();
    let mut offset = 12;
    while offset + 8 <= file.len() {
        let id: [u8; 4] = [
            file[offset],
            file[offset + 1],
            file[offset + 2],
            file[offset + 3],
        ];
        let size = u32::from_le_bytes([
            file[offset + 4],
            file[offset + 5],
            file[offset + 6],
            file[offset + 7],
        ]) as usize;
        let start = offset + 8;
        let end = start
            .checked_add(size)
            .filter(|end| *end <= file.len())
            .ok_or_else(|| {
                format!(
                    "chunk {} runs past the end of the file",
                    String::from_utf8_lossy(&id)
                )
            })?;
        chunks.push((id, file[start..end].to_vec()));
        offset = end + (size % 2);
    }
    Ok(chunks)
}

fn push_chunk(out: &mut Vec<u8>, id: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(id);
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    if data.len() % 2 == 1 {
        out.push(0);
    }
}

/// `text` as a fixed-width ASCII field: non-ASCII replaced by '?', cut or zero-padded.
fn fixed_ascii(text: &str, width: usize) -> Vec<u8> {
    let mut field: Vec<u8> = text
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c as u8
            } else {
                b'?'
            }
        })
        .take(width)
        .collect();
    field.resize(width, 0);
    field
}

/// BWF `bext` version 1: Description, Originator, OriginatorReference, date, time, time
/// reference, version, UMID, reserved; no coding history.
fn bext_chunk(metadata: &WavMetadata) -> Vec<u8> {
    let mut chunk = fixed_ascii(&metadata.description, 256);
    chunk.extend(fixed_ascii(&metadata.originator, 32));
    chunk.extend(fixed_ascii("", 32));
    chunk.extend(fixed_ascii(&metadata.date, 10));
    chunk.extend(fixed_ascii(&metadata.time, 8));
    chunk.extend_from_slice(&[0; 8]); // TimeReference (low, high)
    // Version 2 carries the loudness fields; version 1 leaves them reserved (zero).
    let version: u16 = if metadata.loudness.is_some() { 2 } else { 1 };
    chunk.extend_from_slice(&version.to_le_bytes());
    chunk.extend_from_slice(&[0; 64]); // UMID
    match &metadata.loudness {
        Some(loudness) => {
            for field in loudness.fields() {
                chunk.extend_from_slice(&field.to_le_bytes());
            }
        }
        None => chunk.extend_from_slice(&[0; 10]),
    }
    chunk.extend_from_slice(&[0; 180]); // reserved
    chunk
}

/// `LIST` chunk of type `INFO` with INAM, ICMT and ISFT (UTF-8, zero-terminated).
fn info_chunk(metadata: &WavMetadata) -> Vec<u8> {
    let mut chunk = b"INFO".to_vec();
    for (id, text) in [
        (b"INAM", &metadata.title),
        (b"ICMT", &metadata.comment),
        (b"ISFT", &metadata.software),
    ] {
        if text.is_empty() {
            continue;
        }
        let mut value = text.as_bytes().to_vec();
        value.push(0);
        push_chunk(&mut chunk, id, &value);
    }
    chunk
}

/// Reads back the `bext` and `LIST/INFO` text of a WAV file (empty fields where absent).
pub fn read_wav_metadata(path: &Path) -> Result<WavMetadata> {
    let bad = |reason: String| FoleyError::BadFile {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::read(path).map_err(|error| bad(error.to_string()))?;
    let text = |bytes: &[u8]| {
        let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
        String::from_utf8_lossy(&bytes[..end]).into_owned()
    };
    let mut metadata = WavMetadata::default();
    for (id, data) in split_chunks(&file).map_err(bad)? {
        if &id == b"bext" && data.len() >= 338 {
            metadata.description = text(&data[..256]);
            metadata.originator = text(&data[256..288]);
            metadata.date = text(&data[320..330]);
            metadata.time = text(&data[330..338]);
            let version = data
                .get(346..348)
                .map_or(0, |bytes| u16::from_le_bytes([bytes[0], bytes[1]]));
            if version >= 2 && data.len() >= 422 {
                let field = |offset: usize| i16::from_le_bytes([data[offset], data[offset + 1]]);
                metadata.loudness = Some(BextLoudness {
                    loudness_value: field(412),
                    loudness_range: field(414),
                    max_true_peak_level: field(416),
                    max_momentary_loudness: field(418),
                    max_short_term_loudness: field(420),
                });
            }
        } else if &id == b"LIST" && data.starts_with(b"INFO") {
            let mut wrapped = b"RIFF\0\0\0\0WAVE".to_vec();
            wrapped.extend_from_slice(&data[4..]);
            for (field, value) in split_chunks(&wrapped).map_err(bad)? {
                match &field {
                    b"INAM" => metadata.title = text(&value),
                    b"ICMT" => metadata.comment = text(&value),
                    b"ISFT" => metadata.software = text(&value),
                    _ => {}
                }
            }
        }
    }
    Ok(metadata)
}

/// Rounds a [-1, 1] sample to a signed integer of `bits`, clipping out-of-range values.
fn quantize(sample: f32, bits: u32) -> i32 {
    let peak = ((1i64 << (bits - 1)) - 1) as f32;
    let sample = if sample.is_finite() { sample } else { 0.0 };
    (sample.clamp(-1.0, 1.0) * peak).round() as i32
}

/// Reads a WAV back as mono f32 samples in [-1, 1] (channels averaged) and its sample rate,
/// refusing rates outside 1–768 000 Hz (a corrupt header must not size a plot or a resampler).
pub fn read_wav(path: &Path) -> Result<(Vec<f32>, u32)> {
    let (samples, channels, rate) = read_wav_frames(path)?;
    if channels == 1 {
        return Ok((samples, rate));
    }
    Ok((
        crate::engine::dsp::fold_down(&samples, channels as usize),
        rate,
    ))
}

/// Reads a WAV's samples as f32 in [-1, 1], frames interleaved, with its channel count and
/// sample rate (checked as `read_wav` does).
pub fn read_wav_frames(path: &Path) -> Result<(Vec<f32>, u16, u32)> {
    let failed = |reason: String| FoleyError::BadFile {
        path: path.to_path_buf(),
        reason,
    };
    let mut reader = hound::WavReader::open(path).map_err(|error| failed(error.to_string()))?;
    let spec = reader.spec();
    if !(1..=crate::engine::dsp::MAX_SAMPLE_RATE).contains(&spec.sample_rate) {
        return Err(failed(format!(
            "sample rate {} Hz is outside 1–{} Hz",
            spec.sample_rate,
            crate::engine::dsp::MAX_SAMPLE_RATE
        )));
    }
    let samples = match spec.sample_format {
        SampleFormat::Float => reader
            .samples::<f32>()
            .collect::<std::result::Result<Vec<_>, _>>(),
        SampleFormat::Int if !(8..=32).contains(&spec.bits_per_sample) => {
            return Err(failed(format!(
                "{}-bit PCM is not a sample size WAV files use",
                spec.bits_per_sample
            )));
        }
        SampleFormat::Int => {
            let peak = ((1i64 << (spec.bits_per_sample - 1)) - 1) as f32;
            reader
                .samples::<i32>()
                .map(|sample| sample.map(|value| value as f32 / peak))
                .collect()
        }
    }
    .map_err(|error| failed(error.to_string()))?;
    let channels = spec.channels.max(1);
    // A file cut inside its last frame keeps only whole frames.
    let whole = samples.len() - samples.len() % channels as usize;
    let mut samples = samples;
    samples.truncate(whole);
    Ok((samples, channels, spec.sample_rate))
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
    fn metadata_round_trips_and_hound_still_reads_the_samples() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tagged.wav");
        let metadata = WavMetadata {
            description: "glass shattering on concrete | seed 42".into(),
            originator: "Foley".into(),
            date: "2026-11-21".into(),
            time: "10:20:30".into(),
            title: "glass shattering".into(),
            comment: "prompt: glass shattering on concrete (é)".into(),
            software: "Foley 0.1.0".into(),
            loudness: Some(BextLoudness {
                loudness_value: -2300,
                loudness_range: 450,
                max_true_peak_level: -100,
                max_momentary_loudness: -1850,
                max_short_term_loudness: BextLoudness::UNSET,
            }),
        };
        let samples = vec![0.5, -0.25, 0.0];
        write_wav_with_metadata(
            &path,
            &samples,
            1,
            48_000,
            WavFormat::Pcm24,
            Some(&metadata),
        )
        .unwrap();
        assert_eq!(read_wav_metadata(&path).unwrap(), metadata);
        let (read, rate) = read_wav(&path).unwrap();
        assert_eq!(rate, 48_000);
        for (a, b) in read.iter().zip(&samples) {
            assert!((a - b).abs() < 1e-6);
        }
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
