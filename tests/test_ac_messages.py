"""
Tests for ivrproto.audioconnector.messages: parsing and encoding the JSON.
"""

from __future__ import annotations

import orjson
from twisted.trial.unittest import SynchronousTestCase

from ivrproto.audioconnector.messages import (
    ClientError,
    Close,
    Discarded,
    Dtmf,
    Ignored,
    Invalid,
    MalformedMessage,
    Open,
    Ping,
    PlaybackCompleted,
    PlaybackStarted,
    Resumed,
    Update,
    choose_media,
    format_duration,
    parse_duration,
    parse_message,
)
from ivrproto.audioconnector.replies import (
    Closed,
    Disconnect,
    Event,
    MessageTooLarge,
    Opened,
    Pong,
    barge_in,
    bot_turn_response,
    encode,
)

SID = "f686b643-e229-407f-a2f0-b0d210ae02ef"

# The open of the documented example session.
EXAMPLE_OPEN = (
    '{"version":"2","type":"open","id":"f686b643-e229-407f-a2f0-b0d210ae02ef","seq":1,'
    '"serverseq":0,"position":"PT0S","parameters":{"organizationId":'
    '"0ce25900-7fae-49e4-92e1-50518906b27c","conversationId":"b6cf730c-371a-4682-9779-5ee2e8d0c190",'
    '"participant":{"id":"91c32d13-d078-40ab-8750-42bd52c48f6d","ani":"tel:+14155550100",'
    '"aniName":"Test Caller","dnis":"tel:+18005550199"},"media":[{"type":"audio","format":"PCMU",'
    '"channels":["external"],"rate":8000},{"type":"audio","format":"PCMU","channels":["internal"],'
    '"rate":8000}],"language":"en-US","inputVariables":{"customerId":"C-42","callReason":"billing"}}}'
)


def frame(kind: str, seq: int = 2, **parameters: object) -> bytes:
    return orjson.dumps(
        {"version": "2", "type": kind, "id": SID, "seq": seq, "serverseq": 1,
         "position": "PT1.6S", "parameters": parameters}
    )


class ParseTests(SynchronousTestCase):
    def test_example_open(self) -> None:
        "The documented example's open is parsed with its envelope and fields."
        r = parse_message(EXAMPLE_OPEN)
        self.assertEqual((r.id, r.seq, r.serverseq, r.position), (SID, 1, 0, 0.0))
        assert isinstance(r.message, Open)
        self.assertEqual(r.message.participant.ani, "tel:+14155550100")
        self.assertEqual(r.message.language, "en-US")
        self.assertEqual(r.message.input_variables, {"customerId": "C-42", "callReason": "billing"})
        self.assertEqual(len(r.message.media), 2)
        self.assertFalse(r.message.is_probe)

    def test_probe(self) -> None:
        "An open with the null conversation and participant ids is a probe."
        null = "00000000-0000-0000-0000-000000000000"
        r = parse_message(frame("open", 1, organizationId="o", conversationId=null,
                                participant={"id": null, "ani": "", "aniName": "", "dnis": ""},
                                media=[]))
        assert isinstance(r.message, Open)
        self.assertTrue(r.message.is_probe)

    def test_each_client_type(self) -> None:
        "Each client message type is parsed into its value."
        cases = [
            (frame("ping", rtt="PT0.002143602S"), Ping(0.002143602)),
            (frame("ping"), Ping(None)),
            (frame("dtmf", digit="#"), Dtmf("#")),
            (frame("playback_started"), PlaybackStarted()),
            (frame("playback_completed"), PlaybackCompleted()),
            (frame("resumed", start="PT2S", discarded="PT0.4S"), Resumed(2.0, 0.4)),
            (frame("discarded", start="PT1M", discarded="PT1S"), Discarded(60.0, 1.0)),
            (frame("update", language="fr-FR"), Update("fr-FR")),
            (frame("error", code=429, message="slow", retryAfter="PT3S"), ClientError(429, "slow", 3.0)),
            (frame("close", reason="end"), Close("end")),
        ]
        for text, expected in cases:
            self.assertEqual(parse_message(text).message, expected)

    def test_unknown_type_ignored(self) -> None:
        "A type this server does not handle is Ignored, not an error."
        self.assertEqual(parse_message(frame("something_new")).message, Ignored("something_new"))
        self.assertEqual(parse_message(frame("opened")).message, Ignored("opened"))

    def test_malformed(self) -> None:
        "Frames without the envelope, or known types without their fields, are malformed."
        bad = [
            b"not json",
            b"[1]",
            b'{"id":"x","seq":1,"parameters":{}}',
            b'{"type":"ping","seq":1,"parameters":{}}',
            b'{"type":"ping","id":"x","seq":"1","parameters":{}}',
            b'{"type":"ping","id":"x","seq":true,"parameters":{}}',
            b'{"type":"ping","id":"x","seq":1}',
        ]
        for text in bad:
            with self.assertRaises(MalformedMessage, msg=text):
                parse_message(text)

    def test_invalid_parameters(self) -> None:
        "Known types with wrong parameters keep their envelope and are Invalid."
        bad = [
            frame("dtmf", digit="12"),
            frame("dtmf", digit="A"),
            frame("dtmf"),
            frame("error", code="429"),
            frame("open", 1, organizationId="o"),
            frame("open", 1, organizationId="o", conversationId="c", media="PCMU"),
        ]
        for text in bad:
            r = parse_message(text)
            self.assertIsInstance(r.message, Invalid, text)
            self.assertEqual(r.seq, orjson.loads(text)["seq"])

    def test_digit_alphabet_is_a_parameter(self) -> None:
        "Keys beyond 0-9*# are accepted when the alphabet allows them."
        self.assertEqual(parse_message(frame("dtmf", digit="A"), frozenset("A")).message, Dtmf("A"))

    def test_reason_does_not_quote(self) -> None:
        "A malformed frame's reason does not repeat its content."
        r = parse_message(frame("dtmf", digit="SECRET"))
        assert isinstance(r.message, Invalid)
        self.assertNotIn("SECRET", r.message.reason)
        with self.assertRaises(MalformedMessage) as e:
            parse_message(b'{"type":"SECRET","id":"x","seq":"SECRET","parameters":{}}')
        self.assertNotIn("SECRET", str(e.exception))

    def test_durations(self) -> None:
        "ISO 8601 durations are read and written."
        self.assertEqual(parse_duration("PT1H2M3.5S"), 3723.5)
        self.assertIsNone(parse_duration("1.5"))
        self.assertIsNone(parse_duration("PT"))
        self.assertIsNone(parse_duration(3))
        self.assertEqual(format_duration(0.4), "PT0.4S")
        self.assertEqual(format_duration(2), "PT2S")


class EncodeTests(SynchronousTestCase):
    def decoded(self, message: object, seq: int = 3, clientseq: int = 4) -> dict:
        return orjson.loads(encode(message, SID, seq, clientseq))  # type: ignore[arg-type,no-any-return]

    def test_envelope_on_every_message(self) -> None:
        "Every server message carries version, id, type, seq, clientseq and parameters."
        for message in (Opened({"format": "PCMU"}), Pong(), Event((barge_in(),)),
                        Disconnect("completed"), Closed()):
            obj = self.decoded(message)
            self.assertEqual(
                set(obj), {"version", "id", "type", "seq", "clientseq", "parameters"}
            )
            self.assertEqual((obj["version"], obj["id"], obj["seq"], obj["clientseq"]), ("2", SID, 3, 4))
            self.assertIsInstance(obj["parameters"], dict)

    def test_example_messages(self) -> None:
        "The server messages of the documented example encode as shown there."
        offer = {"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 8000}
        self.assertEqual(
            self.decoded(Opened(offer), 1, 1),
            {"version": "2", "id": SID, "type": "opened", "seq": 1, "clientseq": 1,
             "parameters": {"media": [offer]}},
        )
        self.assertEqual(
            self.decoded(Event((bot_turn_response("Welcome"),)), 2, 1)["parameters"],
            {"entities": [{"type": "bot_turn_response",
                           "data": {"disposition": "match", "text": "Welcome", "confidence": 1}}]},
        )
        self.assertEqual(
            self.decoded(Disconnect("completed", "menu choice", {"intent": "billing", "digits": "1"}), 5, 6)["parameters"],
            {"reason": "completed", "info": "menu choice",
             "outputVariables": {"intent": "billing", "digits": "1"}},
        )
        self.assertEqual(self.decoded(Closed(), 6, 7)["parameters"], {})
        self.assertEqual(self.decoded(Event((barge_in(),)))["parameters"],
                         {"entities": [{"type": "barge_in", "data": {}}]})

    def test_opened_options(self) -> None:
        "discardTo and startPaused are written only when set."
        params = self.decoded(Opened({"f": 1}, discard_to=1.5, start_paused=False))["parameters"]
        self.assertEqual(params, {"media": [{"f": 1}], "discardTo": "PT1.5S", "startPaused": False})

    def test_output_variables_strings_only(self) -> None:
        "Output variables that are not strings are refused."
        self.assertRaises(TypeError, Disconnect, "completed", None, {"digits": 1})

    def test_too_large(self) -> None:
        "A message over the client's limit is refused."
        with self.assertRaises(MessageTooLarge):
            encode(Disconnect("completed", None, {"x": "y" * 70000}), SID, 1, 1)


class ChooseMediaTests(SynchronousTestCase):
    def test_picks_external_pcmu(self) -> None:
        "The PCMU 8 kHz external offer is chosen, as offered."
        r = parse_message(EXAMPLE_OPEN)
        assert isinstance(r.message, Open)
        self.assertEqual(
            choose_media(r.message.media),
            {"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 8000},
        )

    def test_none_when_nothing_fits(self) -> None:
        "No offer of the wanted format, rate and channels gives None."
        self.assertIsNone(choose_media(({"type": "audio", "format": "L16", "channels": ["external"], "rate": 8000},)))
        self.assertIsNone(choose_media(({"type": "audio", "format": "PCMU", "channels": ["external", "internal"], "rate": 8000},)))
        self.assertIsNone(choose_media(({"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 16000},)))
