"""
The profile cache is bounded in bytes, not only in entries: each profile is
charged an upper bound of its memory, estimated from the body it came in.
"""

from __future__ import annotations

import gc
import json
import tracemalloc
from typing import Any, Optional

from hypothesis import given, settings, strategies as st
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ivrproto.errors import ProfileError
from ivrproto.clients.lookup import ProfileLookup
from ivrproto.clients.profiles import Profile, estimate_footprint
from ivrproto.clients.sources import ExternalContactsClient, ProfileClient

MiB = 1024 * 1024


def profile_body(attributes: Any, external_id: str = "CRM-1") -> bytes:
    """
    A profile API answer holding ``attributes``.
    """
    return json.dumps(
        {"id": "p-1", "externalId": external_id, "attributes": attributes}, ensure_ascii=False
    ).encode("utf-8")


def wide(n: int = 15_000) -> dict[str, Any]:
    """
    A profile of ``n`` short attributes, as the attack suite sent.
    """
    return {f"a{i}": i if i % 2 else f"v{i}" for i in range(n)}


def parse(body: bytes) -> Profile:
    """
    The profile a ProfileClient makes of ``body``.
    """
    client = ProfileClient(Clock(), None, "http://api.test", None)
    return client._parse(body, "CRM-1")


def measured(body: bytes) -> tuple[int, Profile]:
    """
    The memory the profile parsed from ``body`` keeps, by tracemalloc (after
    a first parse, so that what the first use of anything allocates for
    good is not counted).
    """
    parse(body)
    # Decoded JSON holds no cycles: reference counting frees the rest.
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        profile = parse(body)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return after - before, profile


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=8)
    | st.dictionaries(st.text(max_size=8), children, max_size=8),
    max_leaves=200,
)


class EstimateTests(SynchronousTestCase):
    """
    estimate_footprint is never below what the decoded profile really takes.
    """

    def assert_bound(self, attributes: Any) -> int:
        body = profile_body(attributes)
        real, profile = measured(body)
        self.assertGreaterEqual(profile.footprint, real, (len(body), real))
        return real

    def test_fifteen_thousand_attributes(self) -> None:
        """For 15,000 attributes the bound holds and is within 3x of the real size."""
        body = profile_body(wide())
        real, profile = measured(body)
        assert profile.footprint is not None
        self.assertGreaterEqual(profile.footprint, real)
        self.assertLess(profile.footprint, 3 * real)

    def test_hostile_shapes(self) -> None:
        """Shapes costly per byte (empty objects, deep nesting, floats, astral text) stay under the bound."""
        self.assert_bound({"x": [{} for _ in range(5000)]})
        self.assert_bound({"x": [[] for _ in range(5000)]})
        deep: Any = 0
        for _ in range(200):
            deep = {"k": deep}
        self.assert_bound({"x": deep})
        self.assert_bound({"x": [i + 0.5 for i in range(5000)]})
        self.assert_bound({f"k{i}": "\U0001f600" + "a" * 50 for i in range(500)})
        self.assert_bound({"x": [str(i) for i in range(5000)]})

    def test_too_deep_is_malformed(self) -> None:
        """Nesting too deep to freeze is a malformed profile, not a RecursionError."""
        # Deep enough for freezing, not for the JSON decoder.
        body = b'{"id": "p-1", "attributes": {"x": ' + b'{"k": ' * 700 + b"0" + b"}" * 702
        error = self.assertRaises(ProfileError, parse, body)
        self.assertIn("nested too deeply", str(error))

    @settings(max_examples=30, deadline=None)
    @given(attributes=st.dictionaries(st.text(max_size=8), json_values, max_size=10))
    def test_random_profiles(self, attributes: dict[str, Any]) -> None:
        """Any JSON attributes stay under the bound."""
        self.assert_bound(attributes)

    def test_contacts_client_sets_footprint(self) -> None:
        """External Contacts profiles carry the bound too."""
        client = ExternalContactsClient(Clock(), None, "http://api.test", None)
        body = json.dumps({"id": "c-1", "customFields": wide(100)}).encode()
        self.assertEqual(client._parse(body, "x").footprint, estimate_footprint(body))

    def test_footprint_not_in_equality(self) -> None:
        """Two profiles that differ only in footprint are equal."""
        self.assertEqual(
            Profile(id="p", external_id="x", footprint=1), Profile(id="p", external_id="x")
        )


class ListSource:
    """
    A source answering at once with the profile made for each id.
    """

    def __init__(self, make: Any) -> None:
        self.make = make
        self.fetches = 0

    def fetch(self, external_id: str, deadline: Optional[float]) -> "Deferred[Optional[Profile]]":
        self.fetches += 1
        return succeed(self.make(external_id))


class ByteBoundTests(SynchronousTestCase):
    """
    The cache keeps within max_bytes however large the profiles.
    """

    def setUp(self) -> None:
        self.body = profile_body(wide())
        self.template = parse(self.body)
        assert self.template.footprint is not None
        self.each = self.template.footprint

    def make(self, **kwargs: Any) -> tuple[ProfileLookup, ListSource]:
        import attrs

        source = ListSource(lambda external_id: attrs.evolve(self.template, external_id=external_id))
        lookup = ProfileLookup(Clock(), source, rate_per_minute=10_000, **kwargs)
        return lookup, source

    def test_wide_profiles_bounded_in_bytes(self) -> None:
        """Fifty 15,000-attribute profiles: the cache keeps what fits in max_bytes, least recently used dropped."""
        lookup, source = self.make(max_bytes=20 * MiB, max_entry_bytes=8 * MiB)
        for n in range(50):
            result = self.successResultOf(lookup.lookup(f"CRM-{n}", 1.0))
            self.assertEqual(result.outcome, "found")
            self.assertLessEqual(lookup.cache_bytes, 20 * MiB)
        fits = (20 * MiB) // self.each
        self.assertEqual(lookup.cache_size, fits)
        self.assertEqual(lookup.stats.evictions, 50 - fits)
        self.assertEqual(self.successResultOf(lookup.lookup("CRM-49", 1.0)).outcome, "hit")
        self.assertEqual(self.successResultOf(lookup.lookup("CRM-0", 1.0)).outcome, "found")

    def test_real_memory_within_bound(self) -> None:
        """What the cached profiles really take, by tracemalloc, stays under max_bytes."""
        bound = 9 * MiB
        lookup, source = self.make(max_bytes=bound, max_entry_bytes=bound)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for n in range(6):
                # A fresh parse each time, as a fetch would give.
                body = profile_body(wide(), f"CRM-{n}")
                source.make = lambda external_id, body=body: parse(body)
                lookup.lookup(f"CRM-{n}", 1.0)
            gc.collect()
            used = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        self.assertGreater(lookup.cache_size, 0)
        self.assertLessEqual(used, bound)

    def test_profile_over_entry_bound_not_cached(self) -> None:
        """A profile over max_entry_bytes is given to its caller but not kept: the next call fetches again."""
        lookup, source = self.make(max_entry_bytes=self.each - 1)
        first = self.successResultOf(lookup.lookup("CRM-1", 1.0))
        self.assertEqual(first.outcome, "found")
        self.assertEqual(len(first.attributes or {}), 15_000)
        self.assertEqual(self.successResultOf(lookup.lookup("CRM-1", 1.0)).outcome, "found")
        self.assertEqual(source.fetches, 2)
        self.assertEqual((lookup.cache_size, lookup.cache_bytes), (0, 0))
        self.assertEqual(lookup.stats.too_large, 2)

    def test_default_entry_bound_skips_wide_profiles(self) -> None:
        """With the defaults, a 15,000-attribute profile is not cached; a small one is."""
        lookup, source = self.make()
        self.successResultOf(lookup.lookup("CRM-1", 1.0))
        self.assertEqual(lookup.cache_size, 0)
        small = ListSource(lambda external_id: parse(profile_body({"tier": "gold"})))
        lookup = ProfileLookup(Clock(), small)
        self.successResultOf(lookup.lookup("CRM-1", 1.0))
        self.assertEqual(lookup.cache_size, 1)
        self.assertLess(lookup.cache_bytes, 4096)

    def test_bytes_follow_replacement_and_expiry(self) -> None:
        """Replacing or expiring an entry gives its bytes back."""
        clock = Clock()
        source = ListSource(lambda external_id: parse(profile_body({"tier": "gold"})))
        lookup = ProfileLookup(clock, source, ttl=10.0)
        self.successResultOf(lookup.lookup("CRM-1", 1.0))
        size = lookup.cache_bytes
        clock.advance(11)
        self.successResultOf(lookup.lookup("CRM-1", 1.0))
        self.assertEqual(lookup.cache_bytes, size)
        clock.advance(11)
        # The entry expired: reading it drops it, and the fetch stores anew.
        self.assertEqual(self.successResultOf(lookup.lookup("CRM-1", 1.0)).outcome, "found")
        self.assertEqual(lookup.cache_bytes, size)

    def test_profile_without_footprint_walked(self) -> None:
        """A profile from another source (no footprint) is measured by a walk, and bounded the same way."""
        import attrs

        bare = attrs.evolve(self.template, footprint=None)
        lookup = ProfileLookup(
            Clock(), ListSource(lambda external_id: bare), max_bytes=64 * MiB, max_entry_bytes=MiB
        )
        self.successResultOf(lookup.lookup("CRM-1", 1.0))
        self.assertEqual(lookup.cache_size, 0)
        self.assertEqual(lookup.stats.too_large, 1)
        small = Profile(id="p", external_id="x", attributes={"tier": "gold"})
        lookup = ProfileLookup(Clock(), ListSource(lambda external_id: small))
        self.successResultOf(lookup.lookup("CRM-2", 1.0))
        self.assertEqual(lookup.cache_size, 1)
