//! Playback through a real cpal output stream: ALSA's null device (configured in a private
//! HOME), which accepts audio without sound hardware. The null device does not pace in real
//! time, so this checks the stream and the play/seek/stop logic, not timing.
#![cfg(feature = "studio")]

use std::time::{Duration, Instant};

use foley::audio::playback::Playback;

#[cfg(target_os = "linux")]
#[test]
fn plays_through_a_real_alsa_stream() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join(".asoundrc"),
        "pcm.!default { type plug; slave.pcm \"nullpcm\" }\npcm.nullpcm { type null }\n",
    )
    .unwrap();
    // SAFETY: this test binary runs this single test; nothing else reads the environment.
    unsafe { std::env::set_var("HOME", home.path()) };

    let playback = match Playback::open() {
        Ok(playback) => playback,
        Err(error) => panic!("the ALSA null device should open: {error}"),
    };
    assert!(playback.device_rate > 0);
    let one_second: Vec<f32> = (0..16_000).map(|n| (n as f32 * 0.05).sin() * 0.1).collect();
    playback.play(&one_second, 1, 16_000, 0.25).unwrap();
    assert!(playback.is_playing());
    let started = Instant::now();
    while playback.is_playing() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "playback never finished"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(!playback.has_failed());
    assert!(
        (playback.position_seconds() - 1.0).abs() < 0.01,
        "stopped at {} s",
        playback.position_seconds()
    );
    // The start offset itself is checked in the renderer's unit tests: the null device may
    // finish before this thread first looks.

    // Looping keeps it going until stopped.
    playback.set_looping(true);
    playback.play(&one_second, 1, 16_000, 0.0).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(playback.is_playing());
    playback.stop();
    assert!(!playback.is_playing());
}
