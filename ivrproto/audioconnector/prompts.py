"""
Prompt audio for the Audio Connector.

The protocol cannot play a URL: the server streams the audio itself, as
PCMU (G.711 mu-law) at 8 kHz, mono.  Prompts are WAV files, one directory per
language (``<directory>/<language>/<name>.wav``), each 8 kHz mono and either
16-bit PCM or mu-law.  A prompt is read and converted to PCMU once, split
into frames of :data:`FRAME_BYTES` (200 ms), and held in memory; one
:class:`PromptLibrary` serves every call, so a prompt's frames exist once
however many calls play it.

The mu-law conversion is Python's ``audioop`` (from the ``audioop-lts``
distribution on Python 3.13 and later, where the standard library no longer
has it).
"""

from __future__ import annotations

import os
import re
import struct
import sys
import warnings
import wave
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import attrs

from ivrproto.errors import IVRError

if sys.version_info >= (3, 13):  # pragma: no cover - depends on the Python
    import audioop
else:
    with warnings.catch_warnings():
        # Deprecated in 3.11 and 3.12 (and gone in 3.13, where audioop-lts
        # provides the same module): the codec is the one we want.
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop

#: The only sample rate the protocol carries.
SAMPLE_RATE = 8000

#: Bytes of one outbound frame: 200 ms of 8 kHz mu-law.
FRAME_BYTES = 1600

#: Seconds of audio in one full frame.
FRAME_SECONDS = FRAME_BYTES / SAMPLE_RATE

#: Mu-law silence, used to pad a prompt's last frame.
ULAW_SILENCE = b"\xff"

_WAVE_FORMAT_PCM = 1
_WAVE_FORMAT_MULAW = 7

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class PromptError(IVRError):
    """
    A prompt file that cannot be played.

    :ivar path: the file
    :ivar reason: what is wrong with it
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"prompt {path}: {reason}")


@attrs.frozen
class Prompt:
    """
    One prompt, as frames of PCMU ready to send.

    :ivar frames: frames of :data:`FRAME_BYTES` (the last padded with silence)
    :ivar duration: the seconds of audio in the file
    """

    language: str
    name: str
    frames: Tuple[bytes, ...] = attrs.field(repr=False)
    duration: float

    @property
    def size(self) -> int:
        "Bytes held."
        return sum(len(f) for f in self.frames)


def _riff_format(data: bytes) -> Optional[Tuple[int, int, int, int, bytes]]:
    """
    ``(format tag, channels, rate, bits, samples)`` of a RIFF WAVE file, read
    directly (``wave`` reads only PCM), or ``None`` if it is not one.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos, fmt, samples = 12, None, None
    while pos + 8 <= len(data):
        chunk_id, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = data[pos + 8 : pos + 8 + size]
        if chunk_id == b"fmt " and len(body) >= 16:
            fmt = struct.unpack("<HHIIHH", body[:16])
        elif chunk_id == b"data":
            samples = body
        pos += 8 + size + (size & 1)
    if fmt is None or samples is None:
        return None
    tag, channels, rate, _, _, bits = fmt
    return tag, channels, rate, bits, samples


def read_wav_as_pcmu(path: str) -> bytes:
    """
    The samples of an 8 kHz mono WAV file (16-bit PCM or mu-law) as PCMU.

    :raises PromptError: naming the file, for anything else
    """
    try:
        with wave.open(path, "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            samples = w.readframes(w.getnframes())
        tag, bits = _WAVE_FORMAT_PCM, width * 8
    except wave.Error:
        try:
            with open(path, "rb") as f:
                parsed = _riff_format(f.read())
        except OSError as e:
            raise PromptError(path, f"cannot be read ({e.strerror})") from None
        if parsed is None:
            raise PromptError(path, "is not a WAV file") from None
        tag, channels, rate, bits, samples = parsed
        if tag not in (_WAVE_FORMAT_PCM, _WAVE_FORMAT_MULAW):
            raise PromptError(path, f"has WAV format {tag}; use 16-bit PCM or mu-law") from None
    except (OSError, EOFError) as e:
        raise PromptError(path, f"cannot be read ({getattr(e, 'strerror', None) or e})") from None
    if rate != SAMPLE_RATE:
        raise PromptError(path, f"is {rate} Hz; prompts must be {SAMPLE_RATE} Hz")
    if channels != 1:
        raise PromptError(path, f"has {channels} channels; prompts must be mono")
    if tag == _WAVE_FORMAT_MULAW:
        if bits != 8:
            raise PromptError(path, f"is mu-law with {bits}-bit samples; expected 8")
        return samples
    if bits != 16:
        raise PromptError(path, f"is {bits}-bit PCM; prompts must be 16-bit PCM or mu-law")
    if len(samples) % 2:
        samples = samples[:-1]
    return audioop.lin2ulaw(samples, 2)


def split_frames(pcmu: bytes, frame_bytes: int = FRAME_BYTES) -> Tuple[bytes, ...]:
    "PCMU split into frames, the last one padded with mu-law silence."
    frames = []
    for start in range(0, len(pcmu), frame_bytes):
        frame = pcmu[start : start + frame_bytes]
        if len(frame) < frame_bytes:
            frame += ULAW_SILENCE * (frame_bytes - len(frame))
        frames.append(frame)
    return tuple(frames)


def write_wav_ulaw(path: str, pcmu: bytes) -> None:
    """
    Write PCMU samples as an 8 kHz mono mu-law WAV file (``wave`` writes only
    PCM).
    """
    fmt = struct.pack("<HHIIHH", _WAVE_FORMAT_MULAW, 1, SAMPLE_RATE, SAMPLE_RATE, 1, 8)
    # A non-PCM format has a cbSize field (0 here) and a fact chunk.
    fmt += b"\x00\x00"
    fact = struct.pack("<I", len(pcmu))
    pad = b"\x00" if len(pcmu) & 1 else b""
    body = (
        b"WAVE"
        + b"fmt " + struct.pack("<I", len(fmt)) + fmt
        + b"fact" + struct.pack("<I", len(fact)) + fact
        + b"data" + struct.pack("<I", len(pcmu)) + pcmu + pad
    )
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", len(body)) + body)


class PromptLibrary:
    """
    The prompts of one directory, loaded on first use and kept, shared by
    every call.

    :param directory: holds one sub-directory per language
    :param default_language: used when a call's language has no such prompt
        (``None``: no fallback)
    :param frame_bytes: bytes per outbound frame
    """

    def __init__(
        self,
        directory: str,
        default_language: Optional[str] = "en-US",
        frame_bytes: int = FRAME_BYTES,
    ) -> None:
        self.directory = Path(directory)
        self.default_language = default_language
        self.frame_bytes = frame_bytes
        self._cache: Dict[Tuple[str, str], Prompt] = {}

    def path(self, language: str, name: str) -> Path:
        """
        Where a prompt's file is.

        :raises PromptError: for a name or language that is not a plain file name
        """
        for part in (language, name):
            if not _NAME.fullmatch(part):
                raise PromptError(f"{language}/{name}", "is not a valid prompt name")
        return self.directory / language / f"{name}.wav"

    def _load(self, language: str, name: str) -> Prompt:
        key = (language, name)
        prompt = self._cache.get(key)
        if prompt is None:
            pcmu = read_wav_as_pcmu(os.fspath(self.path(language, name)))
            prompt = Prompt(language, name, split_frames(pcmu, self.frame_bytes), len(pcmu) / SAMPLE_RATE)
            self._cache[key] = prompt
        return prompt

    def get(self, language: Optional[str], name: str) -> Prompt:
        """
        A prompt in a language, or in the default language when the first has
        no file of that name.

        :raises PromptError: when neither has a playable file
        """
        languages = [lang for lang in (language, self.default_language) if lang]
        if not languages:
            raise PromptError(name, "no language given and no default language")
        for lang in languages[:-1]:
            if (lang, name) in self._cache or self.path(lang, name).exists():
                return self._load(lang, name)
        return self._load(languages[-1], name)

    def preload(self) -> List[PromptError]:
        """
        Load every ``.wav`` file of every language directory (at start-up, and
        for ``ivr check``).

        :return: one error per file that cannot be played (each names its file)
        """
        errors: List[PromptError] = []
        if not self.directory.is_dir():
            return [PromptError(os.fspath(self.directory), "is not a directory")]
        for lang_dir in sorted(p for p in self.directory.iterdir() if p.is_dir()):
            for wav in sorted(lang_dir.glob("*.wav")):
                try:
                    self._load(lang_dir.name, wav.stem)
                except PromptError as e:
                    errors.append(e)
        return errors

    @property
    def cached(self) -> int:
        "How many prompts are held."
        return len(self._cache)

    @property
    def size(self) -> int:
        "Bytes of audio held."
        return sum(p.size for p in self._cache.values())
