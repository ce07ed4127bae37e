"""resonance bridge: relays a Resonance node's Kafka topic <-> its WebSocket endpoint, at-least-once."""

__version__ = "0.1.0"
