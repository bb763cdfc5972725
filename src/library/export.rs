//! Export of a clip for a DAW: optional resampling, peak normalisation and fades, PCM or float,
//! the prompt and settings embedded as metadata, and a file name safe on every OS.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ClipRecord, slug};
use crate::audio::loudness::{measure, normalising_gain_db};
use crate::audio::wav::{BextLoudness, WavFormat, WavMetadata, write_wav_with_metadata};
use crate::engine::dsp::resample::resample_frames;
use crate::error::Result;

/// How a clip is exported; remembered by the studio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExportOptions {
    /// "f32", "pcm16" or "pcm24".
    pub format: String,
    /// Output rate; `None` keeps the model's rate.
    pub sample_rate: Option<u32>,
    /// Scale so the loudest sample sits at -1 dBFS.
    pub normalize: bool,
    /// Scale to this integrated loudness (LUFS, e.g. -23 for broadcast, -14 for streaming),
    /// held below `true_peak_ceiling_dbtp`; wins over `normalize`.
    pub loudness_target_lufs: Option<f64>,
    /// The highest true peak loudness normalisation may reach, in dBTP.
    pub true_peak_ceiling_dbtp: f64,
    /// Linear fade-in length in milliseconds.
    pub fade_in_ms: f32,
    /// Linear fade-out length in milliseconds.
    pub fade_out_ms: f32,
    /// How exported files are named.
    pub naming: Naming,
}

/// The name an exported file gets.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub enum Naming {
    /// `<prompt>_<model>_s<seed>.wav`.
    #[default]
    Prompt,
    /// The Universal Category System's `CatID_FXName_CreatorID_SourceID` (the seed follows as
    /// user data), which sound libraries and their search tools read.
    Ucs {
        /// A UCS category id such as `DOORWood` or `GLASBrk`.
        category: String,
        /// Who made the sound (initials or a short name).
        creator: String,
        /// The project or library it belongs to.
        source: String,
    },
}

impl Naming {
    /// The file name without extension for `record`.
    pub fn base(&self, record: &ClipRecord) -> String {
        match self {
            Self::Prompt => {
                let model = short_model_name(&record.model);
                format!("{}_{}_s{}", slug(&record.prompt), slug(model), record.seed)
            }
            Self::Ucs {
                category,
                creator,
                source,
            } => {
                let field = |text: &str, fallback: &str| {
                    let kept: String = text
                        .chars()
                        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                        .take(32)
                        .collect();
                    if kept.is_empty() {
                        fallback.to_string()
                    } else {
                        kept
                    }
                };
                format!(
                    "{}_{}_{}_{}_s{}",
                    field(category, "MISC"),
                    fx_name(&record.prompt),
                    field(creator, "Foley"),
                    field(source, "Foley"),
                    record.seed
                )
            }
        }
    }
}

/// UCS's FXName from a prompt: its words capitalised, at most 25 characters, with nothing that
/// would split a UCS field or trouble a file system.
fn fx_name(prompt: &str) -> String {
    let mut name = String::new();
    for word in prompt
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
    {
        let mut chars = word.chars();
        let Some(first) = chars.next() else { continue };
        let word: String = first.to_uppercase().chain(chars).collect();
        let extra = usize::from(!name.is_empty());
        if name.chars().count() + extra + word.chars().count() > 25 {
            break;
        }
        if extra == 1 {
            name.push(' ');
        }
        name.push_str(&word);
    }
    if name.is_empty() {
        "Sound".into()
    } else {
        name
    }
}

/// Fades exports get unless told otherwise: a few milliseconds, so a clip never starts or ends
/// on a click in the DAW.
pub const DEFAULT_FADE_MS: f32 = 3.0;

/// The loudness targets the studio offers (LUFS): EBU R128 broadcast, podcasts and games,
/// Apple Music, and the streaming services' -14.
pub const LOUDNESS_TARGETS: [f64; 4] = [-23.0, -18.0, -16.0, -14.0];

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            format: "pcm24".into(),
            sample_rate: Some(48_000),
            normalize: false,
            loudness_target_lufs: None,
            true_peak_ceiling_dbtp: -1.0,
            fade_in_ms: DEFAULT_FADE_MS,
            fade_out_ms: DEFAULT_FADE_MS,
            naming: Naming::Prompt,
        }
    }
}

/// -1 dBFS.
const NORMALIZED_PEAK: f32 = 0.891_250_9;

/// The samples (frames of `channels` interleaved) as they will be written, and their rate.
pub fn prepare(
    samples: &[f32],
    channels: usize,
    sample_rate: u32,
    options: &ExportOptions,
) -> (Vec<f32>, u32) {
    let channels = channels.max(1);
    let rate = options.sample_rate.unwrap_or(sample_rate);
    let mut output = resample_frames(samples, channels, sample_rate, rate);
    let frames = |ms: f32| ((ms.max(0.0) / 1000.0) * rate as f32) as usize;
    let (fade_in, fade_out) = (frames(options.fade_in_ms), frames(options.fade_out_ms));
    let length = output.len() / channels;
    for (index, frame) in output.chunks_mut(channels).take(fade_in).enumerate() {
        frame
            .iter_mut()
            .for_each(|value| *value *= index as f32 / fade_in as f32);
    }
    for index in 0..fade_out.min(length) {
        let frame = length - 1 - index;
        output[frame * channels..(frame + 1) * channels]
            .iter_mut()
            .for_each(|value| *value *= index as f32 / fade_out as f32);
    }
    // After the fades, so the faded result is what reaches the target.
    if let Some(target) = options.loudness_target_lufs {
        let gain_db = measure(&output, channels, rate).ok().and_then(|loudness| {
            normalising_gain_db(&loudness, target, options.true_peak_ceiling_dbtp)
        });
        if let Some(gain_db) = gain_db {
            let gain = 10f64.powf(gain_db / 20.0) as f32;
            output.iter_mut().for_each(|value| *value *= gain);
        }
    } else if options.normalize {
        let peak = output
            .iter()
            .fold(0f32, |peak, value| peak.max(value.abs()));
        if peak > 0.0 {
            let gain = NORMALIZED_PEAK / peak;
            output.iter_mut().for_each(|value| *value *= gain);
        }
    }
    (output, rate)
}

/// The model's own name: the last part of a hub id or folder path (`audioldm2` for
/// `cvssp/audioldm2` or `/home/ana/models/audioldm2/`).
pub fn short_model_name(model: &str) -> &str {
    model
        .trim_end_matches(['/', '\\'])
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(model)
}

/// The model as a shared file may name it: a Hugging Face id as it is, a local folder by its
/// own name only, so an exported WAV never carries the user's directory layout.
pub fn public_model_name(model: &str) -> String {
    let trimmed = model.trim_end_matches(['/', '\\']);
    let local = std::path::Path::new(trimmed).is_absolute()
        || trimmed.starts_with(['.', '~'])
        || trimmed.contains('\\')
        || trimmed.matches('/').count() != 1;
    if local {
        short_model_name(trimmed).to_string()
    } else {
        trimmed.to_string()
    }
}

/// The metadata describing a clip: a one-line summary in `bext`, everything in the comment.
/// A record created at 0 (undated) leaves the origination date and time empty.
pub fn metadata(record: &ClipRecord) -> WavMetadata {
    let (date, time) = if record.created == 0 {
        Default::default()
    } else {
        civil_date_time(record.created)
    };
    let model = public_model_name(&record.model);
    WavMetadata {
        description: format!("{} | seed {} | {model}", record.prompt, record.seed),
        originator: "Foley".into(),
        date,
        time,
        title: record.prompt.clone(),
        comment: format!(
            "prompt: {}\nnegative prompt: {}\nseed: {}\nsteps: {}\nguidance: {}\nscheduler: {}\nmodel: {}\nduration: {:.3} s",
            record.prompt,
            record.negative_prompt.as_deref().unwrap_or(""),
            record.seed,
            record.steps,
            record.guidance,
            record.scheduler,
            model,
            record.duration,
        ),
        software: format!("Foley {}", env!("CARGO_PKG_VERSION")),
        loudness: None,
    }
}

/// `<prompt>_<model>_s<seed>.wav` in `dir`, numbered if the name is taken.
pub fn export_path(dir: &Path, record: &ClipRecord) -> PathBuf {
    free_path(dir, &Naming::Prompt.base(record), "wav")
}

/// `<prompt>_<model>_s<seed>.png` in `dir` (the picture of the clip an export names the same
/// way), numbered if that picture already exists, so a second save never overwrites the first.
pub fn picture_path(dir: &Path, record: &ClipRecord) -> PathBuf {
    free_path(dir, &Naming::Prompt.base(record), "png")
}

/// `base.extension` in `dir`, or `base_2.extension`, … when taken.
fn free_path(dir: &Path, base: &str, extension: &str) -> PathBuf {
    (1..)
        .map(|n| {
            let name = if n == 1 {
                format!("{base}.{extension}")
            } else {
                format!("{base}_{n}.{extension}")
            };
            dir.join(name)
        })
        .find(|path| !path.exists())
        .unwrap_or_else(|| dir.join(format!("{base}.{extension}")))
}

/// Writes the clip into `dir` and returns the file's path.
pub fn export_clip(
    dir: &Path,
    record: &ClipRecord,
    samples: &[f32],
    options: &ExportOptions,
) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|error| crate::error::FoleyError::Output {
        path: dir.to_path_buf(),
        reason: error.to_string(),
    })?;
    let format: WavFormat = options.format.parse()?;
    let channels = record.channels.max(1);
    let (prepared, rate) = prepare(samples, channels as usize, record.sample_rate, options);
    let path = free_path(dir, &options.naming.base(record), "wav");
    let mut metadata = metadata(record);
    // The BWF loudness fields describe the file as written.
    metadata.loudness = measure(&prepared, channels as usize, rate)
        .ok()
        .map(|loudness| BextLoudness::from(&loudness));
    write_wav_with_metadata(&path, &prepared, channels, rate, format, Some(&metadata))?;
    Ok(path)
}

/// UTC `yyyy-mm-dd` and `hh:mm:ss` of a Unix time (proleptic Gregorian calendar).
fn civil_date_time(unix_seconds: u64) -> (String, String) {
    let days = (unix_seconds / 86_400) as i64;
    let seconds = unix_seconds % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (
        format!("{year:04}-{month:02}-{day:02}"),
        format!(
            "{:02}:{:02}:{:02}",
            seconds / 3600,
            seconds / 60 % 60,
            seconds % 60
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::wav::{read_wav, read_wav_metadata};

    fn record() -> ClipRecord {
        ClipRecord {
            id: "x".into(),
            prompt: "Glass: shattering / concrete?".into(),
            negative_prompt: Some("noise".into()),
            seed: 7,
            steps: 25,
            guidance: 3.5,
            scheduler: "dpm++2m".into(),
            model: "cvssp/audioldm2".into(),
            duration: 1.0,
            sample_rate: 16_000,
            channels: 1,
            timings: vec![],
            score: None,
            starred: false,
            rating: 0,
            tags: Vec::new(),
            mel_bins: None,
            created: 1_795_000_000,
            task: None,
            batch_job: None,
        }
    }

    #[test]
    fn pictures_share_the_export_name_and_never_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let wav = export_path(dir.path(), &record());
        std::fs::write(&wav, b"exported").unwrap();
        let picture = picture_path(dir.path(), &record());
        assert_eq!(picture.file_stem(), wav.file_stem());
        assert_eq!(picture.extension().unwrap(), "png");
        std::fs::write(&picture, b"first").unwrap();
        let second = picture_path(dir.path(), &record());
        assert_ne!(second, picture);
        assert!(second.to_string_lossy().ends_with("_2.png"));
    }

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(civil_date_time(0), ("1970-01-01".into(), "00:00:00".into()));
        assert_eq!(
            civil_date_time(951_782_400),
            ("2000-02-29".into(), "00:00:00".into())
        );
        assert_eq!(civil_date_time(1_795_000_000 + 3_661).1, "12:07:41");
    }

    #[test]
    fn export_resamples_normalizes_fades_and_tags() {
        let dir = tempfile::tempdir().unwrap();
        let samples: Vec<f32> = (0..16_000)
            .map(|n| 0.25 * (n as f32 * 0.05).sin())
            .collect();
        let options = ExportOptions {
            format: "pcm24".into(),
            sample_rate: Some(48_000),
            normalize: true,
            fade_in_ms: 10.0,
            fade_out_ms: 10.0,
            ..ExportOptions::default()
        };
        let path = export_clip(dir.path(), &record(), &samples, &options).unwrap();
        assert_eq!(
            path.file_name().unwrap(),
            "glass-shattering-concrete_audioldm2_s7.wav"
        );
        let (read, rate) = read_wav(&path).unwrap();
        assert_eq!(rate, 48_000);
        assert_eq!(read.len(), 48_000);
        let peak = read.iter().fold(0f32, |p, v| p.max(v.abs()));
        assert!((peak - NORMALIZED_PEAK).abs() < 1e-3, "{peak}");
        assert_eq!(read[0], 0.0);
        assert!(read[read.len() - 1].abs() < 1e-6);
        let metadata = read_wav_metadata(&path).unwrap();
        assert!(
            metadata
                .description
                .starts_with("Glass: shattering / concrete? | seed 7")
        );
        assert!(metadata.comment.contains("scheduler: dpm++2m"));
        assert_eq!(metadata.originator, "Foley");
        // A second export does not overwrite the first.
        let again = export_clip(dir.path(), &record(), &samples, &options).unwrap();
        assert_ne!(again, path);
    }

    #[test]
    fn loudness_targets_are_met_under_the_true_peak_ceiling() {
        let dir = tempfile::tempdir().unwrap();
        // 4 s of a quiet stereo tone (about -33 LUFS) and of a spiky one whose peaks bind.
        let tone: Vec<f32> = (0..4 * 48_000)
            .flat_map(|n| {
                let value = 0.02 * (n as f32 * 0.07).sin();
                [value, value]
            })
            .collect();
        let spiky: Vec<f32> = (0..4 * 48_000)
            .flat_map(|n| {
                let value = if n % 4800 == 0 {
                    0.9
                } else {
                    0.01 * (n as f32 * 0.07).sin()
                };
                [value, value]
            })
            .collect();
        let record = ClipRecord {
            sample_rate: 48_000,
            channels: 2,
            ..record()
        };
        for (samples, target) in [(&tone, -16.0), (&spiky, -14.0)] {
            let options = ExportOptions {
                format: "f32".into(),
                sample_rate: None,
                loudness_target_lufs: Some(target),
                ..ExportOptions::default()
            };
            let path = export_clip(dir.path(), &record, samples, &options).unwrap();
            let (written, channels, rate) = crate::audio::wav::read_wav_frames(&path).unwrap();
            assert_eq!((channels, rate), (2, 48_000));
            let loudness = measure(&written, 2, rate).unwrap();
            let integrated = loudness.integrated_lufs.unwrap();
            let peak = loudness.true_peak_dbtp.unwrap();
            assert!(
                peak <= -1.0 + 0.05,
                "true peak {peak} dBTP over the ceiling"
            );
            if std::ptr::eq(samples, &tone) {
                assert!((integrated - target).abs() <= 0.1, "{integrated} LUFS");
            } else {
                // The ceiling binds: quieter than asked, peak at the ceiling.
                assert!(integrated < target - 1.0, "{integrated} LUFS");
                assert!((peak + 1.0).abs() <= 0.05, "{peak} dBTP");
            }
            let fields = read_wav_metadata(&path).unwrap().loudness.unwrap();
            assert!((f64::from(fields.loudness_value) / 100.0 - integrated).abs() <= 0.01);
            assert!((f64::from(fields.max_true_peak_level) / 100.0 - peak).abs() <= 0.01);
            std::fs::remove_file(&path).unwrap();
        }
    }

    #[test]
    fn default_fades_start_and_end_the_export_at_zero() {
        let samples = vec![0.5f32; 16_000];
        let (faded, _) = prepare(
            &samples,
            1,
            16_000,
            &ExportOptions {
                sample_rate: None,
                ..ExportOptions::default()
            },
        );
        assert_eq!(faded[0], 0.0);
        assert!(faded[faded.len() - 1].abs() < 1e-3);
        assert_eq!(faded[8_000], 0.5);
    }

    #[test]
    fn metadata_never_carries_a_local_path() {
        for (model, shown) in [
            ("cvssp/audioldm2", "cvssp/audioldm2"),
            ("/home/ana/models/audioldm2-music", "audioldm2-music"),
            ("./models/sa3", "sa3"),
            ("~/m/x/", "x"),
            ("C:\\Users\\ana\\model", "model"),
            ("models/deep/tiny", "tiny"),
            ("tiny", "tiny"),
        ] {
            assert_eq!(public_model_name(model), shown, "{model}");
            let record = ClipRecord {
                model: model.into(),
                ..record()
            };
            let metadata = metadata(&record);
            for text in [&metadata.description, &metadata.comment] {
                assert!(!text.contains("/home") && !text.contains("Users"), "{text}");
            }
        }
    }

    #[test]
    fn ucs_names_carry_category_fx_name_creator_and_source() {
        let naming = Naming::Ucs {
            category: "GLASBrk".into(),
            creator: "AB".into(),
            source: "Foley Lib/2026".into(),
        };
        assert_eq!(
            naming.base(&record()),
            "GLASBrk_Glass Shattering Concrete_AB_FoleyLib2026_s7"
        );
        let empty = Naming::Ucs {
            category: "../".into(),
            creator: String::new(),
            source: "_".into(),
        };
        assert_eq!(
            empty.base(&record()),
            "MISC_Glass Shattering Concrete_Foley_Foley_s7"
        );
        let long = ClipRecord {
            prompt: "an extremely long description of a very distant thunderstorm".into(),
            ..record()
        };
        let fx = naming.base(&long);
        assert_eq!(fx.split('_').nth(1).unwrap(), "An Extremely Long");
        let dir = tempfile::tempdir().unwrap();
        let options = ExportOptions {
            naming,
            sample_rate: None,
            ..ExportOptions::default()
        };
        let path = export_clip(dir.path(), &record(), &[0.1; 1600], &options).unwrap();
        assert_eq!(
            path.file_name().unwrap(),
            "GLASBrk_Glass Shattering Concrete_AB_FoleyLib2026_s7.wav"
        );
    }
}
