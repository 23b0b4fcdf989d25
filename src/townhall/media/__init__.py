"""Media cores with no I/O: chunk format, jitter buffer, mixer, Ogg pages."""
