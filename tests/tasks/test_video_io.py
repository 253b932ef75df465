"""tasks/video_io.py: probe, frame-accurate decode (checked against the ffmpeg binary), encode, bad files."""

from __future__ import annotations

import subprocess

import av
import cv2
import fsspec
import numpy as np
import pytest

from tasks.errors import InputError
from tasks.video_io import (
    encode_mp4,
    encode_stored,
    fit_box,
    fit_frame,
    iter_frames,
    iter_frames_at,
    pad_to_even,
    probe_video,
    read_frames,
    write_mp4,
)
from tests.corpus import BAD_CORPUS_EXPECTED, GOOD_FPS, GOOD_FRAMES, synth_clip, write_video


def ffmpeg_frame(path: str, index: int, height: int, width: int) -> np.ndarray:
    """Frame ``index`` decoded by the ffmpeg binary (an independent reference; autorotation on) → (H, W, 3)."""
    import imageio_ffmpeg

    out = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", path, "-vf", f"select=eq(n\\,{index})",
         "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    return np.frombuffer(out, np.uint8).reshape(height, width, 3)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_probe_real_footage(bikes: str, bunny: str) -> None:
    info = probe_video(bikes)
    assert (info.codec, info.width, info.height, info.num_frames, info.rotation) == ("h264", 640, 272, 250, 0)
    assert info.fps == pytest.approx(25.0) and info.duration_s == pytest.approx(10.0)
    assert info.size_bytes > 0
    info = probe_video(bunny)
    assert (info.width, info.height, info.num_frames) == (1280, 720, 132)


@pytest.mark.parametrize("index", [0, 1, 31, 100, 249])
def test_seek_matches_ffmpeg(bikes: str, index: int) -> None:
    """Frame-accurate seeking: the frame we return for an index is the one ffmpeg numbers so (bit-exact decode)."""
    (frame,) = read_frames(bikes, index, index + 1)
    np.testing.assert_array_equal(frame, ffmpeg_frame(bikes, index, 272, 640))


def test_seek_on_720p_matches_sequential_decode(bunny: str) -> None:
    sequential = dict(iter_frames_at(bunny, range(6, 132, 7)))  # one pass from frame 6
    strided = read_frames(bunny, 97, 132, stride=7)  # seeks straight to 97
    assert strided.shape == (5, 720, 1280, 3)
    for k, frame in enumerate(strided):
        np.testing.assert_array_equal(frame, sequential[97 + 7 * k])
    np.testing.assert_array_equal(strided[-1], ffmpeg_frame(bunny, 125, 720, 1280))


def test_iter_frames_is_lazy_and_stride_counts(bikes: str) -> None:
    frames = iter_frames(bikes, 10, None, stride=60)
    first = next(frames)
    assert first.shape == (272, 640, 3) and first.dtype == np.uint8
    assert len([first, *frames]) == len(range(10, 250, 60))
    with pytest.raises(ValueError, match="increase"):
        list(iter_frames_at(bikes, [5, 3]))


def test_reading_past_the_end_is_truncation(bikes: str) -> None:
    with pytest.raises(InputError) as err:
        read_frames(bikes, 245, 260)
    assert err.value.reason == "truncated_video" and bikes in str(err.value)
    assert len(list(iter_frames(bikes, 245, 260, strict=False))) == 5


def test_encode_round_trip_h264_yuv420p(tmp_path) -> None:
    frames, _ = synth_clip(12, 64, 96, seed=1)
    frames = np.stack([cv2.GaussianBlur(f, (5, 5), 0) for f in frames])  # chroma subsampling eats pixel noise
    data = encode_mp4(frames, 8.0, crf=18, preset="fast")
    assert data == encode_mp4(frames, 8.0, crf=18, preset="fast"), "encoding must be deterministic"
    path = tmp_path / "clip.mp4"
    path.write_bytes(data)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
    assert data[4:8] == b"ftyp" and data.find(b"moov") < data.find(b"mdat"), "index must be at the front"
    info = probe_video(str(path))
    assert (info.num_frames, info.width, info.height, info.fps) == (12, 96, 64, 8.0)
    decoded = read_frames(str(path))
    assert psnr(decoded, frames) > 30  # small, saturated synthetic frames; 4:2:0 chroma bounds it
    assert len(encode_mp4(frames, 8.0, crf=40, preset="fast")) < len(data)


def test_encode_accepts_an_iterable_and_checks_frames() -> None:
    frames, _ = synth_clip(4, 32, 48)
    assert probe_like(encode_mp4(iter(frames), 8.0, preset="ultrafast")) == 4
    with pytest.raises(ValueError, match="even width and height, got 47x32"):
        encode_mp4(frames[:, :, :47], 8.0)
    with pytest.raises(ValueError, match="uint8"):
        encode_mp4(frames.astype(np.float32), 8.0)
    with pytest.raises(ValueError, match="empty"):
        encode_mp4(frames[:0], 8.0)
    padded = pad_to_even(frames[:, :31, :47])
    assert padded.shape == (4, 32, 48, 3)
    np.testing.assert_array_equal(padded[:, 31], padded[:, 30])


def probe_like(data: bytes) -> int:
    fs = fsspec.filesystem("memory")
    fs.pipe("/probe-like/x.mp4", data)
    return probe_video("memory://probe-like/x.mp4").num_frames


def test_fsspec_urls_read_and_write(tmp_path) -> None:
    frames, _ = synth_clip(6, 32, 48, seed=2)
    url = "memory://vpf-video-io/sub/clip.mp4"
    write_mp4(frames, url, 8.0, preset="ultrafast")
    info = probe_video(url)
    assert info.uri == url and info.num_frames == 6 and info.size_bytes == len(fsspec.filesystem("memory").cat(url))
    local = tmp_path / "clip.mp4"
    local.write_bytes(fsspec.filesystem("memory").cat(url))
    from_url = read_frames(url, 2, 5)  # through a seekable fsspec file object
    np.testing.assert_array_equal(from_url, read_frames(str(local), 2, 5))
    assert psnr(from_url, frames[2:5]) > 25


def test_rotation_is_applied_like_ffmpeg(bad_corpus: dict[str, str]) -> None:
    path = bad_corpus["rotation"]
    info = probe_video(path)
    assert (info.rotation, info.width, info.height) == (90, 64, 96)
    frames = read_frames(path, 0, 3)
    assert frames.shape == (3, 96, 64, 3)
    np.testing.assert_array_equal(frames[2], ffmpeg_frame(path, 2, 96, 64))
    original, _ = synth_clip(GOOD_FRAMES, 64, 96, seed=7)
    right, wrong = psnr(frames[0], np.rot90(original[0], k=1)), psnr(frames[0], np.rot90(original[0], k=3))
    assert right > 24 and right > wrong + 10  # turned counter-clockwise, not clockwise
    assert read_frames(path, 0, 1, rotate=False).shape == (1, 64, 96, 3)


def test_odd_dimensions_decode(bad_corpus: dict[str, str]) -> None:
    info = probe_video(bad_corpus["odd_dims"])
    assert (info.width, info.height, info.num_frames, info.fps) == (65, 49, GOOD_FRAMES, GOOD_FPS)
    assert read_frames(bad_corpus["odd_dims"], 0, 2).shape == (2, 49, 65, 3)


VIDEO_LEVEL = [
    name
    for name, expected in BAD_CORPUS_EXPECTED.items()
    if expected is not None
    and expected[1] in {"empty_file", "truncated_video", "not_a_video", "unsupported_codec", "too_few_frames"}
]


@pytest.mark.parametrize("name", VIDEO_LEVEL)
def test_bad_files_raise_named_input_errors(bad_corpus: dict[str, str], name: str) -> None:
    path = bad_corpus[name]
    with pytest.raises(InputError) as err:
        probe_video(path)
    assert err.value.reason == BAD_CORPUS_EXPECTED[name][1]
    assert err.value.input == path and path in str(err.value)


def test_missing_file_url_and_folder(tmp_path) -> None:
    for uri in ("/nonexistent/vpf/clip.mp4", "memory://vpf-nowhere/clip.mp4"):
        with pytest.raises(InputError) as err:
            probe_video(uri)
        assert err.value.reason == "not_found" and uri in str(err.value)
    (tmp_path / "folder.mp4").mkdir()
    with pytest.raises(InputError) as err:
        probe_video(str(tmp_path / "folder.mp4"))
    assert err.value.reason == "unreadable" and "folder.mp4" in str(err.value)


def test_fit_frame_resize_and_crop_agree_with_fit_box() -> None:
    image = np.zeros((100, 300, 3), np.uint8)
    image[40:60, 140:160] = 255  # a square in the middle
    resized = fit_frame(image, 50, 100, "resize")
    cropped = fit_frame(image, 50, 100, "crop")  # keeps the centre 200x100 window
    assert resized.shape == cropped.shape == (50, 100, 3)
    for mode, out in (("resize", resized), ("crop", cropped)):
        x0, y0, x1, y1 = fit_box((140, 40, 160, 60), 100, 300, 50, 100, mode)
        ys, xs = np.nonzero(out[..., 0] > 127)
        assert abs(xs.min() - x0) <= 1 and abs(xs.max() + 1 - x1) <= 1
        assert abs(ys.min() - y0) <= 1 and abs(ys.max() + 1 - y1) <= 1
    mask = np.zeros((100, 300), bool)
    mask[40:60, 140:160] = True
    assert fit_frame(mask, 50, 100, "crop", nearest=True).dtype == bool
    with pytest.raises(ValueError, match="resize mode"):
        fit_frame(image, 50, 100, "stretch")


@pytest.mark.parametrize("name, codec, expected", [("clip.webm", "libvpx-vp9", "vp9"), ("clip.avi", "mpeg4", "mpeg4")])
def test_other_supported_containers(tmp_path, name: str, codec: str, expected: str) -> None:
    """WebM has no frame count in its header: probe counts packets instead of decoding."""
    frames, _ = synth_clip(10, 32, 48, seed=4)
    path = write_video(tmp_path / name, frames, 8, codec=codec)
    info = probe_video(path)
    assert (info.codec, info.num_frames, info.width, info.height) == (expected, 10, 48, 32)
    assert read_frames(path, 3, 6).shape == (3, 32, 48, 3)


@pytest.mark.parametrize("degrees", [0, 90, 180, 270])
@pytest.mark.parametrize("hflip, vflip", [(False, False), (True, False), (False, True)])
def test_every_display_orientation_matches_ffmpeg(tmp_path, degrees: int, hflip: bool, vflip: bool) -> None:
    """The eight EXIF orientations (rotations, and mirrored ones from front cameras) displayed as ffmpeg does."""
    frames, _ = synth_clip(2, 32, 48, seed=5)
    path = str(tmp_path / "oriented.mp4")
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.height, stream.width, stream.pix_fmt = 32, 48, "yuv444p"
        stream.set_display_rotation(degrees, hflip=hflip, vflip=vflip)
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    info = probe_video(path)
    height, width = (32, 48) if degrees in (0, 180) else (48, 32)
    assert (info.height, info.width) == (height, width)
    np.testing.assert_array_equal(read_frames(path, 1, 2)[0], ffmpeg_frame(path, 1, height, width))


def test_a_frame_size_over_the_limit_is_refused_before_decoding(good_clips: dict, monkeypatch) -> None:
    import tasks.video_io as video_io

    path = good_clips["videos"][0]
    assert probe_video(path).width == 96  # negative control: the default limit lets ordinary footage through
    monkeypatch.setattr(video_io, "MAX_VIDEO_PIXELS", 96 * 64 - 1)
    with pytest.raises(InputError) as info:
        probe_video(path)
    assert info.value.reason == "frame_too_large" and info.value.input == path and "96x64" in str(info.value)


def test_encoded_chroma_is_each_blocks_mean_colour() -> None:
    from tasks.video_io import _yuv420p_frame

    image = np.zeros((4, 6, 3), np.uint8)
    image[0::2, 0::2] = (255, 0, 0)  # each 2x2 block: one red pixel, three blue ones
    image[image.sum(-1) == 0] = (0, 0, 255)
    planes = _yuv420p_frame(image).to_ndarray()  # (6, 6): 4 rows of Y, then U (one row of 2x3), then V
    mean = np.full((2, 2, 3), np.round(image[:2, :2].reshape(-1, 3).mean(0)), np.uint8)
    u, v = cv2.cvtColor(mean, cv2.COLOR_RGB2YUV_I420)[2]  # a uniform 2x2 image's chroma: its colour's
    assert np.all(planes[4] == u) and np.all(planes[5] == v)  # the mean colour's chroma in every block
    assert np.array_equal(planes[:4], cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420)[:4])  # luma per pixel
    top_left_only = cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420)[4:]  # OpenCV's own 4:2:0 chroma
    assert not np.array_equal(top_left_only, planes[4:])


def test_stored_encodes_are_bit_identical_at_clip_size() -> None:
    """Content-addressed media and ``vpf reproduce`` need one stream per input; libx264's AVX-512 code gave a
    different one in most later encodes of a process (see ``x264_params``)."""
    from tasks.synthetic import CAMERAS, make_scene

    frames = make_scene(CAMERAS[1], num_frames=17, height=480, width=720, num_objects=1, seed=3).frames
    streams = {encode_stored(frames, 8.0) for _ in range(8)}
    assert len(streams) == 1


def test_x264_leaves_avx512_out_only_where_the_cpu_has_it() -> None:
    from tasks.video_io import X264_WITHOUT_AVX512, x264_params

    skylake_x = "fpu sse2 ssse3 sse4_1 sse4_2 avx avx2 fma bmi1 bmi2 avx512f avx512dq avx512cd avx512bw avx512vl"
    assert x264_params(skylake_x.split()) == X264_WITHOUT_AVX512
    assert x264_params(skylake_x.replace(" avx512vl", "").split()) is None  # libx264 needs all five to use it
    assert x264_params("fpu sse2 ssse3 sse4_1 sse4_2 avx avx2 fma bmi1 bmi2".split()) is None
    assert x264_params([]) is None  # not Linux, or no /proc: libx264 keeps its own choice
