"""The usual case of a state message's validation, compiled (twin: ``_messages_py``).

``state_ok(msg, spec)`` answers one question: is this a well-formed state whose every reading
lies within its bounds? True only when certainly so; anything unusual (a missing key, a bool
where a number goes, NaN, a subclass of int, a huge integer) answers False and the caller,
:func:`bmsbank.schema.validate_state`, runs its full checks, which name what is wrong. So this
can only make validation faster, never laxer than those checks: a test holds it to that.
"""

IMPLEMENTATION = "cython"
cdef object COUNTER = 2**63 - 1  # largest counter, sequence or epoch


cdef inline bint _number(object x, double low, double high):
    """An exact int or float within [low, high] (NaN fails both comparisons)."""
    cdef double v
    if type(x) is float:
        v = <double>x
    elif type(x) is int:
        if not (-2**53 <= x <= 2**53):  # exactly representable: no rounding into the bounds
            return False
        v = <double>x
    else:
        return False
    return low <= v <= high


cdef inline bint _numbers(object xs, double low, double high, Py_ssize_t most):
    cdef Py_ssize_t i, n
    if type(xs) is not list:
        return False
    n = len(<list>xs)
    if n > most:
        return False
    for i in range(n):
        if not _number((<list>xs)[i], low, high):
            return False
    return True


cdef inline bint _text(object x, Py_ssize_t most):
    return type(x) is str and 0 < len(<str>x) <= most


cdef inline bint _count(object x, object low, object high):
    return type(x) is int and low <= x <= high


def state_ok(dict msg, tuple spec):
    """True when ``msg`` certainly passes every state check (see the module docstring).

    Args:
        msg: a decoded message.
        spec: ``bmsbank.schema.STATE_SPEC``: (version, the exact keys, required numbers,
            optional numbers, alarm names, link counter names, cell bounds and most cells,
            temperature bounds and most sensors, longest text, longest hardware text).

    """
    cdef tuple check
    cdef object x, version, alarm_names, link_names, keys, name
    cdef tuple numbers, optional
    cdef double cell_low, cell_high, t_low, t_high
    cdef Py_ssize_t most_cells, most_sensors, longest, most_hardware
    (version, keys, numbers, optional, alarm_names, link_names, cell_low, cell_high, most_cells,
     t_low, t_high, most_sensors, longest, most_hardware) = spec
    if type(msg.get("v")) is not int or msg.get("v") != version or msg.get("kind") != "state" \
            or msg.keys() != keys:
        return False
    if not (_text(msg.get("pack"), longest) and _text(msg.get("port"), longest)
            and _text(msg.get("bms"), longest)):
        return False
    x = msg["hardware"]
    if type(x) is not str or len(<str>x) > most_hardware:
        return False
    x = msg["serial"]
    if type(x) is not str or len(<str>x) > longest:
        return False
    if not (_count(msg["address"], 0, 255) and _count(msg["epoch"], 0, COUNTER)
            and _count(msg["seq"], 0, COUNTER) and _count(msg["cycles"], 0, 10**6)):
        return False
    if msg["pack"] != f"{msg['port']}:{msg['address']}":
        return False
    for check in numbers:
        if not _number(msg.get(check[0]), check[1], check[2]):
            return False
    for check in optional:
        x = msg.get(check[0])
        if x is not None and not _number(x, check[1], check[2]):
            return False
    cells = msg.get("cells")
    if not _numbers(cells, cell_low, cell_high, most_cells) or not cells:
        return False
    if not _numbers(msg.get("temperatures"), t_low, t_high, most_sensors):
        return False
    balancing = msg.get("balancing")
    if type(balancing) is not list or len(<list>balancing) != len(<list>cells):
        return False
    for x in <list>balancing:
        if type(x) is not int or not (x == 0 or x == 1):
            return False
    if type(msg.get("charge_fet")) is not bool or type(msg.get("discharge_fet")) is not bool:
        return False
    if not msg["remaining"] <= msg["capacity"] * 1.5 + 1.0:
        return False
    alarms = msg.get("alarms")
    if type(alarms) is not dict:
        return False
    for name, x in (<dict>alarms).items():
        if name not in alarm_names or not _count(x, 0, 2):
            return False
    link = msg.get("link")
    if type(link) is not dict:
        return False
    for name, x in (<dict>link).items():
        if name not in link_names or not _count(x, 0, COUNTER):
            return False
    return _derived_ok(msg, <list>cells)


cdef bint _derived_ok(dict msg, list cells):
    """The derived values are exactly what the readings give (power within 1e-6 relative)."""
    cdef Py_ssize_t i, n = len(cells)
    cdef double low, high, v, power
    low = high = <double>cells[0]  # checked numbers (exact ints or floats) and at least one
    for i in range(1, n):
        v = <double>cells[i]
        if v < low:
            low = v
        elif v > high:
            high = v
    x = msg["min_cell_voltage"]
    if not (type(x) is float or type(x) is int) or x != low:
        return False
    x = msg["max_cell_voltage"]
    if not (type(x) is float or type(x) is int) or x != high:
        return False
    x = msg["cell_delta"]
    if not (type(x) is float or type(x) is int) or not abs(<double>x - (high - low)) <= 1e-9:
        return False
    power = <double>msg["voltage"] * <double>msg["current"]
    return abs(<double>msg["power"] - power) <= 1e-6 * abs(power) + 1e-6


def state_body(dict fields, dict defaults, dict header):
    """A state message body: ``defaults``, then ``fields``, the derived values, then ``header``.

    Derived, for every family alike: power [W] = voltage x current, min and max cell voltage and
    their delta [V] (0.0 without cells). Raises as the twin does (KeyError without voltage or
    current, TypeError or ValueError on values that are not numbers).
    """
    cdef dict out = dict(defaults)
    cdef object cells, low, high, x
    cdef Py_ssize_t i, n
    out.update(fields)
    out["power"] = float(out["voltage"]) * float(out["current"])
    cells = out.get("cells")
    if type(cells) is list and len(<list>cells) > 0:
        low = high = (<list>cells)[0]
        n = len(<list>cells)
        for i in range(1, n):
            x = (<list>cells)[i]
            if x < low:
                low = x
            elif x > high:
                high = x
    elif cells:
        low, high = min(cells), max(cells)
    else:
        low = high = 0.0
    out["min_cell_voltage"] = low
    out["max_cell_voltage"] = high
    out["cell_delta"] = high - low
    out.update(header)
    return out
