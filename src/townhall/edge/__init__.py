"""The edge role: fans one Space's chunks out to many listeners over WebSocket and Ogg."""
