"""Poller service: a thread per port reads every BMS on it and streams state messages."""
