//! Clip playback through the system's default output device (cpal).
//!
//! The audio callback never locks, allocates or frees: a new clip arrives as an `Arc<[f32]>`
//! through a bounded lock-free channel, the replaced one is handed back through another channel
//! to be dropped on the UI thread, and play state, position and seeks are atomics. Clips are
//! resampled to the device's own rate and laid out as stereo frames before they are sent, so
//! the device is never re-clocked and the callback handles mono and stereo clips alike.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, SampleFormat, SizedSample};
use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::engine::dsp::resample::resample_frames;

const NO_SEEK: usize = usize::MAX;

/// State shared with the audio callback; every field is a lock-free atomic.
#[derive(Debug, Default)]
struct Shared {
    /// Position in device frames.
    position: AtomicUsize,
    /// Length of the current clip in device frames.
    length: AtomicUsize,
    /// A requested position in device frames, or `NO_SEEK`.
    seek: AtomicUsize,
    playing: AtomicBool,
    looping: AtomicBool,
    /// Set when the output stream reported an error (device unplugged, …).
    failed: AtomicBool,
}

/// The open output device and its playback state.
pub struct Playback {
    shared: Arc<Shared>,
    clips: Sender<Arc<[f32]>>,
    retired: Receiver<Arc<[f32]>>,
    /// Frames per second of the device.
    pub device_rate: u32,
    pub device_name: String,
    stop: Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl Playback {
    /// Opens the default output device at its default configuration. Errors (no device, no
    /// permission, a headless machine) are a normal state the caller shows, not a failure.
    pub fn open() -> Result<Self, String> {
        let shared = Arc::new(Shared {
            seek: AtomicUsize::new(NO_SEEK),
            ..Default::default()
        });
        let (clips, clip_receiver) = crossbeam_channel::bounded::<Arc<[f32]>>(4);
        let (retire, retired) = crossbeam_channel::bounded::<Arc<[f32]>>(16);
        let (stop, stop_receiver) = crossbeam_channel::bounded::<()>(1);
        let (ready, ready_receiver) =
            crossbeam_channel::bounded::<Result<(u32, String), String>>(1);
        let callback_shared = shared.clone();
        // cpal streams are not Send on every platform: the stream lives on its own thread.
        let thread = std::thread::Builder::new()
            .name("audio".into())
            .spawn(
                move || match open_stream(callback_shared, clip_receiver, retire) {
                    Ok((stream, rate, name)) => {
                        let _ = ready.send(Ok((rate, name)));
                        let _ = stop_receiver.recv();
                        drop(stream);
                    }
                    Err(error) => {
                        let _ = ready.send(Err(error));
                    }
                },
            )
            .map_err(|error| error.to_string())?;
        let (device_rate, device_name) = ready_receiver
            .recv()
            .map_err(|_| "the audio thread stopped".to_string())??;
        Ok(Self {
            shared,
            clips,
            retired,
            device_rate,
            device_name,
            stop,
            thread: Some(thread),
        })
    }

    /// `samples` (frames of `channels` interleaved, at `sample_rate`) converted to stereo
    /// frames at the device rate, ready for `play_prepared`.
    pub fn prepare(&self, samples: &[f32], channels: usize, sample_rate: u32) -> Arc<[f32]> {
        let channels = channels.max(1);
        let resampled = resample_frames(samples, channels, sample_rate, self.device_rate);
        resampled
            .chunks_exact(channels)
            .flat_map(|frame| [frame[0], frame[frame.len().min(2) - 1]])
            .collect()
    }

    /// Starts `samples` (frames of `channels` interleaved, at `sample_rate`) from
    /// `start_seconds`.
    pub fn play(
        &self,
        samples: &[f32],
        channels: usize,
        sample_rate: u32,
        start_seconds: f64,
    ) -> Result<(), String> {
        self.play_prepared(self.prepare(samples, channels, sample_rate), start_seconds)
    }

    /// Starts a clip already in the device's stereo frames (see `prepare`) from `start_seconds`.
    pub fn play_prepared(&self, converted: Arc<[f32]>, start_seconds: f64) -> Result<(), String> {
        self.collect_retired();
        let length = converted.len() / 2;
        match self.clips.try_send(converted) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err("the audio device is not taking data".into()),
            Err(TrySendError::Disconnected(_)) => return Err("the audio device was closed".into()),
        }
        self.shared.length.store(length, Ordering::Release);
        let start = ((start_seconds.max(0.0) * self.device_rate as f64) as usize).min(length);
        self.shared.seek.store(start, Ordering::Release);
        self.shared.playing.store(true, Ordering::Release);
        Ok(())
    }

    pub fn stop(&self) {
        self.shared.playing.store(false, Ordering::Release);
        self.collect_retired();
    }

    pub fn is_playing(&self) -> bool {
        self.shared.playing.load(Ordering::Acquire)
    }

    pub fn set_looping(&self, looping: bool) {
        self.shared.looping.store(looping, Ordering::Release);
    }

    pub fn is_looping(&self) -> bool {
        self.shared.looping.load(Ordering::Acquire)
    }

    /// True once the output stream reported an error.
    pub fn has_failed(&self) -> bool {
        self.shared.failed.load(Ordering::Acquire)
    }

    /// Seconds into the current clip.
    pub fn position_seconds(&self) -> f64 {
        self.shared.position.load(Ordering::Acquire) as f64 / self.device_rate as f64
    }

    pub fn seek_seconds(&self, seconds: f64) {
        let frame = (seconds.max(0.0) * self.device_rate as f64) as usize;
        let length = self.shared.length.load(Ordering::Acquire);
        self.shared.seek.store(frame.min(length), Ordering::Release);
    }

    /// Drops clips the callback has finished with (never inside the callback).
    fn collect_retired(&self) {
        while self.retired.try_recv().is_ok() {}
    }
}

impl Drop for Playback {
    fn drop(&mut self) {
        let _ = self.stop.try_send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn open_stream(
    shared: Arc<Shared>,
    clips: Receiver<Arc<[f32]>>,
    retire: Sender<Arc<[f32]>>,
) -> Result<(cpal::Stream, u32, String), String> {
    let host = cpal::default_host();
    let device = host
        .default_output_device()
        .ok_or_else(|| "no audio output device".to_string())?;
    let name = device
        .description()
        .map(|description| description.to_string())
        .unwrap_or_else(|_| "default output".into());
    let supported = device
        .default_output_config()
        .map_err(|error| format!("audio output unavailable: {error}"))?;
    let format = supported.sample_format();
    let config = supported.config();
    let rate = config.sample_rate;
    let stream = match format {
        SampleFormat::F32 => build::<f32>(&device, &config, shared, clips, retire),
        SampleFormat::I16 => build::<i16>(&device, &config, shared, clips, retire),
        SampleFormat::U16 => build::<u16>(&device, &config, shared, clips, retire),
        SampleFormat::I32 => build::<i32>(&device, &config, shared, clips, retire),
        other => return Err(format!("unsupported audio sample format {other}")),
    }?;
    stream
        .play()
        .map_err(|error| format!("audio output could not start: {error}"))?;
    Ok((stream, rate, name))
}

fn build<T>(
    device: &cpal::Device,
    config: &cpal::StreamConfig,
    shared: Arc<Shared>,
    clips: Receiver<Arc<[f32]>>,
    retire: Sender<Arc<[f32]>>,
) -> Result<cpal::Stream, String>
where
    T: SizedSample + FromSample<f32>,
{
    let channels = config.channels.max(1) as usize;
    let error_shared = shared.clone();
    let mut renderer = Renderer {
        shared,
        clips,
        retire,
        current: None,
        pending_retire: None,
    };
    device
        .build_output_stream::<T, _, _>(
            *config,
            move |data: &mut [T], _| renderer.render(data, channels),
            move |_error| error_shared.failed.store(true, Ordering::Release),
            None,
        )
        .map_err(|error| format!("audio output could not open: {error}"))
}

/// The callback's own state. `render` is real-time safe: no locks, no allocation, no frees.
struct Renderer {
    shared: Arc<Shared>,
    clips: Receiver<Arc<[f32]>>,
    retire: Sender<Arc<[f32]>>,
    current: Option<Arc<[f32]>>,
    /// A replaced clip the retire channel had no room for; handed back on a later call.
    pending_retire: Option<Arc<[f32]>>,
}

impl Renderer {
    fn render<T: SizedSample + FromSample<f32>>(&mut self, data: &mut [T], channels: usize) {
        if let Some(old) = self.pending_retire.take()
            && let Err(TrySendError::Full(old)) = self.retire.try_send(old)
        {
            self.pending_retire = Some(old);
        }
        if self.pending_retire.is_none()
            && let Ok(clip) = self.clips.try_recv()
            && let Some(old) = self.current.replace(clip)
            && let Err(TrySendError::Full(old)) = self.retire.try_send(old)
        {
            self.pending_retire = Some(old);
        }
        let seek = self.shared.seek.swap(NO_SEEK, Ordering::AcqRel);
        let mut position = if seek == NO_SEEK {
            self.shared.position.load(Ordering::Acquire)
        } else {
            seek
        };
        let playing = self.shared.playing.load(Ordering::Acquire);
        let looping = self.shared.looping.load(Ordering::Acquire);
        // Stereo frames: the left and right sample of frame n at 2n and 2n + 1.
        let samples: &[f32] = self.current.as_deref().unwrap_or(&[]);
        let frames = samples.len() / 2;
        let mut finished = false;
        for frame in data.chunks_mut(channels) {
            let (mut left, mut right) = (0.0, 0.0);
            if playing && !finished {
                if position >= frames && looping && frames > 0 {
                    position = 0;
                }
                if position < frames {
                    left = samples[2 * position];
                    right = samples[2 * position + 1];
                    position += 1;
                } else {
                    finished = true;
                }
            }
            // A mono device hears the mix; channels past the second get it too.
            let mid = 0.5 * (left + right);
            for (index, sample) in frame.iter_mut().enumerate() {
                let value = match (channels, index) {
                    (1, _) => mid,
                    (_, 0) => left,
                    (_, 1) => right,
                    _ => mid,
                };
                *sample = T::from_sample(value);
            }
        }
        if finished {
            self.shared.playing.store(false, Ordering::Release);
        }
        self.shared.position.store(position, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    /// Counts allocations and frees made by the current thread while `COUNTING` is set.
    struct CountingAllocator;

    thread_local! {
        static COUNTING: Cell<bool> = const { Cell::new(false) };
        static EVENTS: Cell<usize> = const { Cell::new(0) };
    }

    fn note() {
        let _ = COUNTING.try_with(|counting| {
            if counting.get() {
                let _ = EVENTS.try_with(|events| events.set(events.get() + 1));
            }
        });
    }

    // SAFETY: forwards to the system allocator; the bookkeeping touches only thread-locals.
    unsafe impl GlobalAlloc for CountingAllocator {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            note();
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
            note();
            unsafe { System.dealloc(pointer, layout) }
        }
        unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, size: usize) -> *mut u8 {
            note();
            unsafe { System.realloc(pointer, layout, size) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: CountingAllocator = CountingAllocator;

    /// Allocation events during `work` on this thread.
    fn allocations_during(work: impl FnOnce()) -> usize {
        EVENTS.with(|events| events.set(0));
        COUNTING.with(|counting| counting.set(true));
        work();
        COUNTING.with(|counting| counting.set(false));
        EVENTS.with(Cell::get)
    }

    #[test]
    fn the_callback_neither_allocates_nor_frees() {
        let (mut renderer, clips, retired, shared) = renderer();
        shared.playing.store(true, Ordering::Release);
        let mut out = vec![0f32; 512];
        clips.send(Arc::from(vec![0.1f32; 1000])).unwrap();
        clips.send(Arc::from(vec![0.2f32; 1000])).unwrap();
        let events = allocations_during(|| {
            // Takes a clip, swaps in the next one (retiring the first), seeks and loops.
            renderer.render(&mut out, 2);
            renderer.render(&mut out, 2);
            shared.seek.store(10, Ordering::Release);
            shared.looping.store(true, Ordering::Release);
            for _ in 0..10 {
                renderer.render(&mut out, 2);
            }
        });
        assert_eq!(events, 0, "the audio callback allocated or freed");
        // The counter does see allocations on this thread.
        assert!(allocations_during(|| drop(std::hint::black_box(vec![1u8; 16]))) >= 2);
        assert_eq!(retired.try_recv().unwrap()[0], 0.1);
    }

    type Harness = (
        Renderer,
        Sender<Arc<[f32]>>,
        Receiver<Arc<[f32]>>,
        Arc<Shared>,
    );

    fn renderer() -> Harness {
        let shared = Arc::new(Shared {
            seek: AtomicUsize::new(NO_SEEK),
            ..Default::default()
        });
        let (clips, clip_receiver) = crossbeam_channel::bounded(4);
        let (retire, retired) = crossbeam_channel::bounded(1);
        let renderer = Renderer {
            shared: shared.clone(),
            clips: clip_receiver,
            retire,
            current: None,
            pending_retire: None,
        };
        (renderer, clips, retired, shared)
    }

    /// A mono clip as the stereo frames `prepare` hands the callback.
    fn stereo(mono: &[f32]) -> Arc<[f32]> {
        mono.iter().flat_map(|value| [*value, *value]).collect()
    }

    #[test]
    fn stereo_clips_keep_their_sides_and_mono_devices_hear_the_mix() {
        let (mut renderer, clips, _retired, shared) = renderer();
        clips.send(Arc::from(vec![0.1, 0.5, 0.2, 0.6])).unwrap();
        shared.playing.store(true, Ordering::Release);
        let mut out = [0f32; 4];
        renderer.render(&mut out, 2);
        assert_eq!(out, [0.1, 0.5, 0.2, 0.6]);
        shared.seek.store(0, Ordering::Release);
        shared.playing.store(true, Ordering::Release);
        let mut mono = [0f32; 2];
        renderer.render(&mut mono, 1);
        assert_eq!(mono, [0.3, 0.4]);
    }

    #[test]
    fn renders_seeks_loops_and_stops() {
        let (mut renderer, clips, retired, shared) = renderer();
        clips.send(stereo(&[0.1, 0.2, 0.3])).unwrap();
        shared.playing.store(true, Ordering::Release);
        shared.seek.store(1, Ordering::Release);
        let mut out = [0f32; 4]; // 2 frames of stereo
        renderer.render(&mut out, 2);
        assert_eq!(out, [0.2, 0.2, 0.3, 0.3]);
        shared.looping.store(true, Ordering::Release);
        renderer.render(&mut out, 2);
        assert_eq!(out, [0.1, 0.1, 0.2, 0.2]);
        shared.looping.store(false, Ordering::Release);
        let mut long = [1f32; 4];
        renderer.render(&mut long, 1);
        assert_eq!(long, [0.3, 0.0, 0.0, 0.0]);
        assert!(!shared.playing.load(Ordering::Acquire));
        // A new clip replaces the old one, which is handed back, not freed in the callback.
        clips.send(stereo(&[0.5])).unwrap();
        renderer.render(&mut long, 1);
        assert_eq!(retired.try_recv().unwrap().len(), 6);
    }

    #[test]
    fn a_full_retire_channel_never_drops_in_the_callback() {
        let (mut renderer, clips, retired, _shared) = renderer();
        for len in 1..=3 {
            clips.send(Arc::from(vec![0.0; len])).unwrap();
            renderer.render(&mut [0f32; 2], 1);
        }
        // Capacity 1: the first replaced clip is in the channel, the next one waits in the slot.
        assert!(renderer.pending_retire.is_none() || retired.len() == 1);
        assert_eq!(retired.try_recv().unwrap().len(), 1);
        renderer.render(&mut [0f32; 2], 1);
        assert!(renderer.pending_retire.is_none());
    }
}
