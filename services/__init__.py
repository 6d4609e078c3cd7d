"""The three bmsbank services: poller, arbiter, publisher."""
