"""Poller service: one process per port, reads every BMS on it and streams state messages."""
