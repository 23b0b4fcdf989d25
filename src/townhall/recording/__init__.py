"""Recording, replay and clips: the shells around townhall.media.recording (api role)."""
