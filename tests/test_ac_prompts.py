"""
Tests for ivrproto.audioconnector.prompts: WAV loading, conversion, framing.
"""

from __future__ import annotations

import math
import os
import struct
import wave

from twisted.trial.unittest import SynchronousTestCase

from tests.test_ac_server import temp_dir
from ivrproto.audioconnector.prompts import (
    FRAME_BYTES,
    PromptError,
    PromptLibrary,
    read_wav_as_pcmu,
    split_frames,
    write_wav_ulaw,
)


def tone(samples: int, amplitude: int = 8000) -> bytes:
    "16-bit little-endian PCM of a 400 Hz tone at 8 kHz."
    return b"".join(
        struct.pack("<h", int(amplitude * math.sin(2 * math.pi * 400 * i / 8000)))
        for i in range(samples)
    )


def write_pcm(path: str, pcm: bytes, rate: int = 8000, channels: int = 1, width: int = 2) -> None:
    with wave.open(path, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(pcm)


class ReadTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = temp_dir(self)

    def file(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def test_pcm16_converted_to_ulaw(self) -> None:
        "16-bit PCM becomes one mu-law byte per sample, silence as 0xFF."
        path = self.file("a.wav")
        write_pcm(path, b"\x00\x00" * 10 + tone(100))
        pcmu = read_wav_as_pcmu(path)
        self.assertEqual(len(pcmu), 110)
        self.assertEqual(pcmu[:10], b"\xff" * 10)
        self.assertNotEqual(set(pcmu[10:]), {0xFF})

    def test_ulaw_kept_as_is(self) -> None:
        "A mu-law WAV's samples are used unchanged."
        path = self.file("u.wav")
        samples = bytes(range(256)) * 3 + b"\x01"
        write_wav_ulaw(path, samples)
        self.assertEqual(read_wav_as_pcmu(path), samples)

    def test_refusals_name_the_file(self) -> None:
        "Wrong rate, channels, width, format or a non-WAV file is refused naming the file."
        cases = {
            "rate.wav": lambda p: write_pcm(p, tone(10), rate=16000),
            "stereo.wav": lambda p: write_pcm(p, tone(10) * 2, channels=2),
            "eight.wav": lambda p: write_pcm(p, b"\x80" * 10, width=1),
            "text.wav": lambda p: open(p, "w").write("hello"),
        }
        for name, make in cases.items():
            path = self.file(name)
            make(path)
            with self.assertRaises(PromptError, msg=name) as e:
                read_wav_as_pcmu(path)
            self.assertIn(path, str(e.exception))
        with self.assertRaises(PromptError) as e:
            read_wav_as_pcmu(self.file("missing.wav"))
        self.assertIn("missing.wav", str(e.exception))

    def test_other_wav_format_refused(self) -> None:
        "A WAV in another format (A-law) is refused with its format."
        path = self.file("alaw.wav")
        write_wav_ulaw(path, b"\x00" * 10)
        data = bytearray(open(path, "rb").read())
        data[20:22] = struct.pack("<H", 6)
        open(path, "wb").write(bytes(data))
        with self.assertRaises(PromptError) as e:
            read_wav_as_pcmu(path)
        self.assertIn("format 6", str(e.exception))


class FramesTests(SynchronousTestCase):
    def test_split_and_pad(self) -> None:
        "Audio is split into 1600-byte frames, the last padded with silence."
        frames = split_frames(b"\x01" * 3300)
        self.assertEqual([len(f) for f in frames], [FRAME_BYTES] * 3)
        self.assertEqual(frames[2], b"\x01" * 100 + b"\xff" * 1500)
        self.assertEqual(split_frames(b""), ())


class LibraryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = temp_dir(self)
        for lang in ("en-US", "fr-FR"):
            os.makedirs(os.path.join(self.dir, lang))
        write_pcm(os.path.join(self.dir, "en-US", "welcome.wav"), tone(8000))
        write_pcm(os.path.join(self.dir, "fr-FR", "welcome.wav"), tone(4000))
        write_pcm(os.path.join(self.dir, "en-US", "bye.wav"), tone(800))

    def test_cached_and_shared(self) -> None:
        "The same prompt object serves every request for it."
        lib = PromptLibrary(self.dir)
        first = lib.get("en-US", "welcome")
        self.assertIs(lib.get("en-US", "welcome"), first)
        self.assertEqual(len(first.frames), 5)
        self.assertEqual(first.duration, 1.0)
        self.assertEqual(lib.cached, 1)
        self.assertEqual(lib.size, 8000)

    def test_language_and_fallback(self) -> None:
        "A call's language is used, and the default language when it lacks the prompt."
        lib = PromptLibrary(self.dir)
        self.assertEqual(lib.get("fr-FR", "welcome").duration, 0.5)
        self.assertEqual(lib.get("fr-FR", "bye").language, "en-US")
        self.assertEqual(lib.get(None, "bye").language, "en-US")
        self.assertRaises(PromptError, lib.get, "fr-FR", "nothing")

    def test_no_fallback(self) -> None:
        "Without a default language a missing prompt is an error."
        lib = PromptLibrary(self.dir, default_language=None)
        self.assertRaises(PromptError, lib.get, "fr-FR", "bye")

    def test_names_cannot_escape(self) -> None:
        "Prompt names and languages with path parts are refused."
        lib = PromptLibrary(self.dir)
        self.assertRaises(PromptError, lib.get, "en-US", "../en-US/bye")
        self.assertRaises(PromptError, lib.get, "..", "bye")

    def test_preload_reports_bad_files(self) -> None:
        "preload loads every file and names each that cannot be played."
        write_pcm(os.path.join(self.dir, "fr-FR", "loud.wav"), tone(10), rate=44100)
        lib = PromptLibrary(self.dir)
        errors = lib.preload()
        self.assertEqual(lib.cached, 3)
        self.assertEqual([os.path.basename(e.path) for e in errors], ["loud.wav"])
        self.assertEqual(len(PromptLibrary(os.path.join(self.dir, "none")).preload()), 1)
