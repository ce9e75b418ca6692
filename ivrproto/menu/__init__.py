"""
What the caller hears and may press: the parts of a menu
(:mod:`~ivrproto.menu.values`), the menu book and the per-caller build
(:mod:`~ivrproto.menu.book`), loading the ``[menu]`` table
(:mod:`~ivrproto.menu.load`) and its checks (:mod:`~ivrproto.menu.checks`),
the tree ``ivr check`` prints (:mod:`~ivrproto.menu.describe`), the rules
over profile attributes (:mod:`~ivrproto.menu.rules`), opening hours
(:mod:`~ivrproto.menu.schedules`) and the emergency closure switch
(:mod:`~ivrproto.menu.closure`).
"""
