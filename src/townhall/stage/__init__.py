"""The stage role: speakers in over WHIP, one mix, one Opus encode, chunks out on NATS."""
