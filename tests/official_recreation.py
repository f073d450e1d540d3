"""A straightforward re-creation of the official Hear The Flow test path, written from its
published rules with numpy, scipy, OpenCV and PIL only (none of this project's code), to
check that our pipeline + evaluator give the numbers the official code gives.

Preprocessing (per clip, as the official Flickr test script): OpenCV reads the keyframe
(imagetoframe entry - 1, or - 2 when the entry is the frame count; VGG-SS: the middle frame)
and the next frame; Farneback (0.5, 3, 15, 3, 5, 1.2, 0) on their grayscale versions at
native resolution; the frame and each flow channel are written as JPEG (OpenCV), the
audio as 16-bit WAV at 22,050 Hz. Loading (official test loader): PIL reads the JPEGs
(flow as 8-bit grayscale), resizes to 224 x 224 (bicubic), ToTensor, ImageNet mean/std
for the frame; the audio window is centred on half the whole seconds, /32767, tiled to
3 s; scipy spectrogram (nperseg 512, noverlap 274), log(S + 1e-7) / 12. Metrics: the
7x7 map is resized to 224 with OpenCV's bicubic, min-max normalised, thresholded at
element 224*224/2 of the sorted map (mask = map > thr); cIoU against the official
ground truth; cIoU@0.5 and AUC (trapezoid over 21 thresholds).
"""
from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from scipy import signal
from scipy.io import wavfile

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def keyframe_index(total_frames: int, entry: int | None) -> int:
    if entry is None:
        return total_frames // 2
    return entry - 2 if total_frames == entry else entry - 1


def preprocess(video: Path, audio: Path | None, entry: int | None, work: Path) -> tuple[Path, Path, Path, Path]:
    """The official test preprocessing of one clip: frame, flow_x, flow_y JPEGs and a WAV."""
    work.mkdir(parents=True, exist_ok=True)
    cap = cv2.VideoCapture(str(video))
    k = keyframe_index(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), entry)
    cap.set(cv2.CAP_PROP_POS_FRAMES, k)
    ok0, image = cap.read()
    cap.set(cv2.CAP_PROP_POS_FRAMES, k + 1)
    ok1, next_image = cap.read()
    cap.release()
    assert ok0 and ok1, f"{video}: cannot read frames {k}, {k + 1}"
    flow = cv2.calcOpticalFlowFarneback(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY),
                                        cv2.cvtColor(next_image, cv2.COLOR_BGR2GRAY),
                                        None, 0.5, 3, 15, 3, 5, 1.2, 0)
    frame, fx, fy, wav = work / "frame.jpg", work / "flow_x.jpg", work / "flow_y.jpg", work / "audio.wav"
    cv2.imwrite(str(frame), image)
    cv2.imwrite(str(fx), flow[:, :, 0])
    cv2.imwrite(str(fy), flow[:, :, 1])
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(audio or video),
                    "-vn", "-ac", "1", "-ar", "22050", "-c:a", "pcm_s16le", str(wav)], check=True)
    return frame, fx, fy, wav


def test_audio(wav: Path) -> np.ndarray:
    rate, samples = wavfile.read(wav)
    lower = float(len(samples) // 22050) / 2 - 1.5
    higher = float(len(samples) // 22050) / 2 + 1.5
    audio = samples[int(lower * 22050):int(higher * 22050)] / 32767
    if audio.shape[0] < rate * 3.0:
        audio = np.tile(audio, int(rate * 3.0 / audio.shape[0]) + 1)
    audio = audio[:int(rate * 3.0)]
    _, _, spec = signal.spectrogram(audio, rate, nperseg=512, noverlap=274)
    return (np.log(spec + 1e-7) / 12.0).astype(np.float32)


def load_inputs(frame: Path, fx: Path, fy: Path, wav: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The official test loader: tensors [3,224,224], [2,224,224], [1,257,T]."""
    image = np.asarray(Image.open(frame).convert("RGB").resize((224, 224), Image.BICUBIC), np.float32) / 255
    image = (image - MEAN) / STD
    flows = [np.asarray(Image.open(p).convert("L").resize((224, 224), Image.BICUBIC), np.float32) / 255
             for p in (fx, fy)]
    return (torch.from_numpy(image.transpose(2, 0, 1).copy()), torch.from_numpy(np.stack(flows)),
            torch.from_numpy(test_audio(wav)[None]))


def flickr_gt(xml: Path) -> np.ndarray:
    gt = np.zeros((224, 224))
    for bbox in ET.parse(xml).getroot().iter("bbox"):
        x1, y1, x2, y2 = (int(224 * int(c.text) / 256) for c in list(bbox)[1:5])
        box = np.zeros((224, 224))
        box[y1:y2, x1:x2] = 1
        gt += box
    gt /= 2
    gt[gt > 1] = 1
    return gt


def vggss_gt(boxes: list[list[float]]) -> np.ndarray:
    gt = np.zeros((224, 224))
    for box in boxes:
        x1, y1, x2, y2 = (int(224 * max(v, 0)) for v in box)
        gt[y1:y2, x1:x2] = 1
    return gt


def clip_ciou(map7: np.ndarray, gt: np.ndarray) -> float:
    heat = cv2.resize(map7.astype(np.float32), dsize=(224, 224), interpolation=cv2.INTER_CUBIC)
    lo, hi = heat.min(), heat.max()
    if hi - lo != 0:
        heat = (heat - lo) / (hi - lo)
    thr = np.sort(heat.flatten())[int(224 * 224 / 2)]
    mask = (heat > thr).astype(np.float64)
    denom = gt.sum() + (mask * (gt == 0)).sum()
    return float((mask * gt).sum() / denom) if denom else 0.0


def summary(cious: list[float]) -> dict[str, float]:
    arr = np.array(cious)
    thresholds = np.array([0.05 * i for i in range(21)])
    success = np.array([(arr >= t).sum() / len(arr) for t in thresholds])
    auc = float(np.sum((success[1:] + success[:-1]) / 2 * np.diff(thresholds)))
    return {"ciou_at_0.5": float((arr >= 0.5).sum() / len(arr)), "auc": auc}
