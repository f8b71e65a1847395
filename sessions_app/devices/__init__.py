"""What a session came from: its device (the parsed ``User-Agent``), its place (GeoIP, optional) and
the devices a user has signed in from before.

Core, like ``auth/``: imported by services and interfaces, importing neither. Parsing and lookups
run once, at login; pages read what the session row keeps.
"""
