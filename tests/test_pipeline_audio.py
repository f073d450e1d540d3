"""Audio features: log-mel equals librosa's, linear equals the official formula."""
from __future__ import annotations

import numpy as np

from pipeline.audio import audio_feature, feature_shape
from pipeline.config import AudioConfig


def test_logmel_matches_librosa_melspectrogram():
    import librosa

    cfg = AudioConfig()
    wave = np.random.default_rng(0).normal(0, 0.1, 48000).astype(np.float32)
    ours = audio_feature(wave, 16000, cfg)
    ref = librosa.feature.melspectrogram(y=wave, sr=16000, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                                         win_length=cfg.win_length, n_mels=cfg.n_mels, fmin=cfg.fmin)
    assert ours.shape == feature_shape(cfg) == (80, 301)
    np.testing.assert_allclose(ours, np.log(ref + 1e-6), atol=1e-3)


def test_linear_feature_is_the_official_257_bin_log_spectrogram():
    from scipy import signal

    cfg = AudioConfig(feature="linear", sample_rate=22050)
    wave = np.random.default_rng(1).normal(0, 0.1, 66150)
    ours = audio_feature(wave, 22050, cfg)
    _, _, spec = signal.spectrogram(wave, 22050, nperseg=512, noverlap=274)
    assert ours.shape == feature_shape(cfg) == (257, 276)
    np.testing.assert_allclose(ours, np.log(spec + 1e-7) / 12, rtol=1e-5, atol=1e-5)


def test_waveform_at_another_rate_is_resampled_to_the_configured_rate():
    cfg = AudioConfig()
    wave = np.random.default_rng(2).normal(0, 0.1, 3 * 44100).astype(np.float32)
    assert audio_feature(wave, 44100, cfg).shape == (80, 301)


def test_mel_filters_are_bit_identical_to_librosa():
    import librosa

    from pipeline.audio import _mel_basis

    for sr, n_fft, n_mels, fmin, fmax in [(16000, 512, 80, 20.0, None), (16000, 512, 64, 20.0, None),
                                          (22050, 1024, 128, 0.0, 8000.0)]:
        ours = _mel_basis(sr, n_fft, n_mels, fmin, fmax)
        ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
        assert ours.dtype == ref.dtype and np.array_equal(ours, ref)


def test_cpu_path_imports_neither_torch_nor_librosa():
    import subprocess
    import sys

    code = ("import sys; from pipeline.runner import run_pipeline; from pipeline.tasks import run_task; "
            "from pipeline.executors import worker_init; from pipeline.audio import _mel_basis; "
            "worker_init(); _mel_basis(16000, 512, 80, 20.0, None); "
            "print(sorted(m for m in ('torch', 'librosa', 'scipy.signal', 'ptlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
