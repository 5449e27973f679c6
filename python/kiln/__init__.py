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
import shutil
import subprocess
import sys
import sysconfig
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
    "bench",
    "build",
    "conformance",
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
        """The engine this session runs."""
        return self._engine

    @property
    def inputs(self) -> List[TensorInfo]:
        """The engine's inputs, in the model's order."""
        return list(self._inputs)

    @property
    def outputs(self) -> List[TensorInfo]:
        """The engine's outputs, in the model's order."""
        return list(self._outputs)

    def get_inputs(self) -> List[TensorInfo]:
        """The inputs, under ONNX Runtime's InferenceSession name."""
        return self.inputs

    def get_outputs(self) -> List[TensorInfo]:
        """The outputs, under ONNX Runtime's InferenceSession name."""
        return self.outputs

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Runs the engine.

        ``run(feed, outputs=None) -> dict``: ``feed`` maps each input name to an array;
        returns ``{name: numpy.ndarray}`` for the outputs named in ``outputs`` (all by default).

        ``run(output_names, input_feed) -> list``: ONNX Runtime's form (``output_names`` may be
        None for all outputs), returning the arrays in that order.

        Arrays are read in place when they are C-contiguous and of the input's element type;
        other layouts are copied first. A wrong name, element type or shape raises InvalidInput.

        On a GPU engine, inputs may be tensors in CUDA memory (``torch.Tensor`` on CUDA, CuPy
        arrays, anything with ``__dlpack__``), all of them then: the run reads them on the device
        and returns its outputs on the device, as tensors of the inputs' framework (torch, CuPy;
        others get DLPack arrays that ``from_dlpack`` takes), without copies through the host. The
        run is enqueued on ``stream`` (a CUDA stream handle, or an object with ``cuda_stream`` or
        ``ptr``), by default the framework's current stream (torch's, CuPy's; the default stream
        for others), and is not waited for: work enqueued on that stream afterwards sees the
        outputs, as with any torch operation. Device inputs must be C-contiguous and of the input's
        element type (no conversions happen on the device).
        """
        stream = kwargs.pop("stream", None)
        if args and (type(args[0]) is dict or isinstance(args[0], Mapping)):
            if len(args) > 2 or (len(args) == 2 and "outputs" in kwargs):
                raise UsageError("run(feed, outputs=None): too many arguments")
            names = args[1] if len(args) == 2 else kwargs.pop("outputs", None)
            if kwargs:
                raise UsageError(f"run(): unexpected arguments {sorted(kwargs)}")
            values = self._run(args[0], names, stream)
            wanted = names if names is not None else [o.name for o in self._outputs]
            return dict(zip(wanted, values))
        if len(args) == 2 or (len(args) == 1 and "input_feed" in kwargs) or "output_names" in kwargs:
            output_names = args[0] if args else kwargs.pop("output_names", None)
            feed = args[1] if len(args) == 2 else kwargs.pop("input_feed", None)
            kwargs.pop("run_options", None)  # accepted for ONNX Runtime compatibility
            if kwargs or not (type(feed) is dict or isinstance(feed, Mapping)):
                raise UsageError("run(output_names, input_feed): input_feed must map input names to arrays")
            return self._run(feed, output_names, stream)
        raise UsageError("run() takes a dict of inputs, or (output_names, input_feed) as ONNX Runtime does")

    def _run(self, feed: Mapping[str, Any], output_names: Optional[Sequence[str]], stream: Any = None) -> List[Any]:
        if len(feed) != len(self._inputs) or any(name not in self._input_names for name in feed):
            unknown = [name for name in feed if name not in self._input_names]
            if unknown:
                takes = ", ".join(i.name for i in self._inputs)
                raise InvalidInput(f"unknown input {', '.join(repr(n) for n in unknown)}; the model takes {takes}")
        args = []
        on_device: Optional[str] = None  # the first input in CUDA memory, if any
        for info, want in zip(self._inputs, self._input_types):
            value = feed.get(info.name, _MISSING)
            if value is _MISSING:
                raise InvalidInput(f"missing input '{info.name}'")
            # The common case first: a C-contiguous NumPy array of the input's type, read in place.
            if type(value) is np.ndarray and value.dtype == want and value.flags.c_contiguous:
                args.append(value)
            elif _in_cuda_memory(value):
                on_device = on_device or info.name
                args.append(value)
            else:
                args.append(_as_input(info, value))
        if on_device is not None:
            out = self._run_device(feed, args, on_device, stream)
        else:
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

    def _run_device(self, feed: Mapping[str, Any], args: List[Any], first: str, stream: Any) -> List[Any]:
        if self._engine.device == "cpu":
            raise InvalidInput(f"input '{first}' is in CUDA memory; the engine runs on the CPU: give host arrays")
        for info, value in zip(self._inputs, args):
            if not _in_cuda_memory(value):
                raise InvalidInput(
                    f"input '{first}' is in CUDA memory and input '{info.name}' is not: give all inputs of a run "
                    "on the GPU, or all in host memory"
                )
        framework = type(feed[first]).__module__.split(".")[0]
        if framework not in ("torch", "cupy"):
            framework = ""
        handle = _stream_handle(stream, feed[first], framework)
        if framework != "torch":
            return list(self._native.run_device(args, handle, framework))
        # torch tensors pass as (address, shape, element type, GPU) and come back from DLPack
        # capsules: torch's __dlpack__ and from_dlpack(tensor) would order the default stream
        # after the current one and back, in Python, on every call.
        torch = sys.modules["torch"]
        described = [_torch_input(torch, info.name, value) for info, value in zip(self._inputs, args)]
        return [torch.utils.dlpack.from_dlpack(c) for c in self._native.run_device(described, handle, "capsule")]


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


def _in_cuda_memory(value: Any) -> bool:
    """Whether `value` is a DLPack tensor in CUDA device memory."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return bool(value.is_cuda)
    if isinstance(value, np.ndarray) or not hasattr(value, "__dlpack_device__"):
        return False
    try:
        device_type, _ = value.__dlpack_device__()
    except Exception:  # noqa: BLE001 - not a DLPack producer after all
        return False
    return int(device_type) == 2  # kDLCUDA


_TORCH_TYPES: Dict[Any, str] = {}  # torch dtype -> Kiln's element type name, filled on first use


def _torch_input(torch: Any, name: str, t: Any) -> Tuple[int, Tuple[int, ...], str, int]:
    """A torch CUDA tensor as (address, shape, Kiln element type, GPU index)."""
    if not _TORCH_TYPES:
        for kiln_name, attr in (
            ("float", "float32"), ("float16", "float16"), ("double", "float64"), ("bfloat16", "bfloat16"),
            ("int8", "int8"), ("int16", "int16"), ("int32", "int32"), ("int64", "int64"), ("uint8", "uint8"),
            ("uint16", "uint16"), ("uint32", "uint32"), ("uint64", "uint64"), ("bool", "bool"),
            ("complex64", "complex64"), ("complex128", "complex128"),
        ):
            if hasattr(torch, attr):
                _TORCH_TYPES[getattr(torch, attr)] = kiln_name
    dtype = _TORCH_TYPES.get(t.dtype)
    if dtype is None:
        raise InvalidInput(f"input '{name}': unsupported element type {t.dtype}")
    if not t.is_contiguous():
        raise InvalidInput(f"input '{name}': the array is not C-contiguous")
    return (t.data_ptr(), tuple(t.shape), dtype, t.device.index or 0)


def _stream_handle(stream: Any, tensor: Any, framework: str) -> int:
    """The CUDA stream handle to run on: the one given, else the framework's current stream."""
    if stream is None:
        if framework == "torch":
            import torch

            return int(torch.cuda.current_stream(tensor.device).cuda_stream)
        if framework == "cupy":
            import cupy

            return int(cupy.cuda.get_current_stream().ptr)
        return 0  # the default stream
    for attribute in ("cuda_stream", "ptr"):
        if hasattr(stream, attribute):
            return int(getattr(stream, attribute))
    try:
        return int(stream)
    except (TypeError, ValueError):
        raise UsageError(f"stream: expected a CUDA stream handle or a stream object, got {stream!r}") from None


def bench(
    engine: Engine,
    inputs: Optional[Mapping[str, Any]] = None,
    *,
    shapes: Optional[Mapping[str, Sequence[int]]] = None,
    warmup: int = 5,
    iterations: Optional[int] = None,
    duration: Optional[float] = None,
    threads: Optional[int] = None,
    profile: bool = False,
    transfers: bool = True,
    graphs: bool = True,
    streams: int = 1,
    seed: int = 0,
    int_range: Tuple[int, int] = (0, 1),
) -> Dict[str, Any]:
    """Measures an engine's latency and throughput, as ``kiln bench --json`` does, and returns
    that report as a dict (``latency_ms`` percentiles, ``throughput_per_s``, ``compute_ms`` and
    ``transfers_ms`` on a GPU, ``profile`` per step with ``profile=True``, ...).

    Args:
      engine: the engine to measure.
      inputs: arrays for some or all inputs; the others get seeded random data (integers in
        ``int_range``) of the shape in ``shapes``, else of the engine's (optimal) shape.
      warmup: untimed runs first.
      iterations, duration: timed runs, or seconds of them (default: at least 10 runs and 3 s).
      threads: CPU threads for this measurement (default: one per physical core).
      profile: time each step.
      transfers: on a GPU, include the copies of inputs in and outputs out.
      graphs: on a GPU, replay one recorded CUDA graph per run.
      streams: also run this many execution contexts at once, each on its own thread.

    Raises:
      InvalidInput, UsageError, RuntimeFailure.
    """
    if not isinstance(engine, Engine):
        raise UsageError(f"bench() measures a kiln.Engine, not {type(engine).__name__}")
    if iterations is not None and duration is not None:
        raise UsageError("give either iterations or duration, not both")
    by_name = {i.name: i for i in engine.inputs}
    given = []
    for name, value in (inputs or {}).items():
        if name not in by_name:
            takes = ", ".join(by_name)
            raise InvalidInput(f"unknown input '{name}'; the model takes {takes}")
        given.append((name, _as_input(by_name[name], value)))
    fixed = {name: _dims(dims, f"shapes['{name}']") for name, dims in (shapes or {}).items()}
    lo, hi = (int(v) for v in int_range)
    report = _kiln.bench(
        engine._native,
        given,
        fixed,
        int(warmup),
        int(iterations or 0),
        float(duration or 0.0),
        int(threads or 0),
        bool(profile),
        bool(transfers),
        bool(graphs),
        int(streams),
        int(seed),
        lo,
        hi,
    )
    return json.loads(report)


def _kiln_command() -> str:
    """The ``kiln`` command of this installation: beside the package in a build tree, in this
    environment's scripts, or on PATH."""
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [
        os.environ.get("KILN_EXECUTABLE", ""),
        os.path.join(os.path.dirname(os.path.dirname(here)), "bin", "kiln"),  # <build>/python/kiln -> <build>/bin
        os.path.join(sysconfig.get_path("scripts"), "kiln"),
        shutil.which("kiln") or "",
    ]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise UsageError("the kiln command was not found (install Kiln with pip, or set KILN_EXECUTABLE)")


def conformance(
    tests: Union[str, "os.PathLike[str]", Sequence[Union[str, "os.PathLike[str]"]]],
    *,
    device: Optional[str] = None,
    optimize: bool = False,
    filter: Optional[str] = None,  # noqa: A002 - the CLI's name for it
    exclude: Optional[Union[str, "os.PathLike[str]"]] = None,
    jobs: int = 1,
    timeout: float = 60.0,
    profile: bool = False,
) -> Dict[str, Any]:
    """Runs ONNX backend test folders (``model.onnx`` and ``test_data_set_*``) and compares the
    outputs with the ONNX test runner's tolerances, as ``kiln conformance --json`` does.

    Each test runs in a process of its own (the ``kiln`` command), so a crash or a hang fails that
    test alone. Returns ``{"passed", "failed", "skipped", "total", "failures": [{"test",
    "reason"}], "skips": [...]}``.

    Args:
      tests: a test folder, a folder of them, or a list of such paths.
      device: build each model for "cpu" or "cuda" (implies ``optimize``); by default each model
        runs node by node on the reference kernels.
      optimize: build each model into an optimized engine and run that.
      filter: only tests whose folder name matches this regular expression.
      exclude: a file of excluded tests, one "test_name reason" per line.
      jobs: tests run in parallel.
      timeout: seconds before a test counts as hung.
      profile: build each model with a shape profile around its inputs' shapes.

    Raises:
      UsageError for bad arguments or a missing folder; RuntimeFailure when the runner fails.
    """
    paths = [tests] if isinstance(tests, (str, os.PathLike)) else list(tests)
    if not paths:
        raise UsageError("conformance(): no test folders given")
    cmd = [_kiln_command(), "conformance", "--json", "--jobs", str(int(jobs)), "--timeout", str(float(timeout))]
    for p in paths:
        if not os.path.isdir(p):
            raise UsageError(f"conformance(): '{os.fspath(p)}' is not a folder")
        cmd.append(os.fspath(p))
    if device:
        cmd += ["--device", device]
    if optimize:
        cmd.append("--optimize")
    if filter:
        cmd += ["--filter", filter]
    if exclude:
        cmd += ["--exclude", os.fspath(exclude)]
    if profile:
        cmd.append("--profile")
    done = subprocess.run(cmd, capture_output=True, text=True)
    # Exit 0: all passed; 1: some failed (the report says which); others: the runner's error.
    if done.returncode in (0, 1):
        try:
            return json.loads(done.stdout)
        except json.JSONDecodeError:
            pass
    message = done.stderr.strip().replace("kiln: error: ", "") or f"kiln conformance exited with {done.returncode}"
    if done.returncode == 2:
        raise UsageError(message)
    raise RuntimeFailure(message)
