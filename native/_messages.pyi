"""Type stubs for the compiled state check (same API as ``_messages_py``)."""

IMPLEMENTATION: str

def state_ok(msg: dict, spec: tuple) -> bool: ...
