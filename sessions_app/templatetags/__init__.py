"""Template tags of the pages: `registry` (badges, dates, devices, charts in the tables) and
`audit_text` (an audit record told as a sentence). Presentation only: they may import the charts,
devices and settings, never services.
"""
