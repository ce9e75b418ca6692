"""
What the caller hears and may press: menu values and the per-caller build
(:mod:`~ivrproto.menu.book`), the rules over profile attributes
(:mod:`~ivrproto.menu.rules`), opening hours (:mod:`~ivrproto.menu.schedules`)
and the emergency closure switch (:mod:`~ivrproto.menu.closure`).
"""
