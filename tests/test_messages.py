"""
Tests for :mod:`ivrproto.messages`: the Call Control frames of contract
section 3, parsed and encoded.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from ivrproto.errors import IVRError, MalformedFrame
from ivrproto.messages import (
    DEFAULT_CAPABILITIES,
    KNOWN_CAPABILITIES,
    VALID_DIGITS,
    Connect,
    Connected,
    DtmfReceived,
    Hangup,
    HangupReceived,
    Ignored,
    Play,
    PlatformError,
    Transfer,
    encode,
    parse_event,
    play_menu,
)

#: A string that must never be echoed back in an error message.
MARKER = "FRAME-MARKER-5e1f"

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)

EVENT_NAMES = st.sampled_from(["dtmf", "media", "hangup", "error", "connected"]) | st.text(
    max_size=10
)

#: What parse_event gives, when it gives anything.
EVENT_TYPES = (Connected, DtmfReceived, HangupReceived, PlatformError, Ignored)


def _frame(obj: Any) -> str:
    return json.dumps(obj)


class ParseEventTests(SynchronousTestCase):
    """
    Every event the contract lists, parsed from a text frame.
    """

    def test_connected(self) -> None:
        """A connected event gives its call control id and session."""
        event = parse_event(
            _frame({"event": "connected", "callControlId": "c-1", "session": {"a": 1}})
        )
        self.assertEqual(event, Connected("c-1", {"a": 1}))

    def test_connected_without_id(self) -> None:
        """A connected event without an id or session is still connected."""
        self.assertEqual(parse_event('{"event": "connected"}'), Connected(None, {}))

    def test_connected_session_not_an_object(self) -> None:
        """A session that is not an object is replaced by an empty one."""
        event = parse_event(_frame({"event": "connected", "callControlId": "c", "session": [1]}))
        self.assertEqual(event, Connected("c", {}))

    def test_connected_from_bytes(self) -> None:
        """A UTF-8 payload given as bytes parses like text."""
        payload = _frame({"event": "connected", "callControlId": "c-é"}).encode("utf-8")
        self.assertEqual(parse_event(payload), Connected("c-é", {}))

    def test_every_digit(self) -> None:
        """Each of 0-9, * and # is a key press."""
        self.assertEqual(VALID_DIGITS, frozenset("0123456789*#"))
        for digit in "0123456789*#":
            self.assertEqual(
                parse_event(_frame({"event": "dtmf", "digit": digit})), DtmfReceived(digit)
            )

    def test_dtmf_extra_fields_ignored(self) -> None:
        """Fields the contract does not list are ignored on a dtmf event."""
        event = parse_event(_frame({"event": "dtmf", "digit": "5", "duration": 120, "x": [1]}))
        self.assertEqual(event, DtmfReceived("5"))

    def test_hangup(self) -> None:
        """A hangup event carries its optional reason."""
        self.assertEqual(
            parse_event('{"event": "hangup", "reason": "caller"}'), HangupReceived("caller")
        )
        self.assertEqual(parse_event('{"event": "hangup"}'), HangupReceived(None))

    def test_hangup_numeric_reason(self) -> None:
        """A numeric reason is kept as text."""
        self.assertEqual(parse_event('{"event": "hangup", "reason": 16}'), HangupReceived("16"))

    def test_odd_field_types_keep_the_event(self) -> None:
        """A hangup or error whose optional fields are structures is still that event."""
        self.assertEqual(
            parse_event('{"event": "hangup", "reason": {"q": 850}}'), HangupReceived(None)
        )
        event = parse_event('{"event": "error", "message": ["x"], "code": {}}')
        assert isinstance(event, PlatformError)
        self.assertIsNone(event.code)

    def test_error(self) -> None:
        """An error event carries its message and optional code."""
        self.assertEqual(
            parse_event('{"event": "error", "message": "no call", "code": "E1"}'),
            PlatformError("no call", "E1"),
        )
        self.assertEqual(
            parse_event('{"event": "error", "message": "boom"}'), PlatformError("boom", None)
        )

    def test_error_without_message(self) -> None:
        """An error event without a message still is an error."""
        event = parse_event('{"event": "error", "code": 500}')
        self.assertIsInstance(event, PlatformError)
        assert isinstance(event, PlatformError)
        self.assertTrue(event.message)
        self.assertEqual(event.code, "500")

    def test_media_ignored(self) -> None:
        """A media event has no control meaning."""
        self.assertEqual(
            parse_event(_frame({"event": "media", "payload": "AAAA", "digit": "x"})),
            Ignored("media"),
        )

    def test_unknown_event_ignored(self) -> None:
        """An event the contract does not list is ignored, not an error."""
        self.assertEqual(parse_event('{"event": "recording_started"}'), Ignored("recording_started"))
        self.assertEqual(parse_event('{"event": ""}'), Ignored(""))

    def test_event_name_is_case_sensitive(self) -> None:
        """Only the exact event names of the contract have a meaning."""
        self.assertEqual(parse_event('{"event": "DTMF", "digit": "1"}'), Ignored("DTMF"))


class MalformedFrameTests(SynchronousTestCase):
    """
    Frames that cannot be understood raise :class:`MalformedFrame`, never
    quoting the frame.
    """

    def assertMalformed(self, frame: Any) -> MalformedFrame:
        """
        Assert that ``frame`` is malformed, and that the error does not echo it.
        """
        e = self.assertRaises(MalformedFrame, parse_event, frame)
        self.assertIsInstance(e, IVRError)
        self.assertTrue(e.reason)
        text = frame.decode("utf-8", "replace") if isinstance(frame, bytes) else frame
        if len(text) > 6:  # shorter frames may occur in any message by chance
            self.assertNotIn(text, str(e))
        self.assertNotIn(MARKER, str(e))
        self.assertNotIn(MARKER, e.reason)
        return e

    def test_not_json(self) -> None:
        """Text that is not JSON is malformed."""
        self.assertMalformed(f"not json {MARKER}")
        self.assertMalformed(f'{{"event": "dtmf", "digit": "{MARKER}"')
        self.assertMalformed("")

    def test_not_utf8(self) -> None:
        """Bytes that are not UTF-8 are malformed."""
        self.assertMalformed(b'{"event": "\xff\xfe' + MARKER.encode() + b'"}')

    def test_not_an_object(self) -> None:
        """A JSON value other than an object is malformed."""
        for frame in ("[]", f'["{MARKER}"]', f'"{MARKER}"', "1", "null", "true", "1.5"):
            self.assertMalformed(frame)

    def test_no_event(self) -> None:
        """An object without a string event is malformed."""
        for frame in (
            f'{{"digit": "{MARKER}"}}',
            '{"event": null}',
            '{"event": 1}',
            f'{{"event": ["{MARKER}"]}}',
            '{"event": {"name": "dtmf"}}',
        ):
            self.assertMalformed(frame)

    def test_dtmf_missing_digit(self) -> None:
        """A dtmf event without a digit is malformed."""
        self.assertMalformed('{"event": "dtmf"}')
        self.assertMalformed('{"event": "dtmf", "digit": null}')

    def test_dtmf_bad_digit(self) -> None:
        """A dtmf event whose digit is not one valid key is malformed."""
        for digit in ("", "10", "A", "a", "12#", " 1", "1 ", "٣", "+", MARKER, "\u0000"):
            self.assertMalformed(_frame({"event": "dtmf", "digit": digit}))

    def test_dtmf_digit_not_a_string(self) -> None:
        """A digit sent as a number, a list or a bool is malformed."""
        for digit in (5, 0, 5.0, True, ["5"], {"d": "5"}):
            self.assertMalformed(_frame({"event": "dtmf", "digit": digit}))

    def test_deeply_nested(self) -> None:
        """A frame nested beyond the parser's recursion limit is malformed."""
        self.assertMalformed("[" * 100_000)
        self.assertMalformed('{"event": "media", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")

    def test_huge_number(self) -> None:
        """A number too long to convert is malformed, not a crash."""
        self.assertMalformed('{"event": "dtmf", "digit": ' + "9" * 10_000 + "}")

    @settings(max_examples=300)
    @given(st.text())
    def test_arbitrary_text(self, text: str) -> None:
        """Arbitrary text parses to an event or raises MalformedFrame only."""
        try:
            event = parse_event(text)
        except MalformedFrame:
            return
        self.assertIsInstance(event, EVENT_TYPES)

    @settings(max_examples=300)
    @given(st.binary())
    def test_arbitrary_bytes(self, data: bytes) -> None:
        """Arbitrary bytes parse to an event or raise MalformedFrame only."""
        try:
            event = parse_event(data)
        except MalformedFrame:
            return
        self.assertIsInstance(event, EVENT_TYPES)

    @settings(max_examples=300)
    @given(JSON_VALUES)
    def test_arbitrary_json(self, value: Any) -> None:
        """Arbitrary JSON values parse to an event or raise MalformedFrame only."""
        try:
            event = parse_event(json.dumps(value))
        except MalformedFrame:
            return
        self.assertIsInstance(event, EVENT_TYPES)

    @settings(max_examples=300)
    @given(EVENT_NAMES, st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=5))
    def test_arbitrary_event_objects(self, name: str, fields: dict[str, Any]) -> None:
        """Objects with any fields around a (often known) event name never crash."""
        obj = dict(fields)
        obj["event"] = name
        obj["marker"] = MARKER
        try:
            event = parse_event(json.dumps(obj))
        except MalformedFrame as e:
            self.assertNotIn(MARKER, str(e))
        else:
            if name == "dtmf":
                self.assertEqual(event, DtmfReceived(obj["digit"]))
            elif name not in ("hangup", "error", "connected"):
                self.assertEqual(event, Ignored(name))

    @given(st.text(min_size=1).filter(lambda s: s not in VALID_DIGITS))
    def test_arbitrary_invalid_digit(self, digit: str) -> None:
        """Every string that is not one valid key is refused as a digit."""
        self.assertRaises(MalformedFrame, parse_event, _frame({"event": "dtmf", "digit": digit}))


class EncodeTests(SynchronousTestCase):
    """
    Commands encode to exactly the JSON of the contract.
    """

    def decoded(self, command: Any) -> Any:
        payload = encode(command)
        self.assertIsInstance(payload, bytes)
        return json.loads(payload.decode("utf-8"))

    def test_connect(self) -> None:
        """The connect frame asks for audio and the default capabilities."""
        self.assertEqual(
            self.decoded(Connect("c-1")),
            {
                "callControlId": "c-1",
                "media": "audio",
                "capabilities": ["play", "dtmf", "transfer", "hangup"],
            },
        )

    def test_connect_capabilities(self) -> None:
        """The default capabilities are a non-empty subset of the known ones."""
        self.assertTrue(DEFAULT_CAPABILITIES)
        self.assertTrue(set(DEFAULT_CAPABILITIES) <= set(KNOWN_CAPABILITIES))
        self.assertEqual(
            set(KNOWN_CAPABILITIES), {"play", "record", "dtmf", "transfer", "hangup"}
        )
        self.assertEqual(
            self.decoded(Connect("c", ("play", "record")))["capabilities"], ["play", "record"]
        )

    def test_play_with_dtmf(self) -> None:
        """A menu prompt listens for the keys, in order."""
        self.assertEqual(
            self.decoded(Play("c-1", "https://a/x.mp3", True, ("1", "2", "0"))),
            {
                "callControlId": "c-1",
                "action": "play",
                "audio": "https://a/x.mp3",
                "dtmf": {"enabled": True, "keys": ["1", "2", "0"]},
            },
        )

    def test_play_without_dtmf(self) -> None:
        """A prompt with DTMF disabled sends no keys."""
        self.assertEqual(
            self.decoded(Play("c-1", "https://a/ok.mp3", False)),
            {
                "callControlId": "c-1",
                "action": "play",
                "audio": "https://a/ok.mp3",
                "dtmf": {"enabled": False},
            },
        )

    def test_play_disabled_drops_keys(self) -> None:
        """Keys given with DTMF disabled are not sent."""
        self.assertEqual(
            self.decoded(Play("c", "https://a/ok.mp3", False, ("1",)))["dtmf"], {"enabled": False}
        )

    def test_transfer(self) -> None:
        """A transfer names the target and the type number."""
        self.assertEqual(
            self.decoded(Transfer("c-1", "ext:transfer_premium")),
            {
                "callControlId": "c-1",
                "action": "transfer",
                "target": "ext:transfer_premium",
                "type": "number",
            },
        )

    def test_hangup(self) -> None:
        """A hangup carries only the id and the action."""
        self.assertEqual(
            self.decoded(Hangup("c-1")), {"callControlId": "c-1", "action": "hangup"}
        )

    def test_compact_utf8(self) -> None:
        """The payload is compact JSON that round-trips non-ASCII ids."""
        payload = encode(Hangup("c-é"))
        self.assertEqual(payload, b'{"callControlId":"c-\xc3\xa9","action":"hangup"}')
        self.assertEqual(json.loads(payload)["callControlId"], "c-é")

    def test_values_frozen(self) -> None:
        """Messages are immutable values compared by content."""
        self.assertEqual(Transfer("c", "t"), Transfer("c", "t"))
        self.assertNotEqual(Transfer("c", "t"), Transfer("c", "u"))
        with self.assertRaises(Exception):
            Transfer("c", "t").target = "u"  # type: ignore[misc]


class PlayMenuTests(SynchronousTestCase):
    """
    :func:`play_menu` builds the prompts of one menu (contract item 5).
    """

    def test_one_play_per_prompt(self) -> None:
        """Each prompt is one play, in order, listening for every key."""
        plays = play_menu("c", ["https://a/1.mp3", "https://a/2.mp3"], ["1", "0"])
        self.assertEqual(
            plays,
            (
                Play("c", "https://a/1.mp3", True, ("1", "0")),
                Play("c", "https://a/2.mp3", True, ("1", "0")),
            ),
        )
        self.assertEqual(
            [json.loads(encode(p))["dtmf"] for p in plays],
            [{"enabled": True, "keys": ["1", "0"]}] * 2,
        )

    def test_keys_from_iterator(self) -> None:
        """Keys given as a one-shot iterable are used for every prompt."""
        plays = play_menu("c", ["u1", "u2", "u3"], iter(["1", "2", "0"]))
        self.assertEqual([p.keys for p in plays], [("1", "2", "0")] * 3)

    def test_no_prompts(self) -> None:
        """No prompts gives no plays."""
        self.assertEqual(play_menu("c", [], ["1"]), ())
