"""The exceptions Kiln raises. Every one is a :class:`KilnError` carrying Kiln's message, which names
the file, node, input or option at fault."""


class KilnError(Exception):
    """Base class of every error Kiln raises."""


class InvalidModel(KilnError, ValueError):
    """The model or engine file is invalid: unreadable, malformed, corrupt, or built for a device
    or machine this process cannot run."""


class UnsupportedOp(InvalidModel):
    """The model uses an operator (or an operator version) Kiln cannot run."""


class InvalidInput(KilnError, ValueError):
    """An input given to a run is wrong: an unknown or missing name, a wrong element type, a shape
    outside the engine's profiles, or a value Kiln cannot read."""


class UsageError(KilnError, ValueError):
    """An option is wrong: an unknown device or pass name, an inconsistent shape profile."""


class RuntimeFailure(KilnError, RuntimeError):
    """Something failed while building or running (a kernel, the device, the file system)."""
