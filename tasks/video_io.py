"""Video I/O with PyAV: probe, frame-accurate decode of a frame range, H.264 mp4 encode.

Any fsspec URL can be read; local files go to FFmpeg by path, anything else as a seekable file object. Frames are
``(num_frames, height, width, 3)`` uint8 RGB; frame indices are native-fps indices counted from the first frame
(``end`` exclusive). The file's display matrix is applied as FFmpeg applies it, so :class:`VideoInfo` sizes are the
*displayed* ones. Every problem with a file raises :class:`tasks.errors.InputError` naming the file and a reason
(listed at :func:`probe_video`). :func:`encode_mp4` writes H.264 yuv420p mp4 with the index at the front
(``+faststart``) and refuses odd sizes (call :func:`pad_to_even` first when that is what you want).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import os
import queue
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from fractions import Fraction
from typing import Any

import av
import cv2
import fsspec
import numpy as np
from av.sidedata.sidedata import Type as SideDataType
from av.video.reformatter import VideoReformatter

from tasks.errors import InputError
from tasks.types import VideoInfo


DISPLAYMATRIX = SideDataType.DISPLAYMATRIX


SUPPORTED_CODECS: frozenset[str] = frozenset(
    {"h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "mpeg1video", "mpeg2video", "mjpeg", "prores", "dnxhd", "ffv1"}
)
"""Source codecs we ingest (FFmpeg codec names): camera, delivery and web codecs. Anything else (legacy codecs such as
``msmpeg4v2``, ``flv1``, ``wmv2``, ``cinepak``, animated ``gif``) is refused with ``unsupported_codec`` rather than
decoded into frames nobody has checked."""

MIN_FRAMES = 2
"""A video needs at least two frames; a single still is refused with ``too_few_frames``."""

MAX_VIDEO_PIXELS = 8192 * 8192
"""The largest frame decoded (8K UHD is 7680×4320): a file declaring more is refused with ``frame_too_large``
before a frame buffer is allocated, so one hostile header cannot take the worker's memory."""


# --------------------------------------------------------------------------------------------------------- opening
def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _local_path(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri


@contextlib.contextmanager
def _open_container(uri: str, storage_options: Mapping[str, Any] | None) -> Iterator[tuple[Any, int]]:
    """Open ``uri`` for demuxing; yields ``(container, size_bytes)``. Raises ``InputError`` for a missing, empty or
    non-media file."""
    uri = str(uri)
    try:
        if _is_local(uri):
            path = _local_path(uri)
            size = os.path.getsize(path)
            open(path, "rb").close()  # readable? (FFmpeg's own error would not say why)
            source: Any = path
            handle = contextlib.nullcontext()
        else:
            fs, path = fsspec.core.url_to_fs(uri, **dict(storage_options or {}))
            size = fs.size(path)
            handle = fs.open(path, "rb")
            source = None
    except FileNotFoundError:
        raise InputError(uri, "not_found", "no such file or object") from None
    except (PermissionError, IsADirectoryError) as exc:
        raise InputError(uri, "unreadable", f"cannot be read ({exc.strerror or exc})") from None
    if not size:
        raise InputError(uri, "empty_file", "the file is empty (0 bytes)")
    with handle as fileobj:
        if source is None:
            source = fileobj
        try:
            container = av.open(source, mode="r")
        except av.error.FFmpegError as exc:
            raise _classify_open_error(uri, source, exc) from None
        try:
            yield container, size
        finally:
            container.close()


def _classify_open_error(uri: str, source: Any, exc: Exception) -> InputError:
    """An mp4/mov whose ``moov`` index never arrived is a truncated video; other unreadable files are not videos."""
    head = b""
    try:
        if isinstance(source, str):
            with open(source, "rb") as f:
                head = f.read(12)
        else:
            source.seek(0)
            head = source.read(12)
    except OSError:
        pass
    if head[4:8] == b"ftyp" or b"moov" in str(exc).encode():
        return InputError(uri, "truncated_video", f"the MP4/MOV container is incomplete ({exc})")
    return InputError(uri, "not_a_video", f"not a readable media container ({exc})")


def _video_stream(uri: str, container: Any) -> Any:
    if not container.streams.video:
        if not len(container.streams):  # a valid container whose only track had no sample: muxers drop it
            raise InputError(uri, "too_few_frames", "the container holds no stream with frames (0 frames)")
        raise InputError(uri, "not_a_video", "the file has no video stream")
    stream = container.streams.video[0]
    codec = stream.codec_context.name if stream.codec_context is not None else None
    if codec not in SUPPORTED_CODECS:
        raise InputError(
            uri,
            "unsupported_codec",
            f"video codec {codec!r} is not supported; supported codecs are {sorted(SUPPORTED_CODECS)}",
        )
    return stream


def _decode_error(uri: str, stream: Any, size: int, where: str, exc: Exception) -> InputError:
    """A decode failure is ``truncated_video`` when the container's index points past the end of the file."""
    entries = stream.index_entries
    if len(entries):
        last = entries[len(entries) - 1]
        if last.pos + last.size > size:
            return InputError(
                uri, "truncated_video", f"the file ends at byte {size} but its index runs to {last.pos + last.size}"
            )
    return InputError(uri, "corrupt_video", f"{where} ({exc})")


def _stream_fps(uri: str, stream: Any) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or float(rate) <= 0:
        raise InputError(uri, "unknown_fps", "the video stream has no frame rate")
    return float(rate)


def _normalise_rotation(angle: float | None) -> int:
    """Counter-clockwise display rotation rounded to a multiple of 90, in [0, 360)."""
    return int(round((angle or 0) / 90.0)) * 90 % 360


def _display_transform(frame: Any) -> tuple[int, bool]:
    """``(rotation, mirrored)`` from a decoded frame's display matrix: the counter-clockwise angle (0/90/180/270) and
    whether the matrix also mirrors the picture (negative determinant, as some front cameras write)."""
    matrix = frame.side_data.get(DISPLAYMATRIX)
    if matrix is None:
        return 0, False
    m = np.frombuffer(bytes(matrix), dtype=np.int32)
    return _normalise_rotation(frame.rotation), int(m[0]) * int(m[4]) - int(m[1]) * int(m[3]) < 0


def _apply_display(image: np.ndarray, rotation: int, mirrored: bool) -> np.ndarray:
    """``image`` (H, W, 3) as FFmpeg displays it: flipped upside down first when the matrix mirrors, then turned
    counter-clockwise by ``rotation`` degrees (checked against the ffmpeg binary for all eight orientations)."""
    if mirrored:
        image = image[::-1]
    if rotation:
        image = np.rot90(image, k=rotation // 90)
    return np.ascontiguousarray(image) if (mirrored or rotation) else image


# --------------------------------------------------------------------------------------------------------- probe
def probe_video(
    uri: str, *, storage_options: Mapping[str, Any] | None = None, min_frames: int = MIN_FRAMES
) -> VideoInfo:
    """Read a video's metadata and decode its first frame (to check that it decodes and to read the rotation).

    The frame count comes from the container index; when the container has none (Matroska, WebM) the packets are
    counted without decoding. The display matrix stored in the file (side data, as phones write it) is applied as
    FFmpeg displays it (rotations and mirrored orientations): ``width``/``height`` are the displayed size and
    ``rotation`` is the counter-clockwise angle that decoding applies (0, 90, 180 or 270).

    Raises ``InputError`` with one of these reasons (the decoding functions use the same): ``not_found``,
    ``unreadable`` (permission denied, a folder), ``empty_file``, ``not_a_video`` (not a media container, or no video
    stream), ``truncated_video`` (the container or its frames end early), ``unsupported_codec`` (see
    :data:`SUPPORTED_CODECS`), ``unknown_fps``, ``too_few_frames`` (fewer than ``min_frames`` frames),
    ``frame_too_large`` (more than :data:`MAX_VIDEO_PIXELS` per frame), ``corrupt_video`` (a frame fails to decode).
    """
    uri = str(uri)
    with _open_container(uri, storage_options) as (container, size):
        stream = _video_stream(uri, container)
        fps = _stream_fps(uri, stream)
        codec = stream.codec_context.name
        num_frames = int(stream.frames or 0)
        if num_frames <= 0:
            num_frames = sum(1 for packet in container.demux(stream) if packet.size)
            container.seek(0)
        if num_frames < min_frames:
            raise InputError(
                uri, "too_few_frames", f"the video has {num_frames} frame(s), at least {min_frames} needed"
            )
        entries = stream.index_entries
        if len(entries) and entries[len(entries) - 1].pos + entries[len(entries) - 1].size > size:
            end_of_data = entries[len(entries) - 1].pos + entries[len(entries) - 1].size
            raise InputError(
                uri, "truncated_video", f"the file ends at byte {size} but its index runs to {end_of_data}"
            )
        coded = int(stream.codec_context.width or 0) * int(stream.codec_context.height or 0)
        if coded > MAX_VIDEO_PIXELS:  # refused before a frame buffer of that size is allocated
            raise InputError(
                uri,
                "frame_too_large",
                f"frames are {stream.codec_context.width}x{stream.codec_context.height}; "
                f"at most {MAX_VIDEO_PIXELS} pixels per frame are decoded",
            )
        first = None
        try:
            for first in container.decode(stream):
                break
        except av.error.FFmpegError as exc:
            raise _decode_error(uri, stream, size, "the first frame does not decode", exc) from None
        if first is None:
            raise InputError(uri, "truncated_video", f"the index lists {num_frames} frames but none decodes")
        rotation, _ = _display_transform(first)
        width, height = int(first.width), int(first.height)
        if rotation in (90, 270):
            width, height = height, width
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = num_frames / fps
    return VideoInfo(
        uri=uri,
        codec=codec,
        width=width,
        height=height,
        fps=fps,
        num_frames=num_frames,
        duration_s=duration,
        rotation=rotation,
        size_bytes=int(size),
    )


# --------------------------------------------------------------------------------------------------------- decode
def _pts_index(pts: int, origin: int, time_base: Fraction, fps: float) -> int:
    return int(round(float((pts - origin) * time_base) * fps))


def iter_frames_at(
    uri: str,
    indices: Iterable[int],
    *,
    storage_options: Mapping[str, Any] | None = None,
    rotate: bool = True,
    strict: bool = True,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, frame)`` for the increasing native frame ``indices`` (an iterable, possibly endless), each
    frame ``(H, W, 3)`` uint8 RGB, in one forward decoding pass.

    Seeks to the key frame before the first index, then decodes forward (in a worker thread, at most
    ``_DECODE_AHEAD`` frames ahead) and converts only the wanted frames, so memory is a few frames whatever the
    video's length. A frame's index is derived from its timestamp at the stream's average rate (constant frame rate
    assumed, as decord and torchvision also assume for seeking; variable-frame-rate sources are indexed at their
    average rate). With ``strict``, wanted indices past the last decodable frame raise ``truncated_video`` (after the
    frames that exist were yielded); without it the iteration just stops.
    """
    uri = str(uri)
    wanted = iter(indices)
    next_wanted = next(wanted, None)
    if next_wanted is None:
        return
    if next_wanted < 0:
        raise ValueError(f"{uri}: frame indices must be >= 0, got {next_wanted}")
    start = next_wanted
    with _open_container(uri, storage_options) as (container, size):
        stream = _video_stream(uri, container)
        stream.thread_type = "AUTO"
        # Decoding runs in a worker thread and hands the wanted frames over a small queue; two more threads convert
        # their colours, and frames are yielded in order. PyAV releases the GIL in both, so decoding and conversion
        # overlap like the ffmpeg CLI's decoder and filter threads.
        handoff: queue.Queue = queue.Queue(maxsize=_DECODE_AHEAD)
        stop = threading.Event()
        worker = threading.Thread(
            target=_decode_wanted,
            args=(uri, container, stream, size, start, next_wanted, wanted, strict, handoff, stop),
            name="vpf-decode",
            daemon=True,
        )
        worker.start()
        display: tuple[int, bool] | None = None
        local = threading.local()

        def convert(frame: Any) -> np.ndarray:
            reformatter = getattr(local, "reformatter", None)
            if reformatter is None:  # one swscale context per converting thread, not one per frame (less CPU)
                reformatter = local.reformatter = VideoReformatter()
            return reformatter.reformat(frame, format="rgb24").to_ndarray()

        pool = ThreadPoolExecutor(max_workers=_CONVERT_THREADS, thread_name_prefix="vpf-convert")
        pending: collections.deque[tuple[int, Future, Any]] = collections.deque()
        ended: BaseException | None = None
        finished = False
        try:
            while True:
                while not finished and len(pending) < _DECODE_AHEAD:
                    item = handoff.get()
                    if item is _DONE or isinstance(item, BaseException):
                        finished, ended = True, item if isinstance(item, BaseException) else None
                        break
                    index, frame = item
                    pending.append((index, pool.submit(convert, frame), frame))
                if not pending:
                    if ended is not None:
                        raise ended
                    return
                index, converted, frame = pending.popleft()
                image = converted.result()
                if rotate:
                    if display is None:  # the display matrix is the stream's: read it once
                        display = _display_transform(frame)
                    image = _apply_display(image, *display)
                yield index, image
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            while worker.is_alive():  # unblock a worker waiting for room in the queue, then let it finish
                with contextlib.suppress(queue.Empty):
                    handoff.get(timeout=0.05)
            worker.join()


_CONVERT_THREADS = 2
_DECODE_AHEAD = 4
_DONE = object()


def _decode_wanted(
    uri: str,
    container: Any,
    stream: Any,
    size: int,
    start: int,
    next_wanted: int,
    wanted: Iterator[int],
    strict: bool,
    handoff: queue.Queue,
    stop: threading.Event,
) -> None:
    """The decoding half of :func:`iter_frames_at`: puts ``(index, av.VideoFrame)`` for the wanted frames, then
    ``_DONE``, or the exception that ended decoding (``InputError``/``ValueError``), on ``handoff``."""

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    index = -1
    try:
        fps = _stream_fps(uri, stream)
        time_base = stream.time_base
        origin = stream.start_time or 0
        if start > 0:
            # Land on the key frame at or before `start`; the timestamps of the frames decoded after it tell us
            # their indices. Half a frame earlier absorbs rounding in the container's timestamps.
            container.seek(origin + int((start - 0.5) / fps / time_base), stream=stream, backward=True)
        seeking = start > 0
        try:
            for frame in container.decode(stream):
                if stop.is_set():
                    return
                if seeking:
                    # The first frame after a seek: its timestamp gives its index. If the timestamp is missing or
                    # lies past `start` (a wrong index in the file), decode from the beginning instead.
                    seeking = False
                    if frame.pts is None or (index := _pts_index(frame.pts, origin, time_base, fps)) > start:
                        container.seek(origin, stream=stream, backward=True)
                        index = -1
                        continue
                else:
                    index += 1
                if index < next_wanted:
                    continue
                if not put((index, frame)):
                    return
                previous, following = next_wanted, next(wanted, None)
                if following is None:
                    put(_DONE)
                    return
                if following <= previous:
                    raise ValueError(f"{uri}: frame indices must increase, got {following} after {previous}")
                next_wanted = following
        except av.error.FFmpegError as exc:
            raise _decode_error(uri, stream, size, f"decoding failed after frame {index}", exc) from None
        if strict:
            raise InputError(
                uri, "truncated_video", f"frame {next_wanted} was asked for but the video ends after frame {index}"
            )
        put(_DONE)
    except BaseException as exc:  # handed to the caller's thread, raised there
        put(exc)


def iter_frames(
    uri: str,
    start: int = 0,
    end: int | None = None,
    stride: int = 1,
    *,
    storage_options: Mapping[str, Any] | None = None,
    rotate: bool = True,
    strict: bool = True,
) -> Iterator[np.ndarray]:
    """Yield frames ``start, start + stride, …`` (< ``end``; ``None`` = to the end), each ``(H, W, 3)`` uint8 RGB.

    See :func:`iter_frames_at`; with ``end=None`` the iteration ends with the video.
    """
    if start < 0 or stride < 1 or (end is not None and end < start):
        raise ValueError(f"{uri}: bad frame range start={start}, end={end}, stride={stride}")
    indices = itertools.count(start, stride) if end is None else range(start, end, stride)
    for _, image in iter_frames_at(
        uri, indices, storage_options=storage_options, rotate=rotate, strict=strict and end is not None
    ):
        yield image


def read_frames(
    uri: str,
    start: int = 0,
    end: int | None = None,
    stride: int = 1,
    *,
    storage_options: Mapping[str, Any] | None = None,
    rotate: bool = True,
) -> np.ndarray:
    """Decode frames ``start:end:stride`` into one ``(T, H, W, 3)`` uint8 array (``end=None``: to the end).

    Memory is the returned array plus one frame. Raises ``InputError`` (``truncated_video`` when frames below an
    explicit ``end`` are missing). For long ranges prefer :func:`iter_frames` and process frame by frame.
    """
    frames = list(iter_frames(uri, start, end, stride, storage_options=storage_options, rotate=rotate))
    if not frames:
        raise InputError(str(uri), "too_few_frames", f"no frame in range {start}..{end} (stride {stride})")
    return np.stack(frames)


# --------------------------------------------------------------------------------------------------------- encode
def pad_to_even(frames: np.ndarray) -> np.ndarray:
    """Pad ``frames`` ``(T, H, W, 3)`` by replicating the last row/column so that H and W are even."""
    _, height, width, _ = frames.shape
    if height % 2 == 0 and width % 2 == 0:
        return frames
    return np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")


def _check_frame(image: np.ndarray, shape: tuple[int, ...] | None) -> tuple[int, ...]:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"frames must be (H, W, 3) uint8 RGB images, got {desc}")
    if shape is not None and image.shape != shape:
        raise ValueError(f"all frames must have one size, got {image.shape} after {shape}")
    height, width, _ = image.shape
    if height % 2 or width % 2:
        raise ValueError(
            f"H.264 yuv420p needs even width and height, got {width}x{height}; "
            "resize/crop to even sizes or call tasks.video_io.pad_to_even(frames)"
        )
    return image.shape


STORED_CRF = 16
"""libx264 quality (crf) of the clips and renders the catalog stores."""
STORED_PRESET = "veryfast"
"""libx264 preset of the clips and renders the catalog stores. Chosen with :data:`STORED_CRF` for a similar picture
at far less CPU than ``medium`` at crf 18: encoding is a large share of the factory's CPU work per clip, and every
clip is encoded twice (the ingested clip and its render). Measurements: docs/throughput.md, "Encoding"."""
STORED_TUNE = "fastdecode"
"""libx264 tuning of the clips and renders the catalog stores: no CABAC, no deblocking filter, so they decode with
less CPU, for the factory (each render reads its clip, each score reads its render back) and for every training epoch
that reads them, at the cost of somewhat larger files (figures: docs/throughput.md, "Encoding")."""


_X264_AVX512 = frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})  # what libx264 needs for it
X264_WITHOUT_AVX512 = "asm=SSE2Fast,AVX2"
"""libx264's CPU features on a processor with AVX-512: everything it detects on such a processor except AVX-512."""


def x264_params(cpu_flags: Iterable[str] | None = None) -> str | None:
    """Extra libx264 parameters that make its output a function of its input, or None where none are needed.

    With its AVX-512 code, libx264 (as PyAV bundles it) can encode the same frames into different streams from one
    call to the next (in its macroblock-tree rate control); without AVX-512 every encode is identical. Stored media are
    content-addressed and ``vpf reproduce`` expects a CPU engine's render to be bit-identical, so encodes leave
    AVX-512 out, at a small CPU cost (the observations and their cost: docs/throughput.md, "Encoding").

    ``cpu_flags``: the processor's feature flags as Linux names them (default: read from ``/proc/cpuinfo``; elsewhere
    none are known and libx264 keeps its own choice).
    """
    if cpu_flags is None:
        cpu_flags = _cpu_flags()
    return X264_WITHOUT_AVX512 if _X264_AVX512 <= set(cpu_flags) else None


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def _yuv420p_frame(image: np.ndarray) -> av.VideoFrame:
    """An `(H, W, 3)` uint8 RGB image (even H and W) as a yuv420p frame, converted by OpenCV: BT.601 limited range,
    the matrix FFmpeg assumes when it decodes untagged video. OpenCV's 4:2:0 conversion takes each 2×2 block's chroma
    from one pixel; converting the image whose blocks hold their mean colour instead gives each block's mean chroma.

    It takes less CPU than FFmpeg's own converter and its clips decode closer to the input (docs/throughput.md).
    """
    height, width = image.shape[:2]
    planes = cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420)  # (H * 3 / 2, W): Y, then U and V
    means = cv2.resize(image, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
    blocks = cv2.resize(means, (width, height), interpolation=cv2.INTER_NEAREST)
    planes[height:] = cv2.cvtColor(blocks, cv2.COLOR_RGB2YUV_I420)[height:]
    return av.VideoFrame.from_ndarray(planes, format="yuv420p")


def encode_stored(frames: np.ndarray | Iterable[np.ndarray], fps: float) -> bytes:
    """:func:`encode_mp4` with the catalog's settings (:data:`STORED_CRF`, :data:`STORED_PRESET`,
    :data:`STORED_TUNE`), one encoding thread (the factory encodes many clips side by side)."""
    return encode_mp4(frames, fps, crf=STORED_CRF, preset=STORED_PRESET, tune=STORED_TUNE, threads=1)


def encode_mp4(
    frames: np.ndarray | Iterable[np.ndarray],
    fps: float,
    *,
    crf: int = 18,
    preset: str = "medium",
    tune: str | None = None,
    threads: int | None = None,
) -> bytes:
    """Encode ``frames`` (a ``(T, H, W, 3)`` uint8 RGB array, or an iterable of ``(H, W, 3)`` frames, encoded as they
    arrive) with even H and W as H.264 yuv420p mp4 bytes at ``fps``.

    ``crf`` (0–51, lower is better), ``preset`` (ultrafast … veryslow) and ``tune`` (film, fastdecode, …) are
    libx264's; ``threads``: libx264's encoding threads (None: its own choice, about 1.5 per core; 1 costs less CPU per
    clip, the better choice when many clips are encoded side by side). The mp4 index is written at the front
    (``+faststart``) for web playback. Raises ``ValueError`` for no frames, odd sizes or a wrong dtype.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    rate = Fraction(fps).limit_denominator(1001)
    shape = None
    # The faststart pass re-reads the output, so FFmpeg needs a real file rather than a memory buffer.
    with tempfile.TemporaryDirectory(prefix="vpf-enc-") as tmp:
        path = os.path.join(tmp, "out.mp4")
        with av.open(path, mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = None
            for image in frames:
                shape = _check_frame(image, shape)
                if stream is None:
                    stream = container.add_stream("libx264", rate=rate)
                    stream.height, stream.width = shape[:2]
                    stream.pix_fmt = "yuv420p"
                    stream.options = {"crf": str(int(crf)), "preset": preset}
                    if tune:
                        stream.options["tune"] = tune
                    if params := x264_params():
                        stream.options["x264-params"] = params
                    if threads is not None:
                        stream.options["threads"] = str(int(threads))
                        stream.thread_count = int(threads)
                for packet in stream.encode(_yuv420p_frame(image)):
                    container.mux(packet)
            if stream is None:
                raise ValueError("frames is empty: nothing to encode")
            for packet in stream.encode():
                container.mux(packet)
        with open(path, "rb") as f:
            return f.read()


def write_mp4(
    frames: np.ndarray,
    path_or_url: str,
    fps: float,
    *,
    crf: int = 18,
    preset: str = "medium",
    storage_options: Mapping[str, Any] | None = None,
) -> str:
    """Encode ``frames`` ``(T, H, W, 3)`` with :func:`encode_mp4` and write them to a local path or fsspec URL."""
    data = encode_mp4(frames, fps, crf=crf, preset=preset)
    with fsspec.open(str(path_or_url), "wb", **dict(storage_options or {})) as f:
        f.write(data)
    return str(path_or_url)


# --------------------------------------------------------------------------------------------------------- geometry
def fit_frame(
    image: np.ndarray, height: int, width: int, mode: str = "resize", *, nearest: bool = False
) -> np.ndarray:
    """Fit one image ``(H, W, C)`` or ``(H, W)`` to ``height`` × ``width``.

    ``mode="resize"`` scales to the target size (aspect ratio not kept, as VideoPainter's data loader does);
    ``mode="crop"`` first takes the largest centred window with the target aspect ratio, then scales it. Frames use
    area (down) / bicubic (up) interpolation; masks pass ``nearest=True`` so they stay binary and follow the same
    pixels as their video.
    """
    if mode not in ("resize", "crop"):
        raise ValueError(f"resize mode must be 'resize' or 'crop', got {mode!r}")
    src_h, src_w = image.shape[:2]
    if mode == "crop":
        if src_w * height > width * src_h:  # too wide: crop the sides
            crop_w = max(1, round(src_h * width / height))
            x0 = (src_w - crop_w) // 2
            image = image[:, x0 : x0 + crop_w]
        else:  # too tall: crop top and bottom
            crop_h = max(1, round(src_w * height / width))
            y0 = (src_h - crop_h) // 2
            image = image[y0 : y0 + crop_h]
        src_h, src_w = image.shape[:2]
    if (src_h, src_w) == (height, width):
        return np.ascontiguousarray(image)
    if nearest:
        interpolation = cv2.INTER_NEAREST
    elif src_h * src_w > height * width:
        interpolation = cv2.INTER_AREA
    else:
        interpolation = cv2.INTER_CUBIC
    if image.dtype == bool:
        resized = cv2.resize(image.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
        return resized.astype(bool)
    return cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=interpolation)


def fit_box(
    box: tuple[float, float, float, float],
    src_height: int,
    src_width: int,
    height: int,
    width: int,
    mode: str = "resize",
) -> tuple[float, float, float, float]:
    """Map a box ``(x0, y0, x1, y1)`` in source pixels to the frame produced by :func:`fit_frame` (same geometry)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    off_x = off_y = 0.0
    if mode == "crop":
        if src_width * height > width * src_height:
            crop_w = max(1, round(src_height * width / height))
            off_x, src_width = (src_width - crop_w) // 2, crop_w
        else:
            crop_h = max(1, round(src_width * height / width))
            off_y, src_height = (src_height - crop_h) // 2, crop_h
    sx, sy = width / src_width, height / src_height
    clamp_x = lambda v: min(max((v - off_x) * sx, 0.0), float(width))  # noqa: E731
    clamp_y = lambda v: min(max((v - off_y) * sy, 0.0), float(height))  # noqa: E731
    return clamp_x(x0), clamp_y(y0), clamp_x(x1), clamp_y(y1)
