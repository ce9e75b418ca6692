"""
The Audio Connector front end: ivrproto as the WebSocket *server* that
Genesys Cloud's "Call Audio Connector" action connects to.

- :mod:`.auth`: the upgrade's API key and HTTP Message Signature (the
  signature's parsing, base and MAC in :mod:`.signature`);
- :mod:`.messages`: the client's JSON messages, parsed, and
  :mod:`.replies`: ours, encoded (no Twisted);
- :mod:`.prompts`: prompt audio, loaded once and held as 200 ms PCMU frames;
- :mod:`.session`: one session's protocol rules (with :mod:`.rules`, the
  stateless ones, and :mod:`.playout`, the paced audio), and :mod:`.seam`:
  the settings and the interfaces through which the call logic drives it;
- :mod:`.server`: the Autobahn server protocol and its factory;
- :mod:`.adapter`: maps the session's Call Control commands onto it.

docs/audio-connector.md describes the protocol as the server speaks it.
"""
