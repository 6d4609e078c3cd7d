"""What a BMS family is, as plain data: importable by config and publisher without poller code.

Each family folder's ``__init__.py`` defines ``INFO = FamilyInfo(...)`` and imports nothing else,
so reading every family's metadata never loads a native module or a family's codec.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Option:
    """A per-port option a family declares (a key of its ``[[ports]]`` table).

    Attributes:
        name: the key.
        type: bool, int, float or str; a value of another type is refused.
        default: the value when the key is absent.
        expected: what a valid value is, for the error message ("cycles, 1-3600").
        check: further validation of a value of the right type (None: any).

    """

    name: str
    type: type
    default: Any
    expected: str
    check: Callable[[Any], bool] | None = None

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` is a valid value of this option."""
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not self.type:
            return False
        return self.check is None or bool(self.check(value))


#: options every port has whatever its family (the transport's, see README "Configuration")
ECHO_VALUES = ("auto", True, False)


@dataclass(frozen=True)
class Ble:
    """How a family speaks over Bluetooth LE: the GATT service and characteristics it uses.

    Attributes:
        service: the GATT service UUID (128-bit text form).
        notify: the characteristic whose notifications carry the replies.
        write: the characteristic the requests are written to (may equal ``notify``).
        names: advertised local-name prefixes that identify the family (``bmsbank scan --ble``).
        with_response: write requests with response (ATT Write Request) instead of without.

    """

    service: str
    notify: str
    write: str
    names: tuple[str, ...] = ()
    with_response: bool = False


@dataclass(frozen=True)
class FamilyInfo:
    """A BMS family's metadata.

    Attributes:
        name: registry key used in config files and on the command line (the folder's name).
        title: human name (the seed table's spelling).
        link: the physical links it speaks over ("UART/RS485").
        baudrate: default serial speed [bit/s].
        parity: "N", "E" or "O".
        multidrop: several packs may share one bus, told apart by address.
        addresses: addresses a pack may have.
        default_address: address used when the config names none.
        controls: control actions (keys of ``bmsbank.schema.CONTROL_ACTIONS``) it carries out.
        options: per-port options it declares.
        ble: how it speaks over Bluetooth LE (None: it does not).

    """

    name: str
    title: str
    link: str
    baudrate: int
    parity: str = "N"
    multidrop: bool = False
    addresses: range = range(0, 256)
    default_address: int = 1
    controls: frozenset[str] = frozenset()
    options: tuple[Option, ...] = field(default=())
    ble: Ble | None = None

    def option_values(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Every option's value: ``given`` where set, the default otherwise.

        Raises:
            KeyError: ``given`` names an option the family does not declare.
            ValueError: a value is invalid; ``args`` are (key, what is expected).

        """
        known = {o.name: o for o in self.options}
        for key in given:
            if key not in known:
                raise KeyError(key)
        out = {}
        for opt in self.options:
            value = given.get(opt.name, opt.default)
            if not opt.accepts(value):
                raise ValueError(opt.name, f"{opt.expected}, got {value!r}")
            out[opt.name] = float(value) if opt.type is float else value
        return out


class FromInfo:
    """A family class whose metadata attributes come from its ``info`` (serial, BLE or CAN).

    Subclasses set ``info``; name, title, speed, bus sharing, addresses and writes are copied
    from it when the class is made, so the engine reads plain class attributes.
    """

    info: ClassVar[FamilyInfo]
    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    baudrate: ClassVar[int] = 9600  #: serial speed [bit/s], a CAN bus's bit rate, 0 for BLE
    multidrop: ClassVar[bool] = False
    addresses: ClassVar[range] = range(0, 256)
    default_address: ClassVar[int] = 1
    controls: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        info = cls.__dict__.get("info")
        if info is not None:
            cls.name, cls.title, cls.baudrate = info.name, info.title, info.baudrate
            cls.multidrop, cls.addresses = info.multidrop, info.addresses
            cls.default_address, cls.controls = info.default_address, info.controls
