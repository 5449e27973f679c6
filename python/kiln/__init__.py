"""Kiln: an ONNX inference optimizer and runtime.

Build an engine from an ONNX model, save and load it, and run it on NumPy arrays::

    import numpy as np
    import kiln

    engine = kiln.build("model.onnx")            # on the GPU when there is one, else the CPU
    engine.save("model.kiln")
    session = kiln.load("model.kiln").session()
    outputs = session.run({"input": np.zeros((1, 3, 224, 224), np.float32)})

``Session.run`` also takes ONNX Runtime's form, ``session.run(None, {"input": x})``, which
returns a list, so code written for ``onnxruntime.InferenceSession`` switches with one line.

Threads: builds and runs release the GIL. A session is one execution context: calls to ``run`` on
one session from several threads are serialized, so give each thread its own session (all on one
engine, which they share) to run in parallel.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from . import _kiln
from ._errors import InvalidInput, InvalidModel, KilnError, RuntimeFailure, UnsupportedOp, UsageError

__all__ = [
    "Engine",
    "InvalidInput",
    "InvalidModel",
    "KilnError",
    "RuntimeFailure",
    "Session",
    "TensorInfo",
    "UnsupportedOp",
    "UsageError",
    "build",
    "cuda_available",
    "load",
]

__version__: str = _kiln.version()

# Kiln's element type names and the NumPy types they read and return (None: no NumPy type).
_NUMPY_TYPES: Dict[str, Any] = {
    "float": np.float32,
    "float16": np.float16,
    "double": np.float64,
    "int8": np.int8,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
    "uint8": np.uint8,
    "uint16": np.uint16,
    "uint32": np.uint32,
    "uint64": np.uint64,
    "bool": np.bool_,
    "complex64": np.complex64,
    "complex128": np.complex128,
    "string": np.object_,
}

Dim = Union[int, str]
Model = Union[str, "os.PathLike[str]", bytes, bytearray, Any]


class TensorInfo(NamedTuple):
    """A model input or output: its name, element type and shape.

    ``dtype`` is a NumPy type (``numpy.object_`` for strings) or, for element types NumPy lacks,
    Kiln's name for it ("bfloat16"). A dim of ``shape`` is an int, or a str for a dim that varies
    between runs (the model's symbol for it, or "" when it has none)."""

    name: str
    dtype: Any
    shape: Tuple[Dim, ...]


def _infos(raw: Sequence[Tuple[str, str, List[Dim]]]) -> List[TensorInfo]:
    return [TensorInfo(name, _NUMPY_TYPES.get(dtype, dtype), tuple(dims)) for name, dtype, dims in raw]


def cuda_available() -> bool:
    """Whether this process can build and run engines on a CUDA GPU."""
    return bool(_kiln.cuda_available())


def _model_source(model: Model) -> Union[str, bytes]:
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    if hasattr(model, "SerializeToString"):  # onnx.ModelProto
        return model.SerializeToString()
    raise UsageError(f"model must be a path, bytes or an onnx.ModelProto, not {type(model).__name__}")


def _progress_printer(phase: str, fraction: float) -> None:
    sys.stderr.write(f"\rkiln: {phase} {fraction * 100:5.1f}%")
    if fraction >= 1.0:
        sys.stderr.write("\n")
    sys.stderr.flush()


def _dims(value: Sequence[int], what: str) -> List[int]:
    try:
        return [int(d) for d in value]
    except (TypeError, ValueError):
        raise UsageError(f"{what}: expected a sequence of ints, got {value!r}") from None


def build(
    model: Model,
    *,
    device: str = "auto",
    fp16: bool = False,
    bf16: bool = False,
    shapes: Optional[Mapping[str, Sequence[int]]] = None,
    profiles: Optional[Mapping[str, Tuple[Sequence[int], Sequence[int], Sequence[int]]]] = None,
    timing_cache: Optional[Union[str, "os.PathLike[str]"]] = None,
    progress: Union[bool, Callable[[str, float], None]] = True,
    disable_passes: Sequence[str] = (),
    enable_passes: Sequence[str] = (),
) -> "Engine":
    """Optimizes an ONNX model into an engine, as ``kiln build`` does.

    Args:
      model: a path to an ONNX file, its bytes, or an ``onnx.ModelProto``.
      device: "cpu", "cuda", or "auto" (the GPU when there is one, else the CPU).
      fp16, bf16: allow FP16 / BF16 kernels where the device has them.
      shapes: fixed input shapes, ``{"input": (1, 3, 224, 224)}``. An input not named keeps its
        declared shape; its dynamic dims are built at 1, with a warning.
      profiles: shape ranges, ``{"input": (min, opt, max)}``: the engine runs any shape within them.
      timing_cache: a file of kernel timings to reuse and update (faster rebuilds).
      progress: True prints the phases to stderr when it is a terminal; a callable is called with
        (phase, fraction); False prints nothing.
      disable_passes, enable_passes: optimization passes by name (``kiln passes`` lists them).

    Raises:
      InvalidModel, UnsupportedOp, UsageError, RuntimeFailure.
    """
    if device == "auto":
        device = "cuda" if cuda_available() else "cpu"
    callback: Optional[Callable[[str, float], None]] = None
    if callable(progress):
        callback = progress
    elif progress and sys.stderr.isatty():
        callback = _progress_printer
    fixed = {name: _dims(dims, f"shapes['{name}']") for name, dims in (shapes or {}).items()}
    ranges = {}
    for name, spec in (profiles or {}).items():
        if len(spec) != 3:
            raise UsageError(f"profiles['{name}']: expected (min, opt, max), got {spec!r}")
        ranges[name] = tuple(_dims(d, f"profiles['{name}']") for d in spec)
    native, notices = _kiln.build(
        _model_source(model),
        device,
        bool(fp16),
        bool(bf16),
        fixed,
        ranges,
        os.fspath(timing_cache) if timing_cache else "",
        list(disable_passes),
        list(enable_passes),
        callback,
    )
    for notice in notices:
        warnings.warn(f"kiln: {notice}", stacklevel=2)
    return Engine(native)


def load(path: Union[str, "os.PathLike[str]"]) -> "Engine":
    """Loads an engine file written by :meth:`Engine.save` or ``kiln build``.

    Raises InvalidModel when the file is unreadable, corrupt, of a newer format, or built for a
    device or machine this process cannot run."""
    return Engine(_kiln.load(os.fspath(path)))


class Engine:
    """An optimized model: its steps, kernels, memory plan and weights. Make sessions to run it."""

    def __init__(self, native: Any) -> None:
        self._native = native

    @property
    def inputs(self) -> List[TensorInfo]:
        """The inputs, in the model's order."""
        return _infos(self._native.inputs)

    @property
    def outputs(self) -> List[TensorInfo]:
        """The outputs, in the model's order."""
        return _infos(self._native.outputs)

    @property
    def device(self) -> str:
        """The device the engine was built for: "cpu" or "cuda"."""
        return str(self._native.device)

    def save(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Writes the engine file (atomically: on error no file is left at ``path``)."""
        self._native.save(os.fspath(path))

    def inspect(self) -> Dict[str, Any]:
        """What ``kiln inspect --json`` prints: the steps (op, precision, layout, tactic), memory,
        the passes that fired, the build information and shapes."""
        return json.loads(self._native.inspect_json())

    def session(self) -> "Session":
        """A new execution context on this engine."""
        return Session(self, self._native.session())

    def __repr__(self) -> str:
        ins = ", ".join(f"{i.name}{list(i.shape)}" for i in self.inputs)
        return f"<kiln.Engine {self.device} ({ins})>"


class Session:
    """One execution context on an engine (its own activation memory, and stream on a GPU)."""

    def __init__(self, engine: Engine, native: Any) -> None:
        self._engine = engine
        self._native = native
        self._inputs = engine.inputs
        self._outputs = engine.outputs
        # Looked up on every run: the names, and each input's NumPy type (None: strings or a type
        # NumPy lacks).
        self._input_names = {i.name for i in self._inputs}
        self._output_index = {o.name: k for k, o in enumerate(self._outputs)}
        self._input_types = [
            np.dtype(i.dtype) if not isinstance(i.dtype, str) and i.dtype is not np.object_ else None
            for i in self._inputs
        ]

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def inputs(self) -> List[TensorInfo]:
        return list(self._inputs)

    @property
    def outputs(self) -> List[TensorInfo]:
        return list(self._outputs)

    # ONNX Runtime's InferenceSession names.
    def get_inputs(self) -> List[TensorInfo]:
        return self.inputs

    def get_outputs(self) -> List[TensorInfo]:
        return self.outputs

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Runs the engine.

        ``run(feed, outputs=None) -> dict``: ``feed`` maps each input name to an array;
        returns ``{name: numpy.ndarray}`` for the outputs named in ``outputs`` (all by default).

        ``run(output_names, input_feed) -> list``: ONNX Runtime's form (``output_names`` may be
        None for all outputs), returning the arrays in that order.

        Arrays are read in place when they are C-contiguous and of the input's element type;
        other layouts are copied first. A wrong name, element type or shape raises InvalidInput.
        """
        if args and (type(args[0]) is dict or isinstance(args[0], Mapping)):
            if len(args) > 2 or (len(args) == 2 and "outputs" in kwargs):
                raise UsageError("run(feed, outputs=None): too many arguments")
            names = args[1] if len(args) == 2 else kwargs.pop("outputs", None)
            if kwargs:
                raise UsageError(f"run(): unexpected arguments {sorted(kwargs)}")
            values = self._run(args[0], names)
            wanted = names if names is not None else [o.name for o in self._outputs]
            return dict(zip(wanted, values))
        if len(args) == 2 or (len(args) == 1 and "input_feed" in kwargs) or "output_names" in kwargs:
            output_names = args[0] if args else kwargs.pop("output_names", None)
            feed = args[1] if len(args) == 2 else kwargs.pop("input_feed", None)
            kwargs.pop("run_options", None)  # accepted for ONNX Runtime compatibility
            if kwargs or not (type(feed) is dict or isinstance(feed, Mapping)):
                raise UsageError("run(output_names, input_feed): input_feed must map input names to arrays")
            return self._run(feed, output_names)
        raise UsageError("run() takes a dict of inputs, or (output_names, input_feed) as ONNX Runtime does")

    def _run(self, feed: Mapping[str, Any], output_names: Optional[Sequence[str]]) -> List[Any]:
        if len(feed) != len(self._inputs) or any(name not in self._input_names for name in feed):
            unknown = [name for name in feed if name not in self._input_names]
            if unknown:
                takes = ", ".join(i.name for i in self._inputs)
                raise InvalidInput(f"unknown input {', '.join(repr(n) for n in unknown)}; the model takes {takes}")
        args = []
        for info, want in zip(self._inputs, self._input_types):
            value = feed.get(info.name, _MISSING)
            if value is _MISSING:
                raise InvalidInput(f"missing input '{info.name}'")
            # The common case first: a C-contiguous NumPy array of the input's type, read in place.
            if type(value) is np.ndarray and value.dtype == want and value.flags.c_contiguous:
                args.append(value)
            else:
                args.append(_as_input(info, value))
        out = self._native.run(args)
        values = [v if type(v) is np.ndarray else _as_output(v) for v in out]
        if output_names is None:
            return values
        index = self._output_index
        picked = []
        for name in output_names:
            if name not in index:
                takes = ", ".join(o.name for o in self._outputs)
                raise InvalidInput(f"unknown output '{name}'; the model's outputs are {takes}")
            picked.append(values[index[name]])
        return picked


_MISSING = object()


def _as_input(info: TensorInfo, value: Any) -> Any:
    if info.dtype is np.object_:
        a = np.asarray(value, dtype=object)
        if not all(isinstance(s, (str, bytes)) for s in a.flat):
            raise InvalidInput(f"input '{info.name}': the model takes strings")
        items = [s.decode() if isinstance(s, bytes) else s for s in a.flat]
        return (items, list(a.shape))
    if not isinstance(value, np.ndarray) and hasattr(value, "__dlpack_device__"):
        device_type, _ = value.__dlpack_device__()
        if device_type != 1:  # kDLCPU
            raise InvalidInput(f"input '{info.name}': arrays in device memory are not taken yet; copy it to the host")
    if isinstance(info.dtype, str):
        raise InvalidInput(f"input '{info.name}': {info.dtype} inputs have no NumPy type")
    want = np.dtype(info.dtype)
    try:
        # Arrays (NumPy's, or any with __array__) keep their type, which must be the input's;
        # Python lists and scalars are read as the input's type.
        array_like = isinstance(value, np.ndarray) or hasattr(value, "__array__")
        a = np.asarray(value) if array_like else np.asarray(value, dtype=want)
    except Exception as e:  # noqa: BLE001 - anything NumPy cannot read is the caller's input
        raise InvalidInput(f"input '{info.name}': cannot read {type(value).__name__} as an array: {e}") from None
    if a.dtype != want:
        raise InvalidInput(f"input '{info.name}': the model takes {want.name}, got {a.dtype.name}")
    if not a.flags.c_contiguous:
        a = np.ascontiguousarray(a)
    return a


def _as_output(value: Any) -> Any:
    if isinstance(value, tuple):  # strings: (items, dims)
        items, dims = value
        return np.array(items, dtype=object).reshape(dims)
    return value
